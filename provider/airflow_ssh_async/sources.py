"""Where a watched job's state and output come from, behind the same few methods.

Two sources: this provider's job folders (status.sh, output.sh: the output
is read as it grows) and Ansible's async result files (ansible.py: the
output exists only in the final result). The watch (watch.py) calls
``poll``, ``catch_up`` and ``final_output`` and never asks which source it
has; the words that name a source in messages are attributes here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from airflow_ssh_async.ansible import (
    DEFAULT_ANSIBLE_ASYNC_DIR,
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
from airflow_ssh_async.batching import Coalescer, HostBatcher, batcher_for, sleep_to_next_tick
from airflow_ssh_async.client import RemoteHost
from airflow_ssh_async.follower import OutputFollower
from airflow_ssh_async.hooks import DEFAULT_CHUNK, SSHAsyncJobHook
from airflow_ssh_async.job import JobRef, JobState, JobStatus
from airflow_ssh_async.per_loop import SharedPerLoop


class JobSource(Protocol):
    """One watched job, as its source reports it.

    ``ref`` is the job as given, its folder (or file) and host filled in by
    the first poll. The message attributes complete the watch's messages:
    "{noun} 'ID' has no {place} PATH on HOST: {missing_hint}."
    """

    ref: JobRef
    follower: OutputFollower
    noun: str
    place: str
    missing_hint: str

    def attach(self, host: RemoteHost) -> contextlib.AbstractAsyncContextManager[None]:
        """Borrow HOST's batched calls in this event loop for the block."""

    async def poll(self, poll_interval: float) -> JobStatus:
        """One status read (for a source that waits on the host: the next
        news, paced by POLL_INTERVAL; see batching.HostStatus).

        :raises SSHAsyncJobError: the host could not be asked.
        :raises ProtocolError: the job's files cannot be read.
        """

    async def between_polls(self, poll_interval: float) -> None:
        """What the watch does between two polls: sleep to the next tick, or
        nothing when the poll itself waits."""

    async def catch_up(self, status: JobStatus) -> None:
        """Log the output written since the last poll (what STATUS sizes)."""

    async def final_output(self, status: JobStatus) -> None:
        """Log the output that only an ended job has; STATUS is finished."""

    def never_started(self) -> str:
        """The reason of a job that stays starting past STARTING_PATIENCE."""


# Makes the output follower of the job at a path (the folder polled by).
Follow = Callable[[str], OutputFollower]


def _at(ref: JobRef, path: str) -> JobRef:
    # A sensor may know only "~/...": report the folder the host resolved.
    return dataclasses.replace(ref, job_dir=path) if path and path != ref.job_dir else ref


def _on(ref: JobRef, host: RemoteHost) -> JobRef:
    return ref if ref.host else dataclasses.replace(ref, host=host.options.address)


class AirflowJob:
    """A job this provider launched: its folder's status; output read as it grows."""

    noun = "job"
    place = "directory"
    missing_hint = (
        "it was never launched there, or its folder was removed. Check the job id, the connection and async_dir"
    )

    def __init__(self, hook: SSHAsyncJobHook, ref: JobRef, follow: Follow, chunk_bytes: int = DEFAULT_CHUNK) -> None:
        self.ref = ref
        self._hook = hook
        self._key = ref.job_dir  # what we poll by, as given; ref.job_dir becomes the resolved path
        self.follower = follow(self._key)
        self._chunk = chunk_bytes
        self._batcher: HostBatcher | None = None

    @contextlib.asynccontextmanager
    async def attach(self, host: RemoteHost) -> AsyncIterator[None]:
        self.ref = _on(self.ref, host)
        async with batcher_for(self._hook, host) as batcher:
            self._batcher = batcher
            try:
                yield
            finally:
                batcher.forget(self._key)
                self._batcher = None

    def _attached(self) -> HostBatcher:
        if self._batcher is None:
            raise RuntimeError(f"job {self.ref.job_id!r}: poll outside attach()")
        return self._batcher

    async def between_polls(self, poll_interval: float) -> None:
        """Nothing: the next poll waits on the host, or for the tick (batcher.poll)."""

    async def poll(self, poll_interval: float = 10.0) -> JobStatus:
        status, facts = await self._attached().poll(self._key, poll_interval)
        self.ref = _at(self.ref, facts.path)
        return status

    async def catch_up(self, status: JobStatus) -> None:
        await self.follower.catch_up(self._attached(), dict(status.sizes), self._chunk, ended=status.state.finished)

    async def final_output(self, status: JobStatus) -> None:
        """Nothing: catch_up read the output up to the job's final sizes."""

    def never_started(self) -> str:
        return "the launch never completed (no job.json)"


