"""Watch one job to its end: poll, stream new output to a log, build the result.

Shared by the trigger (in the triggerer's event loop) and by the operator
when ``deferrable=False`` (on a private loop in the worker), so both report
the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

from airflow_ssh_async.ansible import (
    DEFAULT_ANSIBLE_ASYNC_DIR,
    SOURCE_AIRFLOW,
    SOURCE_ANSIBLE,
    AnsibleFacts,
    aansible_status,
    ansible_file,
    ansible_output,
    ansible_request,
    classify_ansible,
    load_ansible_result,
    validate_source,
)
from airflow_ssh_async.batching import Coalescer, HostBatcher, SharedPerLoop, batcher_for, sleep_to_next_tick
from airflow_ssh_async.client import RemoteHost, remote_host
from airflow_ssh_async.errors import SSHAsyncJobError
from airflow_ssh_async.hooks import DEFAULT_CHUNK, STREAMS, ReadRequest, SSHAsyncJobHook
from airflow_ssh_async.job import (
    LAUNCH_PATIENCE,
    JobRef,
    JobState,
    JobStatus,
    ProtocolError,
    build_result,
    job_event,
)
from airflow_ssh_async.masking import Masker, masked_log
from airflow_ssh_async.streams import MAX_LINE, LineDecoder, Tail

# A job directory without job.json this long after we first saw it is a
# launch that died half way (the host says so itself once no launching
# process is alive; this covers a launcher that hangs).
STARTING_PATIENCE = float(LAUNCH_PATIENCE)
MAX_BACKOFF = 60.0


class OutputFollower:
    """Offsets, decoders and tails of one job's three streams.

    With a ``log_key`` (the task try whose log this is) the host keeps, beside
    the job, how far that log got, written by the same calls that read the
    output (output.sh). A watcher of the same try that starts again (after a
    triggerer restart or failover) continues from there: it reads again only
    its predecessor's last read, to find the line that was cut, and logs
    nothing twice.
    """

    def __init__(
        self,
        job_dir: str,
        log: logging.Logger | Any,
        tail_bytes: int,
        stream: bool,
        masker: Masker | None = None,
        log_key: str = "",
    ) -> None:
        self.job_dir = job_dir
        self.log = log
        self.stream = stream
        self.masker = masker or Masker()
        self.log_key = log_key
        self.offsets = {s: 0 for s in STREAMS}
        # Where each stream's last line ended (raw bytes): the log has every
        # line before it. What output.sh records as LOGGED.
        self.line_ends = {s: 0 for s in STREAMS}
        self.tails = {s: Tail(tail_bytes) for s in ("stdout", "stderr")}
        self.decoders = {s: self._decoder(s) for s in STREAMS}
        self.progress = ""
        # stream -> (logged, read): an earlier watcher of this try logged every
        # line up to `logged` and had read up to `read` (see resume).
        self._earlier: dict[str, tuple[int, int]] = {}
        self._resumed = not log_key

    def _decoder(self, stream: str, mid_stream: bool = False) -> LineDecoder:
        return LineDecoder(self.masker, self.tails.get(stream), mid_stream=mid_stream)

    def _emit(self, stream: str, lines: list[str], *, logged_before: bool = False) -> None:
        for line in lines:
            if stream == "progress":
                self.progress = line
                if self.stream and not logged_before:
                    self.log.info("progress: %s", line)
            elif self.stream and not logged_before:
                (self.log.warning if stream == "stderr" else self.log.info)("%s", line)

    async def resume(self, batcher: HostBatcher) -> None:
        """Once: start where an earlier watcher of this try left the log."""
        if self._resumed:
            return
        records = await asyncio.gather(*(batcher.delivered.get((self.job_dir, s, self.log_key)) for s in STREAMS))
        self._resumed = True
        for stream, record in zip(STREAMS, records, strict=True):
            if record is None or record[1] <= 0:
                continue
            logged, read = record
            self._earlier[stream] = record
            self.offsets[stream] = self.line_ends[stream] = logged
            # The result's tail wants the bytes before `logged` too.
            if stream in self.tails and logged > 0:
                start = max(0, logged - self.tails[stream].limit)
                [before] = await asyncio.gather(
                    batcher.read.get(ReadRequest(self.job_dir, stream, start, logged - start))
                )
                self.tails[stream].feed(self.masker.text(before.data.decode("utf-8", "replace"), True).encode())
            self.decoders[stream] = self._decoder(stream, mid_stream=logged > 0)
        if self._earlier:
            where = ", ".join(f"{s} at byte {lr[0]}" for s, lr in self._earlier.items())
            self.log.info("continuing this try's log of the job's output where it stopped (%s)", where)

    async def catch_up(self, batcher: HostBatcher, sizes: dict[str, int], chunk: int = DEFAULT_CHUNK) -> None:
        """Read every stream up to SIZES, chunk by chunk, logging whole lines."""
        await self.resume(batcher)
        for stream in STREAMS:
            if sizes.get(stream, 0) < self.line_ends[stream]:
                self._restart(stream, sizes.get(stream, 0))
        while True:
            behind = [s for s in STREAMS if sizes.get(s, 0) > self.offsets[s]]
            if not behind:
                return
            requests = [
                ReadRequest(self.job_dir, s, self.offsets[s], chunk, self.log_key, self.line_ends[s]) for s in behind
            ]
            chunks = await asyncio.gather(*(batcher.read.get(r) for r in requests))
            for stream, got in zip(behind, chunks, strict=True):
                if got.shrunk:
                    self._restart(stream, got.size)
                    sizes[stream] = got.size
                elif got.missing or not got.data:
                    sizes[stream] = self.offsets[stream]  # gone: stop asking
                else:
                    await self._take(stream, got.data)

    def _restart(self, stream: str, size: int) -> None:
        """The job rewrote STREAM (a progress file written with `>`): it is
        shorter than what was read. Follow it from its new start."""
        self.log.warning(
            "%s of job %s shrank to %d bytes, below the %d read: the job rewrote it; following it from its start",
            stream,
            self.job_dir,
            size,
            self.offsets[stream],
        )
        self.offsets[stream] = self.line_ends[stream] = 0
        self.decoders[stream] = self._decoder(stream)
        self._earlier.pop(stream, None)

    async def _take(self, stream: str, data: bytes) -> None:
        start = self.offsets[stream]
        self.offsets[stream] += len(data)
        # The last line end in DATA, a \r only when a byte follows it (it may
        # be half of \r\n).
        end = max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1))
        if end >= 0:
            self.line_ends[stream] = start + end + 1
        _, read = self._earlier.get(stream, (0, 0))
        if start < read:  # the earlier watcher's last read: its lines are logged
            self._emit(stream, self.decoders[stream].feed(data[: read - start]), logged_before=True)
            data = data[read - start :]
        # Bounded pieces between yields: a megabyte of short lines is
        # thousands of log records, and the event loop has other watchers.
        for i in range(0, len(data), MAX_LINE):
            self._emit(stream, self.decoders[stream].feed(data[i : i + MAX_LINE]))
            await asyncio.sleep(0)

    def deliver(self, stream: str, data: bytes) -> None:
        """Output that arrives whole at the end (an Ansible job's result)."""
        self._emit(stream, self.decoders[stream].feed(data))

    def finish(self) -> None:
        for stream in STREAMS:
            self._emit(stream, self.decoders[stream].finish())


# One ansible_status call per host per poll, like HostBatcher for our jobs.
_ansible_coalescers: SharedPerLoop[Coalescer[tuple[str, str], AnsibleFacts]] = SharedPerLoop()


def ansible_batcher_for(
    host: RemoteHost,
) -> contextlib.AbstractAsyncContextManager[Coalescer[tuple[str, str], AnsibleFacts]]:
    """Borrow the loop's coalescer of Ansible status reads for HOST."""

    async def fetch(requests: list[tuple[str, str]]) -> dict[tuple[str, str], AnsibleFacts]:
        return dict(zip(requests, await aansible_status(host, requests), strict=True))

    return _ansible_coalescers.borrow(host.options.pool_key, lambda: Coalescer(fetch))


async def watch_job(
    hook: SSHAsyncJobHook,
    ref: JobRef,
    *,
    log: logging.Logger | Any,
    poll_interval: float = 10.0,
    log_key: str = "",
    stream_output: bool = True,
    tail_bytes: int = 4096,
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
    event = await _watch(
        hook,
        ref,
        log=masked_log(log, masker),
        output_log=log,  # the output is masked as a stream already: not twice
        poll_interval=poll_interval,
        log_key=log_key,
        stream_output=stream_output,
        tail_bytes=tail_bytes,
        connection_patience=connection_patience,
        chunk_bytes=chunk_bytes,
        source=source,
        ansible_async_dir=ansible_async_dir,
        masker=masker,
    )
    return masker.redact(event)  # type: ignore[no-any-return]


async def _watch(
    hook: SSHAsyncJobHook,
    ref: JobRef,
    *,
    log: logging.Logger | Any,
    output_log: logging.Logger | Any,
    poll_interval: float,
    log_key: str,
    stream_output: bool,
    tail_bytes: int,
    connection_patience: float,
    chunk_bytes: int,
    source: str,
    ansible_async_dir: str,
    masker: Masker,
) -> dict[str, Any]:
    validate_source(source)
    ansible = source == SOURCE_ANSIBLE
    options = await hook.aget_options()
    ref = JobRef(ref.ssh_conn_id, ref.job_id, ref.job_dir, ref.host or options.address)
    request = ("", "")
    if ansible:
        request = ansible_request(ansible_async_dir, ref.job_id, ref.job_dir)
        ref = dataclasses.replace(ref, job_dir=ansible_file(ansible_async_dir, ref.job_id, ref.job_dir))
    key = ref.job_dir  # what we poll by, as given; ref.job_dir becomes the resolved path
    follower = OutputFollower(key, output_log, tail_bytes, stream_output, masker, "" if ansible else log_key)
    failing_since: float | None = None
    starting_since: float | None = None
    backoff = min(1.0, poll_interval)
    seen_limit: int | None = None
    seen_start: int | None = None
    ansible_facts: AnsibleFacts | None = None
    if ansible:
        log.info(
            "watching Ansible job %s on %s: Ansible keeps the job's output until it ends, so it is logged then",
            ref.job_id,
            ref.host,
        )
    async with (
        remote_host(options) as host,
        batcher_for(hook, host) as batcher,
        ansible_batcher_for(host) as ansible_batcher,
    ):
        try:
            while True:
                try:
                    if ansible:
                        ansible_facts = await ansible_batcher.get(request)
                        path = ansible_facts.path
                        status = classify_ansible(ansible_facts, time_limit=seen_limit, start_time=seen_start)
                        seen_limit = ansible_facts.time_limit or seen_limit
                        if status.state is JobState.RUNNING and seen_start is None:
                            seen_start = status.start_time
                    else:
                        status, facts = await batcher.status.get(key)
                        path = facts.path
                    if path and path != ref.job_dir:
                        # A sensor may know only "~/..." : report the real folder.
                        ref = dataclasses.replace(ref, job_dir=path)
                    if not ansible:
                        await follower.catch_up(batcher, dict(status.sizes), chunk_bytes)
                except SSHAsyncJobError as exc:
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
                except ProtocolError as exc:
                    return job_event("error", f"cannot read job {ref.job_id!r} on {ref.host}: {exc}", ref)
                if failing_since is not None:
                    log.info("reached %s again; watching job %s", ref.host, ref.job_id)
                failing_since, backoff = None, min(1.0, poll_interval)

                if status.state is JobState.MISSING and ansible:
                    return job_event(
                        "error",
                        f"Ansible job {ref.job_id!r} has no result file {ref.job_dir} on {ref.host}: Ansible "
                        "never started it there, or async_status mode=cleanup removed the file. Check the jid, "
                        "the host and ansible_async_dir (Ansible's ANSIBLE_ASYNC_DIR).",
                        ref,
                    )
                if status.state is JobState.MISSING:
                    return job_event(
                        "error",
                        f"job {ref.job_id!r} has no directory {ref.job_dir} on {ref.host}: it was never "
                        "launched there, or its folder was removed. Check the job id, host and async_dir.",
                        ref,
                    )
                if status.state is JobState.STARTING:
                    starting_since = starting_since or time.monotonic()
                    if time.monotonic() - starting_since > STARTING_PATIENCE:
                        status = JobStatus(
                            JobState.LOST,
                            f"async_wrapper never wrote {ref.job_dir}"
                            if ansible
                            else "the launch never completed (no job.json)",
                        )
                if status.state.finished:
                    if ansible and ansible_facts is not None and ansible_facts.exists:
                        for stream, data in zip(
                            ("stdout", "stderr"), ansible_output(load_ansible_result(ansible_facts)), strict=True
                        ):
                            follower.deliver(stream, data)
                    follower.finish()
                    result = build_result(
                        ref,
                        status,
                        progress=follower.progress,
                        stdout_tail=follower.tails["stdout"].text(),
                        stderr_tail=follower.tails["stderr"].text(),
                    )
                    return job_event("finished", f"job {ref.job_id!r} on {ref.host}: {status.state.value}", ref, result)
                await sleep_to_next_tick(poll_interval)
        finally:
            batcher.forget(key)
