"""The view's data layer: one shared, time-bounded snapshot of each host's jobs.

Every browser tab, every viewer and every route of one API server process
reads the same cache, so ten open tabs cost the host no more than one: a
host is asked again only once its snapshot is older than ``REFRESH``, by one
refresh for all callers (single flight), and meanwhile the last snapshot is
served (a page never waits for a host it has seen, however many jobs it
has); only the first look at a host waits for its read. A refresh is one
``list`` and one batched ``status`` call for all the host's jobs (never one
call per job), plus one batched read of the progress tails that changed. Each refresh is bounded by ``HOST_TIMEOUT``; a
host that does not answer in time, or refuses us, becomes a snapshot with
its error, and the other hosts are unaffected.

Output is read in bounded chunks (``MAX_CHUNK``) through the hook's batched
read, and only up to the size the snapshot saw: the bytes below it do not
change (the files only grow), so followers that ask for the same bytes share
one read until the next refresh, and a follower that has everything the
snapshot knows costs no SSH call at all.

A host's jobs are those of one user: a section with a ``become_user`` is
read, followed and killed through the same ``sudo -n`` / ``doas -n`` the
launching task used (the hook's, become.py), so the API server's login never
needs to read the target user's files. Snapshots are per (connection,
async_dir, become_user, become_method).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_ssh_async.client import RemoteHost, remote_host
from airflow_ssh_async.errors import SSHAsyncJobError
from airflow_ssh_async.job import DEFAULT_ASYNC_DIR, ProtocolError
from airflow_ssh_async.ui.records import JobRow, job_row, last_line

REFRESH = 5.0  # seconds a snapshot is served before the host is asked again: the list page's period
HOST_TIMEOUT = 15.0  # the most one host's refresh may take before it shows as an error
MAX_CHUNK = 256 * 1024  # the most one output read returns
PROGRESS_TAIL = 512  # bytes of a progress file read for its last line

HookFactory = Callable[[str, str, str, str], Any]


@dataclass
class Snapshot:
    """One host's jobs as last read, or the error that stopped the read."""

    conn_id: str
    async_dir: str
    become_user: str = ""  # "": the connection's own user (its login, or its extra's become_user)
    become_method: str = ""
    rows: list[JobRow] = field(default_factory=list)
    progress: dict[str, str] = field(default_factory=dict)  # job id -> last progress line
    now: int = 0  # the host's clock at the read
    resolved_dir: str = ""
    label: str = ""  # user@host:port, as errors name it
    error: str = ""
    error_kind: str = ""  # "unknown_connection", "unreachable", "refused", "timeout", "protocol"
    read_at: float = 0.0  # time.monotonic() of the read
    seconds: float = 0.0  # how long the read took

    def find(self, job_id: str) -> JobRow | None:
        return next((r for r in self.rows if r.job_id == job_id), None)


def _make_hook(conn_id: str, async_dir: str, become_user: str = "", become_method: str = "") -> Any:
    from airflow_ssh_async.hooks import SSHAsyncJobHook

    return SSHAsyncJobHook(conn_id, async_dir, become_user or None, become_method or None)