# One ansible_status call per host per poll, like HostBatcher for our jobs.
_ansible_coalescers: SharedPerLoop[Coalescer[tuple[str, str], AnsibleFacts]] = SharedPerLoop()


def ansible_batcher_for(
    host: RemoteHost,
) -> contextlib.AbstractAsyncContextManager[Coalescer[tuple[str, str], AnsibleFacts]]:
    """Borrow the loop's coalescer of Ansible status reads for HOST."""

    async def fetch(requests: list[tuple[str, str]]) -> dict[tuple[str, str], AnsibleFacts]:
        return dict(zip(requests, await aansible_status(host, requests), strict=True))

    return _ansible_coalescers.borrow(host.options.pool_key, lambda: Coalescer(fetch))


class AnsibleJob:
    """A job Ansible started (async/poll: 0): its result file; output only at the end.

    ``ref.job_dir`` is the result file's full path, or empty for
    ``ansible_async_dir``/``ref.job_id``.
    """

    noun = "Ansible job"
    place = "result file"
    missing_hint = (
        "Ansible never started it there, or async_status mode=cleanup removed the file. "
        "Check the jid, the connection and ansible_async_dir (Ansible's ANSIBLE_ASYNC_DIR)"
    )

    def __init__(self, ref: JobRef, follow: Follow, log: logging.Logger | Any, ansible_async_dir: str) -> None:
        result_file = ref.job_dir
        self._request = ansible_request(ansible_async_dir, ref.job_id, result_file)
        self.ref = dataclasses.replace(ref, job_dir=ansible_file(ansible_async_dir, ref.job_id, result_file))
        self.follower = follow(self.ref.job_dir)  # only delivered to: nothing is read by path
        self._log = log
        self._announced = False
        self._facts: AnsibleFacts | None = None
        # Learnt on earlier polls (see classify_ansible).
        self._time_limit: int | None = None
        self._start_time: int | None = None
        self._batcher: Coalescer[tuple[str, str], AnsibleFacts] | None = None

    @contextlib.asynccontextmanager
    async def attach(self, host: RemoteHost) -> AsyncIterator[None]:
        self.ref = _on(self.ref, host)
        if not self._announced:
            self._announced = True
            self._log.info(
                "watching Ansible job %s on %s: Ansible keeps the job's output until it ends, so it is logged then",
                self.ref.job_id,
                self.ref.host,
            )
        async with ansible_batcher_for(host) as batcher:
            self._batcher = batcher
            try:
                yield
            finally:
                self._batcher = None

    async def between_polls(self, poll_interval: float) -> None:
        await sleep_to_next_tick(poll_interval)

    async def poll(self, poll_interval: float = 10.0) -> JobStatus:
        if self._batcher is None:
            raise RuntimeError(f"Ansible job {self.ref.job_id!r}: poll outside attach()")
        facts = await self._batcher.get(self._request)
        self.ref = _at(self.ref, facts.path)
        status = classify_ansible(facts, time_limit=self._time_limit, start_time=self._start_time)
        self._facts = facts
        self._time_limit = facts.time_limit or self._time_limit
        if status.state is JobState.RUNNING and self._start_time is None:
            self._start_time = status.start_time
        return status

    async def catch_up(self, status: JobStatus) -> None:
        """Nothing: Ansible holds the output in memory until the job ends."""

    async def final_output(self, status: JobStatus) -> None:
        if self._facts is None or not self._facts.exists:
            return  # a job killed with its wrapper leaves no output
        stdout, stderr = ansible_output(load_ansible_result(self._facts))
        self.follower.deliver("stdout", stdout)
        self.follower.deliver("stderr", stderr)

    def never_started(self) -> str:
        return f"async_wrapper never wrote {self.ref.job_dir}"


def job_source(
    source: str,
    hook: SSHAsyncJobHook,
    ref: JobRef,
    follow: Follow,
    *,
    log: logging.Logger | Any,
    ansible_async_dir: str = DEFAULT_ANSIBLE_ASYNC_DIR,
    chunk_bytes: int = DEFAULT_CHUNK,
) -> JobSource:
    """The source named SOURCE (see ansible.SOURCES) for REF; FOLLOW makes its output follower.

    An empty ``ref.job_dir`` is the job's default place: ``hook.async_dir``/ID
    for this provider's jobs, ``ansible_async_dir``/ID for Ansible's.
    """
    if validate_source(source) == SOURCE_ANSIBLE:
        return AnsibleJob(ref, follow, log, ansible_async_dir)
    ref = ref if ref.job_dir else dataclasses.replace(ref, job_dir=hook.job_dir(ref.job_id))
    return AirflowJob(hook, ref, follow, chunk_bytes)
