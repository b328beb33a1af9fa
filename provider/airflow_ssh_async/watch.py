"""Watch one job to its end: poll, stream new output to a log, build the result.

One check (:meth:`Watch.check`) serves every watcher: the trigger and the
operator with ``deferrable=False`` loop over it (:func:`watch_job`), and the
sensor's poke is one call of it, as FileTrigger.run and FileSensor.poke
share one check. The check never asks which source the job has: each
source (sources.py) answers the same few methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from airflow_ssh_async.ansible import DEFAULT_ANSIBLE_ASYNC_DIR, SOURCE_AIRFLOW
from airflow_ssh_async.client import RemoteHost, remote_host
from airflow_ssh_async.errors import SSHAsyncJobError
from airflow_ssh_async.follower import OutputFollower
from airflow_ssh_async.hooks import DEFAULT_CHUNK, SSHAsyncJobHook
from airflow_ssh_async.job import (
    LAUNCH_PATIENCE,
    TAIL_BYTES,
    JobRef,
    JobState,
    JobStatus,
    ProtocolError,
    build_result,
    cut_notice,
    job_event,
    low_space_notice,
)
from airflow_ssh_async.masking import Masker, masked_log
from airflow_ssh_async.sources import JobSource, job_source

# A job directory without job.json this long after we first saw it is a
# launch that died half way (the host says so itself once no launching
# process is alive; this covers a launcher that hangs).
STARTING_PATIENCE = float(LAUNCH_PATIENCE)
MAX_BACKOFF = 60.0


class Watch:
    """One job's check: poll, log the new output, and at the end the event.

    Holds what a watcher learns between checks (output offsets, when the job
    was first seen starting), never a connection: :meth:`attached` lends one
    for a block, so a sensor can keep its Watch from poke to poke.
    """

    def __init__(self, source: JobSource) -> None:
        self.source = source
        self.status: JobStatus | None = None  # the last poll's
        self._starting_since: float | None = None
        self._told_cuts: set[tuple[str, str]] = set()  # (stream, cause) already logged
        self._told_low_space = False

    @property
    def ref(self) -> JobRef:
        return self.source.ref

    def attached(self, host: RemoteHost) -> contextlib.AbstractAsyncContextManager[None]:
        return self.source.attach(host)

    def describe(self) -> str:
        """The job and its last state, for a log line."""
        where = f"{self.source.noun} {self.ref.job_id} on {self.ref.host}"
        if self.status is None:
            return where
        state, reason = self.status.state.value, self.status.reason
        return f"{where} is {state}" + (f": {reason}" if reason != state else "")

    async def check(self, poll_interval: float = 10.0) -> dict[str, Any] | None:
        """One poll: None while the job runs (its new output logged), else the event.

        POLL_INTERVAL paces a source whose polls wait on the host (see
        :meth:`JobSource.poll`).

        A job that is missing or whose files are damaged ends the watch: an
        error event (see :func:`job_event`).

        :raises SSHAsyncJobError: the host could not be asked; the caller
            decides whether to retry.
        """
        try:
            return await self._check(poll_interval)
        except ProtocolError as exc:
            where = f"{self.source.noun} {self.ref.job_id!r} on {self.ref.host}"
            return job_event("error", f"cannot read {where}: {exc}", self.ref)

    async def _check(self, poll_interval: float) -> dict[str, Any] | None:
        source = self.source
        status = await source.poll(poll_interval)
        await source.catch_up(status)
        ref = self.ref
        for cut in status.output_cut:
            # Once, after the output stored before it: output_limit or a full disk.
            if (cut.stream, cut.cause) not in self._told_cuts:
                self._told_cuts.add((cut.stream, cut.cause))
                source.follower.log.warning("job %s on %s: %s", ref.job_id, ref.host, cut_notice(cut))
        if status.low_space and status.free_kb is not None and not self._told_low_space:
            self._told_low_space = True
            source.follower.log.warning("job %s on %s: %s", ref.job_id, ref.host, low_space_notice(status.free_kb))
        if status.state is JobState.MISSING:
            self.status = status
            return job_event(
                "error",
                f"{source.noun} {ref.job_id!r} has no {source.place} {ref.job_dir} on {ref.host}: "
                f"{source.missing_hint}.",
                ref,
            )
        if status.state is JobState.STARTING:
            self._starting_since = self._starting_since or time.monotonic()
            if time.monotonic() - self._starting_since > STARTING_PATIENCE:
                status = JobStatus(JobState.LOST, source.never_started())
        self.status = status
        if not status.state.finished:
            return None
        await source.final_output(status)
        follower = source.follower
        follower.finish()
        result = build_result(
            ref,
            status,
            progress=follower.progress,
            stdout_tail=follower.tails["stdout"].text(),
            stderr_tail=follower.tails["stderr"].text(),
        )
        return job_event("finished", f"job {ref.job_id!r} on {ref.host}: {status.state.value}", ref, result)


def new_watch(
    hook: SSHAsyncJobHook,
    ref: JobRef,
    *,
    log: logging.Logger | Any,
    source: str = SOURCE_AIRFLOW,
    ansible_async_dir: str = DEFAULT_ANSIBLE_ASYNC_DIR,
    log_key: str = "",
    stream_output: bool = True,
    tail_bytes: int = TAIL_BYTES,
    chunk_bytes: int = DEFAULT_CHUNK,
    masker: Masker | None = None,
    from_tail: bool = False,
) -> Watch:
    """A Watch of REF, its output and messages logged to LOG (see
    :class:`OutputFollower` for ``log_key`` and ``from_tail``)."""

    def follow(path: str) -> OutputFollower:
        return OutputFollower(path, log, tail_bytes, stream_output, masker, log_key, from_tail=from_tail)

    messages = masked_log(log, masker or Masker())
    return Watch(
        job_source(
            source, hook, ref, follow, log=messages, ansible_async_dir=ansible_async_dir, chunk_bytes=chunk_bytes
        )
    )


async def watch_job(
    hook: SSHAsyncJobHook,
    ref: JobRef,
    *,
    log: logging.Logger | Any,
    poll_interval: float = 10.0,
    log_key: str = "",
    stream_output: bool = True,
    tail_bytes: int = TAIL_BYTES,
    connection_patience: float = 300.0,
    chunk_bytes: int = DEFAULT_CHUNK,
    source: str = SOURCE_AIRFLOW,
    ansible_async_dir: str = DEFAULT_ANSIBLE_ASYNC_DIR,
    masker: Masker | None = None,
) -> dict[str, Any]:
    """Poll until the job ends; return the event (see :func:`job_event`).

    With ``masker``, every line logged and every string of the event
    (output tails, progress, messages) has the job's secrets masked.

    Network trouble is retried with backoff and logged; it ends the watch
    only after ``connection_patience`` seconds without one good poll.
    Damaged files, a missing job and refused credentials end it at once.

    ``source="ansible"``: the job is one that Ansible started (async/poll: 0);
    its state comes from Ansible's result file (``ref.job_dir`` is that file,
    or empty to take ``ansible_async_dir``/``ref.job_id``), see ansible.py.
    Its output exists only in the final result: it is logged at the end.

    ``log_key`` names the log this watch writes (a task try, see
    :func:`job.log_key`): with it, a watch that starts again continues that
    log where it stopped instead of from the job's first byte.
    """
    masker = masker or Masker()
    watch = new_watch(
        hook,
        ref,
        log=log,
        source=source,
        ansible_async_dir=ansible_async_dir,
        log_key=log_key,
        stream_output=stream_output,
        tail_bytes=tail_bytes,
        chunk_bytes=chunk_bytes,
        masker=masker,
    )
    options = await hook.aget_options()
    async with remote_host(options) as host, watch.attached(host):
        event = await _loop(watch, masked_log(log, masker), poll_interval, connection_patience)
    return masker.redact(event)  # type: ignore[no-any-return]


async def _loop(
    watch: Watch, log: logging.Logger | Any, poll_interval: float, connection_patience: float
) -> dict[str, Any]:
    """Check at every tick until an event; network trouble is retried with backoff."""
    failing_since: float | None = None
    backoff = min(1.0, poll_interval)
    while True:
        try:
            event = await watch.check(poll_interval)
        except SSHAsyncJobError as exc:
            ref = watch.ref
            if exc.permanent:
                return job_event("error", str(exc), ref)
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > connection_patience:
                return job_event(
                    "error",
                    f"gave up on job {ref.job_id!r} on {ref.host} after {connection_patience:.0f} s "
                    f"without a good poll; last error: {exc}. The job may still be running: "
                    "clear the task to re-attach to it.",
                    ref,
                )
            log.warning("cannot poll job %s (%s); retrying in %.1f s", ref.job_id, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            continue
        if failing_since is not None:
            log.info("reached %s again; watching job %s", watch.ref.host, watch.ref.job_id)
        failing_since, backoff = None, min(1.0, poll_interval)
        if event is not None:
            return event
        await watch.source.between_polls(poll_interval)