def _kind(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "ConnectionNotFoundError":
        return "unknown_connection"
    if name in ("SSHAuthError", "HostKeyError", "BecomeError"):
        return "refused"
    if isinstance(exc, ProtocolError):
        return "protocol"
    return "unreachable"


class HostCache:
    """Snapshots per (connection, async_dir), shared by every caller of this process."""

    def __init__(
        self,
        make_hook: HookFactory = _make_hook,
        refresh: float = REFRESH,
        host_timeout: float = HOST_TIMEOUT,
    ) -> None:
        self.make_hook = make_hook
        self.refresh = refresh
        self.host_timeout = host_timeout
        self._snapshots: dict[tuple[str, str, str, str], Snapshot] = {}
        self._inflight: dict[tuple[str, str, str, str], asyncio.Task[Snapshot]] = {}
        self._reads: dict[tuple[Any, ...], tuple[float, asyncio.Task[Any]]] = {}
        self._progress: dict[tuple[str, str, int], str] = {}  # (conn, folder, progress size) -> last line
        self.calls: dict[str, int] = {}  # SSH commands run per connection id, for tests and benchmarks

    def _count(self, conn_id: str, n: int = 1) -> None:
        self.calls[conn_id] = self.calls.get(conn_id, 0) + n

    def forget(
        self, conn_id: str, async_dir: str = DEFAULT_ASYNC_DIR, become_user: str = "", become_method: str = ""
    ) -> None:
        """Drop a snapshot (after a kill), so the next look asks the host."""
        self._snapshots.pop((conn_id, async_dir, become_user, become_method), None)

    async def snapshot(
        self,
        conn_id: str,
        async_dir: str = DEFAULT_ASYNC_DIR,
        become_user: str = "",
        become_method: str = "",
        *,
        fresh: bool = False,
    ) -> Snapshot:
        """The jobs of one user on a host (BECOME_USER's, "" the connection's). A
        snapshot older than ``refresh`` is still served at once while one refresh
        runs for everybody (so a page never waits for a host it has seen before);
        the first look at a host, and FRESH, wait for the read."""
        key = (conn_id, async_dir or DEFAULT_ASYNC_DIR, become_user or "", become_method or "")
        snap = self._snapshots.get(key)
        if snap is not None and time.monotonic() - snap.read_at < self.refresh:
            return snap
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._read(*key))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        if snap is not None and not fresh:
            return snap
        # Shielded: a browser that goes away must not cancel a read other tabs wait for.
        return await asyncio.shield(task)

    def _done(self, key: tuple[str, str, str, str], _task: asyncio.Task[Snapshot]) -> None:
        self._inflight.pop(key, None)

    async def _read(self, conn_id: str, async_dir: str, become_user: str, become_method: str) -> Snapshot:
        started = time.monotonic()
        snap = Snapshot(conn_id, async_dir, become_user, become_method)
        try:
            await asyncio.wait_for(self._fill(snap), self.host_timeout)
        except asyncio.TimeoutError:
            snap.rows, snap.error_kind = [], "timeout"
            snap.error = f"no answer within {self.host_timeout:.0f} s (the per-host time bound)"
        except (SSHAsyncJobError, ProtocolError, OSError) as exc:
            snap.rows, snap.error_kind, snap.error = [], _kind(exc), str(exc)
        snap.read_at = time.monotonic()
        snap.seconds = snap.read_at - started
        self._snapshots[(conn_id, async_dir, become_user, become_method)] = snap
        return snap

    def _hook(self, snap: Snapshot) -> Any:
        return self.make_hook(snap.conn_id, snap.async_dir, snap.become_user, snap.become_method)

    async def _fill(self, snap: Snapshot) -> None:
        hook = self._hook(snap)
        options = await hook.aget_options()
        snap.label = options.label
        async with remote_host(options) as host:
            listing = await hook.alist_jobs(host=host)
            # hook.alist_jobs: list.sh, then one status.sh call for all the folders (none without any).
            self._count(snap.conn_id, 2 if listing.jobs else 1)
            snap.now, snap.resolved_dir = listing.now, listing.async_dir
            rows = [
                job_row(j.job_id, j.job_dir, (j.status, j.facts) if j.status else ProtocolError(j.error))
                for j in listing.jobs
            ]
            snap.rows = rows
            snap.progress = await self._progress_lines(snap.conn_id, hook, host, rows)

    async def _progress_lines(self, conn_id: str, hook: Any, host: RemoteHost, rows: list[JobRow]) -> dict[str, str]:
        """Last progress line of every job that has one; only changed files are read (one batched call)."""
        out: dict[str, str] = {}
        todo: list[tuple[JobRow, int]] = []
        for r in rows:
            size = dict(r.sizes).get("progress", 0)
            if size <= 0:
                continue
            known = self._progress.get((conn_id, r.job_dir, size))
            if known is not None:
                out[r.job_id] = known
            else:
                todo.append((r, size))
        if todo:
            self._count(conn_id)
            chunks = await hook.aread(
                [(r.job_dir, "progress", max(0, size - PROGRESS_TAIL)) for r, size in todo],
                max_bytes=PROGRESS_TAIL,
                host=host,
            )
            for (r, size), chunk in zip(todo, chunks, strict=True):
                line = last_line(chunk.data)
                self._progress[(conn_id, r.job_dir, size)] = out[r.job_id] = line
        return out

    async def read(self, snap: Snapshot, job_dir: str, stream: str, offset: int, max_bytes: int, size: int) -> Any:
        """One bounded chunk of a job's stream (hook.aread) from OFFSET, of a file SNAP saw at SIZE,
        read as the user SNAP was read as.

        Reads of the same bytes (same offset, length and size seen) share one
        SSH call for as long as a snapshot lives.
        """
        conn_id = snap.conn_id
        key = (conn_id, snap.async_dir, snap.become_user, snap.become_method, job_dir, stream, offset, max_bytes, size)
        now = time.monotonic()
        for k, (at, _task) in list(self._reads.items()):
            if now - at > self.refresh:
                del self._reads[k]
        found = self._reads.get(key)
        if found is None:

            async def go() -> Any:
                hook = self._hook(snap)
                options = await hook.aget_options()
                async with remote_host(options) as host:
                    self._count(conn_id)
                    return (await hook.aread([(job_dir, stream, offset)], max_bytes=max_bytes, host=host))[0]

            found = (now, asyncio.ensure_future(self._bounded(go())))
            self._reads[key] = found
        try:
            return await asyncio.shield(found[1])
        except BaseException:
            self._reads.pop(key, None)  # a failed read is not kept for the others
            raise

    async def _bounded(self, work: Awaitable[Any]) -> Any:
        return await asyncio.wait_for(work, self.host_timeout)

    async def cancel(self, snap: Snapshot, job_dir: str, grace: int) -> str:
        """Kill a job of SNAP's (hook.acancel, as SNAP's user: SIGTERM to its group, SIGKILL after
        GRACE); the snapshot is dropped."""
        from airflow_ssh_async.hooks import cancel_bound

        hook = self._hook(snap)
        options = await hook.aget_options()
        try:
            async with remote_host(options) as host:
                self._count(snap.conn_id)
                return str(await asyncio.wait_for(hook.acancel(job_dir, grace=grace, host=host), cancel_bound(grace)))
        finally:
            self.forget(snap.conn_id, snap.async_dir, snap.become_user, snap.become_method)


def _configured(key: str, default: float) -> float:
    """``[ssh_async] KEY`` of airflow.cfg (or AIRFLOW__SSH_ASYNC__KEY), else DEFAULT."""
    try:
        from airflow.configuration import conf

        return float(conf.getfloat("ssh_async", key, fallback=default))
    except Exception:  # no Airflow config here (a unit test): the default
        return default


CACHE = HostCache(refresh=_configured("ui_refresh", REFRESH), host_timeout=_configured("ui_host_timeout", HOST_TIMEOUT))
