"""The deadline arithmetic of limits.py: which limit ends a job, and when (no I/O)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_ssh_async.limits import (
    EXECUTION_TIMEOUT,
    JOB_TIMEOUT,
    Limit,
    deferral_timeout,
    effective_limit,
    execution_left,
    host_seconds,
    seconds,
)

T0 = datetime(2026, 1, 1, 2, 0, tzinfo=timezone.utc)


def test_execution_timeout_counts_from_the_try_start_not_from_the_launch() -> None:
    assert execution_left(timedelta(minutes=10), T0, T0 + timedelta(seconds=90)) == 510


def test_no_execution_timeout_is_no_limit_and_a_try_without_start_starts_now() -> None:
    assert execution_left(None, T0, T0) is None
    assert execution_left(timedelta(0), T0, T0) is None
    assert execution_left(timedelta(seconds=8), None, T0) == 8


def test_a_try_past_its_execution_timeout_has_nothing_left_and_a_clock_behind_takes_nothing_extra() -> None:
    assert execution_left(timedelta(seconds=8), T0, T0 + timedelta(seconds=30)) == -22
    assert execution_left(timedelta(seconds=8), T0 + timedelta(seconds=5), T0) == 8


@pytest.mark.parametrize(("left", "want"), [(0.2, 1), (1.0, 1), (7.01, 8), (8.0, 8), (-5.0, 1), (86400.5, 86401)])
def test_host_seconds_round_up_and_never_reach_zero(left: float, want: int) -> None:
    assert host_seconds(left) == want


def test_the_sooner_limit_wins_and_a_tie_goes_to_job_timeout() -> None:
    assert effective_limit(5, 8) == Limit(JOB_TIMEOUT, 5)
    assert effective_limit(60, 8) == Limit(EXECUTION_TIMEOUT, 8)
    assert effective_limit(8, 8) == Limit(JOB_TIMEOUT, 8)
    assert effective_limit(None, 8) == Limit(EXECUTION_TIMEOUT, 8)
    assert effective_limit(5, None) == Limit(JOB_TIMEOUT, 5)
    assert effective_limit(None, None) is None


def test_limits_in_seconds_from_ints_and_timedeltas_zero_is_none() -> None:
    assert seconds(timedelta(minutes=2)) == 120
    assert seconds(30) == 30
    assert seconds(0) is None and seconds(None) is None


def test_the_deferral_outlasts_the_host_limit_by_grace_and_margin() -> None:
    assert deferral_timeout(Limit(EXECUTION_TIMEOUT, 8), grace=10, margin=120) == timedelta(seconds=138)
    assert deferral_timeout(Limit(JOB_TIMEOUT, -3), grace=10, margin=120) == timedelta(seconds=130)
    assert deferral_timeout(None, grace=10, margin=120) is None
