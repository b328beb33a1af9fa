"""Watch one job to its end: poll, stream new output to a log, build the result.

Shared by the trigger (in the triggerer's event loop) and by the operator
when ``deferrable=False`` (on a private loop in the worker), so both report
the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from airflow_ssh_async.batching import HostBatcher, batcher_for, sleep_to_next_tick
from airflow_ssh_async.client import remote_host
from airflow_ssh_async.errors import SSHAsyncJobError
from airflow_ssh_async.hooks import DEFAULT_CHUNK, STREAMS, SSHAsyncJobHook
from airflow_ssh_async.job import JobRef, JobState, JobStatus, ProtocolError, build_result, job_event
from airflow_ssh_async.streams import LineDecoder, Tail

# A job directory without job.json this long after we first saw it is a
# launch that died half way.
STARTING_PATIENCE = 60.0
MAX_BACKOFF = 60.0


class OutputFollower:
    """Offsets, decoders and tails of one job's three streams."""

    def __init__(self, job_dir: str, log: logging.Logger | Any, offsets: dict[str, int], tail_bytes: int, stream: bool) -> None:
        self.job_dir = job_dir
        self.log = log
        self.stream = stream
        self.offsets = {s: int(offsets.get(s, 0)) for s in STREAMS}
        self.decoders = {s: LineDecoder() for s in STREAMS}
        self.tails = {s: Tail(tail_bytes) for s in ("stdout", "stderr")}
        self.progress = ""

    def _emit(self, stream: str, lines: list[str]) -> None:
        for line in lines:
            if stream == "progress":
                self.progress = line
                if self.stream:
                    self.log.info("progress: %s", line)
            elif self.stream:
                (self.log.warning if stream == "stderr" else self.log.info)("%s", line)

    async def catch_up(self, batcher: HostBatcher, sizes: dict[str, int], chunk: int = DEFAULT_CHUNK) -> None:
        """Read every stream up to SIZES, chunk by chunk, logging whole lines."""
        while True:
            behind = [s for s in STREAMS if sizes.get(s, 0) > self.offsets[s]]
            if not behind:
                return
            chunks = await asyncio.gather(*(batcher.read.get((self.job_dir, s, self.offsets[s], chunk)) for s in behind))
            for stream, got in zip(behind, chunks):
                if got.missing or not got.data:
                    sizes[stream] = self.offsets[stream]  # gone or shrunk: stop asking
                    continue
                self.offsets[stream] += len(got.data)
                if stream in self.tails:
                    self.tails[stream].feed(got.data)
                self._emit(stream, self.decoders[stream].feed(got.data))

    def finish(self) -> None:
        for stream in STREAMS:
            self._emit(stream, self.decoders[stream].finish())


async def watch_job(
    hook: SSHAsyncJobHook,
    ref: JobRef,
    *,
    log: logging.Logger | Any,
    poll_interval: float = 10.0,
    offsets: dict[str, int] | None = None,
    stream_output: bool = True,
    tail_bytes: int = 4096,
    connection_patience: float = 300.0,
    chunk_bytes: int = DEFAULT_CHUNK,
) -> dict[str, Any]:
    """Poll until the job ends; return the event (see :func:`job_event`).

    Network trouble is retried with backoff and logged; it ends the watch
    only after ``connection_patience`` seconds without one good poll.
    Damaged files, a missing job and refused credentials end it at once.
    """
    options = await hook.aget_options()
    ref = JobRef(ref.ssh_conn_id, ref.job_id, ref.job_dir, ref.host or options.address)
    key = ref.job_dir  # what we poll by, as given; ref.job_dir becomes the resolved path
    follower = OutputFollower(key, log, offsets or {}, tail_bytes, stream_output)
    failing_since: float | None = None
    starting_since: float | None = None
    backoff = min(1.0, poll_interval)
    async with remote_host(options) as host, batcher_for(hook, host) as batcher:
        try:
            while True:
                try:
                    status, facts = await batcher.status.get(key)
                    if facts.path and facts.path != ref.job_dir:
                        # A sensor may know only "~/..." : report the real folder.
                        ref = dataclasses.replace(ref, job_dir=facts.path)
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
                        status = JobStatus(JobState.LOST, "the launch never completed (no job.json)")
                if status.state.finished:
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
