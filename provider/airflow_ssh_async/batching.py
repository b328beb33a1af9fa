"""One remote command per host per poll, whatever the number of watched jobs.

Every watcher in an event loop that asks for status on the same host (same
:attr:`SSHOptions.pool_key`) within the same instant is served by one
status.sh call; output reads are batched the same way. Watchers align their
polls to the poll interval on the wall clock (:func:`sleep_to_next_tick`), so
a thousand triggers on one host make one call per tick, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from typing import Any, Generic, TypeVar

from airflow_ssh_async.client import RemoteHost
from airflow_ssh_async.hooks import Chunk, ReadRequest, SSHAsyncJobHook
from airflow_ssh_async.job import JobFacts, JobStatus

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# How long a batch waits for more requests after the first: long enough for
# every watcher woken by the same tick, short against any poll interval.
GATHER_WINDOW = 0.05


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
            value = values[key]
            for f in futures:
                if f.done():
                    continue
                if isinstance(value, Exception):
                    f.set_exception(value)
                else:
                    f.set_result(value)


class HostBatcher:
    """Batched status and output reads for one host in one event loop."""

    def __init__(self, hook: SSHAsyncJobHook, host: RemoteHost) -> None:
        self._hook = hook
        self._host = host
        self._job_json: dict[str, dict[str, Any]] = {}
        self.status = Coalescer[str, tuple[JobStatus, JobFacts]](self._fetch_status)
        self.read = Coalescer[ReadRequest, Chunk](self._fetch_output)
        self.delivered = Coalescer[tuple[str, str, str], tuple[int, int] | None](self._fetch_delivered)

    async def _fetch_status(self, job_dirs: list[str]) -> Mapping[str, tuple[JobStatus, JobFacts] | Exception]:
        out = await self._hook.astatus_each(job_dirs, cached_job_json=self._job_json, host=self._host)
        for d, value in out.items():
            if not isinstance(value, Exception) and value[1].job_json is not None:
                self._job_json[d] = value[1].job_json
        return out

    async def _fetch_output(self, requests: list[ReadRequest]) -> dict[ReadRequest, Chunk]:
        chunks = await self._hook.aread(requests, host=self._host)
        return dict(zip(requests, chunks, strict=True))

    async def _fetch_delivered(
        self, requests: list[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], tuple[int, int] | None]:
        return dict(zip(requests, await self._hook.adelivered(requests, host=self._host), strict=True))

    def forget(self, job_dir: str) -> None:
        self._job_json.pop(job_dir, None)


class SharedPerLoop(Generic[V]):
    """One object per key (a host's pool key) per event loop, shared by every
    watcher that borrows it and dropped when the last one leaves."""

    def __init__(self) -> None:
        self._tables: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, tuple[V, int]]] = (
            weakref.WeakKeyDictionary()
        )

    @contextlib.asynccontextmanager
    async def borrow(self, key: str, make: Callable[[], V]) -> AsyncIterator[V]:
        table = self._tables.setdefault(asyncio.get_running_loop(), {})
        value, users = table[key] if key in table else (make(), 0)
        table[key] = (value, users + 1)
        try:
            yield value
        finally:
            value, users = table[key]
            if users <= 1:
                del table[key]
            else:
                table[key] = (value, users - 1)


_host_batchers: SharedPerLoop[HostBatcher] = SharedPerLoop()


def batcher_for(hook: SSHAsyncJobHook, host: RemoteHost) -> contextlib.AbstractAsyncContextManager[HostBatcher]:
    """Borrow the loop's batcher for a host: ``async with batcher_for(hook, host) as b``."""
    return _host_batchers.borrow(host.options.pool_key, lambda: HostBatcher(hook, host))


async def sleep_to_next_tick(interval: float) -> None:
    """Sleep to the next multiple of INTERVAL on the wall clock, so watchers align."""
    await asyncio.sleep(interval - (time.time() % interval))
