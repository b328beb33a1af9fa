"""At most a few SSH handshakes at a time per loop; a host that does not answer holds no place."""

from __future__ import annotations

import asyncio

import pytest

from airflow_ssh_async import handshakes


def test_at_most_handshakes_run_at_once() -> None:
    running = most = 0

    async def handshake(i: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        return i

    async def main() -> list[int]:
        return await asyncio.gather(*(handshakes.admitted(handshake(i)) for i in range(30)))

    assert asyncio.run(main()) == list(range(30))
    assert most == handshakes.HANDSHAKES


def test_a_host_that_does_not_answer_gives_its_place_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """HANDSHAKES hung hosts: the others still connect, each after at most HOLD."""
    monkeypatch.setattr(handshakes, "HOLD", 0.2)
    hung = asyncio.Event()

    async def main() -> float:
        stuck = [asyncio.ensure_future(handshakes.admitted(hung.wait())) for _ in range(handshakes.HANDSHAKES)]
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(handshakes.admitted(asyncio.sleep(0, "ok")), 10)
        took = loop.time() - started
        hung.set()
        await asyncio.gather(*stuck)
        return took

    assert 0.15 < asyncio.run(main()) < 5


def test_errors_and_cancellation_reach_the_caller() -> None:
    async def fails() -> None:
        raise OSError("refused")

    async def main() -> None:
        with pytest.raises(OSError, match="refused"):
            await handshakes.admitted(fails())
        never = asyncio.Event()
        inner = asyncio.ensure_future(never.wait())
        outer = asyncio.ensure_future(handshakes.admitted(inner))
        await asyncio.sleep(0.05)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        assert inner.cancelled()
        # The places were all given back.
        assert handshakes._semaphore()._value == handshakes.HANDSHAKES

    asyncio.run(main())
