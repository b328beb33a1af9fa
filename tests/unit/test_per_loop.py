"""SharedPerLoop: one object per key per event loop, dropped with its last user (no I/O)."""

from __future__ import annotations

import asyncio

from airflow_ssh_async.per_loop import SharedPerLoop


def test_users_of_a_key_share_one_object_and_the_last_to_leave_releases_it() -> None:
    registry: SharedPerLoop[list[str]] = SharedPerLoop()
    released: list[list[str]] = []

    async def release(value: list[str]) -> None:
        await asyncio.sleep(0)
        released.append(value)

    async def main() -> None:
        async with registry.borrow("h", list, release) as first:
            async with registry.borrow("h", list, release) as second:
                assert first is second
                async with registry.borrow("other", list, release) as third:
                    assert third is not first
                assert len(released) == 1 and released[0] is third
            assert registry.values() == [first] and len(released) == 1
        assert registry.values() == [] and released[1] is first
        async with registry.borrow("h", list) as again:
            assert again is not first  # made anew once the last user had left

    asyncio.run(main())


def test_each_event_loop_has_its_own_objects_and_get_keeps_one_for_the_loops_life() -> None:
    registry: SharedPerLoop[object] = SharedPerLoop()

    async def borrowed() -> object:
        async with registry.borrow("h", object) as value:
            return value

    async def kept() -> object:
        value = registry.get("k", object)
        assert registry.get("k", object) is value
        return value

    assert asyncio.run(borrowed()) is not asyncio.run(borrowed())
    assert asyncio.run(kept()) is not asyncio.run(kept())


def test_a_user_that_fails_still_leaves() -> None:
    registry: SharedPerLoop[object] = SharedPerLoop()

    async def main() -> None:
        try:
            async with registry.borrow("h", object):
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        assert registry.values() == []

    asyncio.run(main())
