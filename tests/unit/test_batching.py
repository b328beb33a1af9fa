"""Coalescer: keys asked for within one gather window are fetched in one call (no I/O)."""

from __future__ import annotations

import asyncio

import pytest

from airflow_ssh_async.batching import Coalescer


class Fetcher:
    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    async def __call__(self, keys: list[str]) -> dict[str, str | Exception]:
        self.calls.append(keys)
        if self.fail is not None:
            raise self.fail
        return {k: ValueError(f"{k} is damaged") if k.startswith("bad") else k.upper() for k in keys}


def test_keys_asked_at_once_are_one_call_and_each_waiter_gets_its_value() -> None:
    fetch = Fetcher()
    coalescer = Coalescer(fetch)

    async def go() -> list[str]:
        return await asyncio.gather(coalescer.get("a"), coalescer.get("b"), coalescer.get("a"))

    assert asyncio.run(go()) == ["A", "B", "A"]
    assert fetch.calls == [["a", "b"]]  # a key asked twice is fetched once
    assert coalescer.calls == 1


def test_keys_asked_after_a_batch_left_make_the_next_call() -> None:
    fetch = Fetcher()
    coalescer = Coalescer(fetch)

    async def go() -> list[str]:
        first = await coalescer.get("a")
        return [first, await coalescer.get("b")]

    assert asyncio.run(go()) == ["A", "B"]
    assert fetch.calls == [["a"], ["b"]]


def test_one_keys_error_fails_only_its_waiters() -> None:
    coalescer = Coalescer(Fetcher())

    async def go() -> list[str | BaseException]:
        return await asyncio.gather(coalescer.get("good"), coalescer.get("bad1"), return_exceptions=True)

    good, bad = asyncio.run(go())
    assert good == "GOOD"
    assert isinstance(bad, ValueError) and "bad1 is damaged" in str(bad)


def test_a_failed_fetch_fails_every_waiter_of_its_batch() -> None:
    coalescer = Coalescer(Fetcher(fail=ConnectionError("host down")))

    async def go() -> list[str | BaseException]:
        return await asyncio.gather(coalescer.get("a"), coalescer.get("b"), return_exceptions=True)

    results = asyncio.run(go())
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]


def test_a_cancelled_waiter_leaves_the_others_served() -> None:
    coalescer = Coalescer(Fetcher())

    async def go() -> str:
        doomed = asyncio.ensure_future(coalescer.get("a"))
        kept = asyncio.ensure_future(coalescer.get("a"))
        await asyncio.sleep(0)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        return await kept

    assert asyncio.run(go()) == "A"
