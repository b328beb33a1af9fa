"""The one registry of what an event loop shares: per key, one object.

asyncio objects (connections, locks, semaphores, tasks) belong to the loop
that made them, and a process may run several loops (a worker's
``asyncio.run`` per call, a triggerer's one loop, tests), so everything
shared is kept per loop, and forgotten with the loop. The SSH connection
pool (client.py), the host batchers (batching.py) and the handshake places
(handshakes.py) all live here.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class SharedPerLoop(Generic[V]):
    """One object per key per event loop.

    :meth:`borrow` counts its users and drops the object when the last one
    leaves; :meth:`get` keeps it for the loop's life. One registry uses one
    of the two for a key, never both.
    """

    def __init__(self) -> None:
        self._tables: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, tuple[V, int]]] = (
            weakref.WeakKeyDictionary()
        )

    def _table(self) -> dict[str, tuple[V, int]]:
        return self._tables.setdefault(asyncio.get_running_loop(), {})

    def values(self) -> list[V]:
        """What this loop holds now."""
        return [value for value, _ in self._table().values()]

    def get(self, key: str, make: Callable[[], V]) -> V:
        """The loop's object for KEY, made on first use and kept while the loop lives."""
        table = self._table()
        if key not in table:
            table[key] = (make(), 0)
        return table[key][0]

    @contextlib.asynccontextmanager
    async def borrow(
        self, key: str, make: Callable[[], V], release: Callable[[V], Awaitable[None]] | None = None
    ) -> AsyncIterator[V]:
        """The loop's object for KEY for the length of the block, made on first
        use; the last user to leave drops it (and awaits RELEASE of it)."""
        table = self._table()
        value, users = table[key] if key in table else (make(), 0)
        table[key] = (value, users + 1)
        try:
            yield value
        finally:
            value, users = table[key]
            if users > 1:
                table[key] = (value, users - 1)
            else:
                del table[key]
                if release is not None:
                    await release(value)
