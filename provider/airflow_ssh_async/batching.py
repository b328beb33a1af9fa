"""One remote command per host per poll, whatever the number of watched jobs.

Every watcher in an event loop that asks for status on the same host (same
:attr:`SSHOptions.pool_key`) is served by one status.sh call at a time
(:class:`HostStatus`); output reads are batched the same way
(:class:`Coalescer`). With ``wait_on_host`` (the default) that call waits on
the host and returns as soon as a watched job ends; without, calls are made
once per poll interval on the wall clock (:func:`sleep_to_next_tick`), so a
thousand triggers on one host make one call per tick, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from airflow_ssh_async.client import RemoteHost
from airflow_ssh_async.hooks import Chunk, ReadRequest, SSHAsyncJobHook, StatusWait
from airflow_ssh_async.job import JobFacts, JobStatus
from airflow_ssh_async.per_loop import SharedPerLoop

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# How long a batch waits for more requests after the first: long enough for
# every watcher woken by the same tick, short against any poll interval.
GATHER_WINDOW = 0.05
# A status call that waits on the host returns after this long (or its
# watchers' poll interval, if longer) when nothing happens: an idle host
# costs fewer calls than polling would.
WAIT_MAX = 60.0
# Calls start at least this far apart: a storm of job ends costs at most
# two calls a second, and each reports every end seen by then.
MIN_GAP = 0.5

StatusValue = tuple[JobStatus, JobFacts]
# Statuses a waiting call reports while it goes on (status.sh --wait-parts).
OnPart = Callable[[Mapping[str, Any]], None]


def resolve(futures: Iterable[asyncio.Future[Any]], value: object) -> None:
    """Give each waiter still waiting VALUE, or raise it in them when it is an exception."""
    for f in futures:
        if f.done():
            continue
        if isinstance(value, Exception):
            f.set_exception(value)
        else:
            f.set_result(value)


class Coalescer(Generic[K, V]):
    """Collect keys asked for within GATHER_WINDOW; fetch them in one call.

    A fetch may answer one key with an exception: only that key's waiters
    get it (a damaged job file fails its own watcher, not the host's).
    """

    def __init__(self, fetch: Callable[[list[K]], Awaitable[Mapping[K, V | Exception]]]) -> None:
        self._fetch = fetch
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._flush: asyncio.Task[None] | None = None
        self.calls = 0  # remote calls made, for tests and benchmarks

    async def get(self, key: K) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._flush is None:
            self._flush = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        await asyncio.sleep(GATHER_WINDOW)
        batch, self._waiting, self._flush = self._waiting, {}, None
        self.calls += 1
        try:
            values = await self._fetch(list(batch))
        except BaseException as exc:  # every waiter learns of the failure
            for futures in batch.values():
                for f in futures:
                    if not f.done():
                        f.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for key, futures in batch.items():
            resolve(futures, values[key])


class HostStatus:
    """The status of every job watched on one host: one status.sh call at a time.

    A watcher asks :meth:`get` again as soon as it has acted on an answer;
    this class paces the calls. With ``wait`` (the connection's
    ``wait_on_host``), a call waits on the host (status.sh --wait) and
    returns when a watched job ends, when their output grew (at most once
    per poll interval) or after ``max(poll interval, WAIT_MAX)``. Without,
    a call is made at each tick of the poll interval on the wall clock, as
    watchers used to poll. A watcher new to the host gets its first answer
    at once: a wait in progress is cut short (its channel closed) for it.
    Every call covers every watched job; an answer that finds a watcher busy
    is kept for its next :meth:`get`.
    """

    def __init__(
        self,
        fetch: Callable[[list[str], StatusWait | None, OnPart], Coroutine[Any, Any, tuple[Mapping[str, Any], str]]],
    ) -> None:
        self._fetch = fetch
        self._waiting: dict[str, list[asyncio.Future[StatusValue]]] = {}
        self._watched: dict[str, tuple[float, bool]] = {}  # key -> (poll interval, may wait)
        self._known: dict[str, int] = {}  # key -> its streams' total size in the last answer
        self._unread: dict[str, StatusValue] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._call: asyncio.Task[tuple[Mapping[str, Any], str]] | None = None
        self._call_waits = False
        self._cut = False
        self._wake = asyncio.Event()
        self._last_start = -math.inf
        self._last_grew = -math.inf
        self.calls = 0  # remote calls made, for tests and benchmarks
        self.woke: list[str] = []  # why each waiting call returned, for tests and benchmarks

    async def get(self, key: str, poll_interval: float, wait: bool = True) -> StatusValue:
        """KEY's next status: at once for a new watcher, else the next answer."""
        if key in self._unread:
            return self._unread.pop(key)
        self._watched[key] = (max(0.01, float(poll_interval)), wait)
        future: asyncio.Future[StatusValue] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if key not in self._known:
            self._wake.set()
            self._cut_short()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._run())
        return await future

    def forget(self, key: str) -> None:
        for f in self._waiting.pop(key, []):
            f.cancel()  # its watcher left while it waited (the trigger was cancelled)
        self._watched.pop(key, None)
        self._known.pop(key, None)
        self._unread.pop(key, None)
        if not self._watched:
            self._cut_short()  # nobody left to tell: do not hold the host

    def _cut_short(self) -> None:
        """End a wait in progress: its channel is closed, its answer dropped
        (however it ends: the close may also come back as a lost channel)."""
        if self._call is not None and self._call_waits and not self._cut:
            self._cut = True
            self._call.cancel()

    def _plan(self, keys: list[str]) -> StatusWait | None:
        interval = min(self._watched[k][0] for k in keys)
        if not all(self._watched[k][1] for k in keys):
            return None
        now = time.monotonic()
        grow_after = max(0.0, self._last_grew + interval - now)
        return StatusWait(
            max_seconds=math.ceil(max(interval, WAIT_MAX)),
            grow_after=math.ceil(grow_after) if grow_after < WAIT_MAX else None,
            known_total=sum(self._known[k] for k in keys),
            parts=True,
        )

    async def _pause(self, seconds: float) -> None:
        """Sleep SECONDS, or less if a new watcher comes."""
        self._wake.clear()
        if seconds > 0 and not any(k not in self._known for k in self._waiting):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), seconds)

    async def _run(self) -> None:
        while self._waiting:
            await asyncio.sleep(GATHER_WINDOW)
            keys = list(self._watched)
            if not keys:
                break
            fresh = any(k not in self._known for k in keys)
            wait = None if fresh else self._plan(keys)
            if not fresh and wait is None:
                # No wait on the host: one call per tick, as the watchers' polls were.
                interval = min(self._watched[k][0] for k in keys)
                await self._pause(interval - (time.time() % interval))
            else:
                await self._pause(self._last_start + MIN_GAP - time.monotonic())
            keys = list(self._watched)
            if not keys:
                continue
            if any(k not in self._known for k in keys):
                wait = None
            self._last_start = time.monotonic()
            self.calls += 1
            self._call_waits = wait is not None
            self._cut = False
            told: set[str] = set()

            def on_part(values: Mapping[str, Any], told: set[str] = told) -> None:
                # Jobs that ended while the call waits on: their watchers act now.
                for key, value in values.items():
                    told.add(key)
                    self._deliver(key, value)

            call = self._call = asyncio.create_task(self._fetch(keys, wait, on_part))
            try:
                await asyncio.wait({call})
            except asyncio.CancelledError:
                call.cancel()
                raise
            finally:
                self._call = None
            if call.cancelled() or self._cut:
                if not call.cancelled():
                    call.exception()  # retrieved: a cut call's error is no failed poll
                continue  # cut short for a new watcher: ask again, with it
            exc = call.exception()
            if exc is not None:
                # An ordinary failed poll for everyone waiting: they back off.
                waiting, self._waiting = self._waiting, {}
                for futures in waiting.values():
                    for f in futures:
                        if not f.done():
                            f.set_exception(exc)
                continue
            values, woke = call.result()
            if wait is not None:
                self.woke.append(woke)
            if woke == "grew":
                self._last_grew = time.monotonic()
            for key in keys:
                if key not in told:
                    self._deliver(key, values[key])

    def _deliver(self, key: str, value: Any) -> None:
        """KEY's answer to its waiting watcher, or kept for its next get()."""
        if key not in self._watched:
            return  # its watcher left
        if not isinstance(value, Exception):
            self._known[key] = sum(value[1].sizes.values())
        futures = self._waiting.pop(key, [])
        resolve(futures, value)
        if not futures and not isinstance(value, Exception):
            self._unread[key] = value


