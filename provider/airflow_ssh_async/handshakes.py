"""At most a few SSH handshakes at a time per event loop, so a reconnect storm never stalls it.

An SSH handshake costs the event loop 5 to 15 ms of CPU (key exchange,
host-key check, the signature, and a dozen socket writes, which on a
loopback or busy host run the kernel's side of the write too). Started all
at once, 50 handshakes advance in step: the replies of all 50 hosts arrive
together and are handled in one pass of the loop, which then runs no timer
and no other trigger for 100 to 200 ms. Admitting :data:`HANDSHAKES` at a
time keeps each pass to a few handshakes' worth and costs no throughput
(the loop is the bottleneck either way).

A host that does not answer must not hold a place: a handshake keeps its
place for at most :data:`HOLD` seconds, then goes on without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from airflow_ssh_async.per_loop import SharedPerLoop

T = TypeVar("T")

HANDSHAKES = 6
HOLD = 1.0

_places: SharedPerLoop[asyncio.Semaphore] = SharedPerLoop()


def _semaphore() -> asyncio.Semaphore:
    """This loop's places (a semaphore is bound to the loop that uses it)."""
    return _places.get("handshakes", lambda: asyncio.Semaphore(HANDSHAKES))


async def admitted(handshake: Awaitable[T]) -> T:
    """HANDSHAKE's result, run once a place is free; the place is given back
    when it ends or after HOLD seconds, whichever comes first."""
    sem = _semaphore()
    async with sem:
        task = asyncio.ensure_future(handshake)
        try:
            await asyncio.wait({task}, timeout=HOLD)
        except BaseException:
            task.cancel()
            raise
    return await task
