"""The pause before a trigger's event grows with what it logged lately (log_settle.py)."""

from __future__ import annotations

from typing import Any

from airflow_ssh_async.log_settle import RECENT_S, SETTLE_BASE_S, SETTLE_MAX_S, SETTLE_PER_CHUNK_S, LoggedBytes


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda fmt, *args: self.lines.append((level, fmt % args))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lines_pass_on_whole_and_formatted() -> None:
    rec = Recorder()
    log = LoggedBytes(rec, Clock())
    log.info("%s", "a % b")
    log.warning("err %d", 5)
    log.info("100%")  # no args: not %-formatted
    assert rec.lines == [("info", "a % b"), ("warning", "err 5"), ("info", "100%")]


def test_a_few_small_lines_keep_the_base_pause() -> None:
    log = LoggedBytes(Recorder(), Clock())
    assert log.settle_seconds() == SETTLE_BASE_S
    for i in range(10):
        log.info("line %d", i)
    assert log.settle_seconds() == SETTLE_BASE_S


def test_a_big_last_batch_pauses_a_turn_per_4_kib_and_is_capped() -> None:
    clock = Clock()
    log = LoggedBytes(Recorder(), clock)
    log.info("%s", "y" * 65530)  # the 64 KiB line: 16 turns of 4 KiB, the base pays for one
    assert abs(log.settle_seconds() - (SETTLE_BASE_S + 15 * SETTLE_PER_CHUNK_S)) < 1e-9
    for _ in range(20):
        log.info("%s", "z" * 1_000_000)
    assert log.settle_seconds() == SETTLE_MAX_S


def test_lines_older_than_the_window_no_longer_count() -> None:
    clock = Clock()
    log = LoggedBytes(Recorder(), clock)
    log.info("%s", "y" * 65530)
    clock.now += RECENT_S + 0.1
    assert log.settle_seconds() == SETTLE_BASE_S
    log.info("%s", "é" * 2100)  # counted in bytes: 4,201, two turns
    assert abs(log.settle_seconds() - (SETTLE_BASE_S + SETTLE_PER_CHUNK_S)) < 1e-9