class HostBatcher:
    """Batched status and output reads for one host in one event loop."""

    def __init__(self, hook: SSHAsyncJobHook, host: RemoteHost) -> None:
        self._hook = hook
        self._host = host
        self._job_json: dict[str, dict[str, Any]] = {}
        self.status = Coalescer[str, tuple[JobStatus, JobFacts]](self._fetch_status)
        self.polls = HostStatus(self._fetch_status_wait)
        self.read = Coalescer[ReadRequest, Chunk](self._fetch_output)
        self.delivered = Coalescer[tuple[str, str, str], tuple[int, int] | None](self._fetch_delivered)
        self.record = Coalescer[ReadRequest, None](self._fetch_record)

    async def _fetch_status(self, job_dirs: list[str]) -> Mapping[str, tuple[JobStatus, JobFacts] | Exception]:
        out = await self._hook.astatus_each(job_dirs, cached_job_json=self._job_json, host=self._host)
        for d, value in out.items():
            if not isinstance(value, Exception) and value[1].job_json is not None:
                self._job_json[d] = value[1].job_json
        return out

    async def _fetch_status_wait(
        self, job_dirs: list[str], wait: StatusWait | None, on_part: OnPart
    ) -> tuple[Mapping[str, tuple[JobStatus, JobFacts] | Exception], str]:
        out, woke = await self._hook.astatus_wait(
            job_dirs, wait, cached_job_json=self._job_json, host=self._host, on_part=on_part
        )
        for d, value in out.items():
            if not isinstance(value, Exception) and value[1].job_json is not None:
                self._job_json[d] = value[1].job_json
        return out, woke

    async def poll(self, job_dir: str, poll_interval: float) -> tuple[JobStatus, JobFacts]:
        """JOB_DIR's next status (see :class:`HostStatus`): call again at
        once after acting on it; this paces the polls."""
        return await self.polls.get(job_dir, poll_interval, self._host.options.wait_on_host)

    async def _fetch_output(self, requests: list[ReadRequest]) -> dict[ReadRequest, Chunk]:
        chunks = await self._hook.aread(requests, host=self._host)
        return dict(zip(requests, chunks, strict=True))

    async def _fetch_delivered(
        self, requests: list[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], tuple[int, int] | None]:
        return dict(zip(requests, await self._hook.adelivered(requests, host=self._host), strict=True))

    async def _fetch_record(self, requests: list[ReadRequest]) -> dict[ReadRequest, None]:
        await self._hook.arecord(requests, host=self._host)
        return dict.fromkeys(requests)

    def forget(self, job_dir: str) -> None:
        self._job_json.pop(job_dir, None)
        self.polls.forget(job_dir)


_host_batchers: SharedPerLoop[HostBatcher] = SharedPerLoop()


def batcher_for(hook: SSHAsyncJobHook, host: RemoteHost) -> contextlib.AbstractAsyncContextManager[HostBatcher]:
    """Borrow the loop's batcher for a host: ``async with batcher_for(hook, host) as b``."""
    return _host_batchers.borrow(host.options.pool_key, lambda: HostBatcher(hook, host))


async def sleep_to_next_tick(interval: float) -> None:
    """Sleep to the next multiple of INTERVAL on the wall clock, so watchers align."""
    await asyncio.sleep(interval - (time.time() % interval))
