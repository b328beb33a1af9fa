"""SSHAsyncJobHook: launch, status, output, cancel and clean up remote jobs.

Async first (the trigger's path); the operator and the ops command use the
same coroutines through the thin sync wrappers here, so there is one SSH
stack. The hook is built in layers, one concern each: the Airflow
connection and become settings (hook_connection.py), the remote calls
(hook_calls.py), what they send and how replies are read (hook_protocol.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from airflow_ssh_async.client import RemoteHost
from airflow_ssh_async.hook_calls import AsyncJobCalls
from airflow_ssh_async.hook_protocol import (
    CANCEL_MARGIN,
    DEFAULT_CHUNK,
    DEFAULT_GRACE,
    MIN_SHARE,
    REPLY_BUDGET,
    STREAMS,
    Chunk,
    Launched,
    ReadRequest,
    StatusWait,
    cancel_bound,
    share_budget,
)
from airflow_ssh_async.listing import JobListing
from airflow_ssh_async.states import JobStatus
from airflow_ssh_async.status_report import JobFacts

__all__ = [
    "CANCEL_MARGIN",
    "DEFAULT_CHUNK",
    "DEFAULT_GRACE",
    "MIN_SHARE",
    "REPLY_BUDGET",
    "STREAMS",
    "Chunk",
    "Launched",
    "ReadRequest",
    "SSHAsyncJobHook",
    "StatusWait",
    "cancel_bound",
    "share_budget",
]

T = TypeVar("T")


class SSHAsyncJobHook(AsyncJobCalls):
    """Drive detached jobs on a host named by an Airflow `ssh` connection.

    :param ssh_conn_id: an Airflow connection of type ``ssh``.
    :param async_dir: where job folders live on the host; ``~`` is the SSH
        user's home (the become user's, with one), resolved on the host.
    :param become_user: run every remote script, and so the job, as this
        user (``sudo -n`` / ``doas -n``; see become.py); None or "" takes the
        connection's ``become_user`` extra, if any.
    :param become_method: ``sudo`` (default) or ``doas``; None takes the
        connection's extra.
    """

    # The sync facade (operator, CLI): each call on a private event loop.

    def run_sync(self, fn: Callable[[RemoteHost], Awaitable[T]]) -> T:
        """Run FN with one connection on a private event loop (worker side)."""
        self.get_options()  # a sync lookup: the worker has no running loop
        return asyncio.run(self._with_host(fn))

    def launch(self, job_id: str, command: str, **kwargs: Any) -> Launched:
        return self.run_sync(lambda h: self.alaunch(job_id, command, host=h, **kwargs))

    def status(self, job_dirs: Sequence[str]) -> dict[str, tuple[JobStatus, JobFacts]]:
        return self.run_sync(lambda h: self.astatus(job_dirs, host=h))

    def list_jobs(self, *, attempts: bool = False) -> JobListing:
        """As :meth:`alist_jobs`, on a connection of its own (sync callers: a UI view, scripts)."""
        return self.run_sync(lambda h: self.alist_jobs(attempts=attempts, host=h))

    def read(self, requests: Sequence[tuple[str, str, int]], max_bytes: int = DEFAULT_CHUNK) -> list[Chunk]:
        return self.run_sync(lambda h: self.aread(requests, max_bytes=max_bytes, host=h))

    def cancel(self, job_dir: str, grace: int = DEFAULT_GRACE) -> str:
        return self.run_sync(lambda h: self.acancel(job_dir, grace=grace, host=h))

    def archive(self, job_dir: str, remove: bool = False) -> str:
        return self.run_sync(lambda h: self.aarchive(job_dir, remove=remove, host=h))
