"""Pure deadline arithmetic: how long a job may run, from job_timeout and execution_timeout.

Airflow 3.3 does not enforce ``execution_timeout`` while a task is deferred
(its task runner times ``execute`` and ``execute_complete`` only), so the
provider does: the host's supervisor ends the job when the sooner of two
limits runs out, whether or not a triggerer runs (supervise.sh, "limits"):

- ``job_timeout``: seconds from the job's start (Ansible's ``async``);
- ``execution_timeout``: what is left of it for the try, counted from the
  try's start as Airflow counts it (``ti.start_date``, kept across the
  deferral). Each try has its own: a retry that re-attaches to a running job
  moves the job's deadline to the new try's (limit.sh), and job_timeout
  still caps it.

No I/O here: tests/unit/test_limits.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

JOB_TIMEOUT = "job_timeout"
EXECUTION_TIMEOUT = "execution_timeout"


def seconds(value: int | float | timedelta | None) -> float | None:
    """A limit in seconds; None (or 0) is no limit."""
    if value is None:
        return None
    value = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return value if value > 0 else None


def execution_left(execution_timeout: timedelta | None, try_start: datetime | None, now: datetime) -> float | None:
    """Seconds left of the try's execution_timeout at NOW (may be <= 0); None: no execution_timeout.

    A try without a start date (``dag.test()`` before Airflow sets it) starts now.
    """
    limit = seconds(execution_timeout)
    if limit is None:
        return None
    spent = (now - try_start).total_seconds() if try_start is not None else 0.0
    return limit - max(spent, 0.0)


def host_seconds(left: float) -> int:
    """Seconds left as the host counts them (whole seconds of its clock), never 0.

    Rounded up: the job is never ended before the user's limit, and at most a
    second after it.
    """
    return max(1, math.ceil(left))


@dataclass(frozen=True)
class Limit:
    """The limit that ends a job first, seen from one moment."""

    name: str  # JOB_TIMEOUT or EXECUTION_TIMEOUT
    left: float  # seconds from that moment


def effective_limit(job_left: float | None, execution_left: float | None) -> Limit | None:
    """The sooner of the two limits (a tie goes to job_timeout, as on the host); None: neither is set."""
    if job_left is None and execution_left is None:
        return None
    if execution_left is None or (job_left is not None and job_left <= execution_left):
        assert job_left is not None
        return Limit(JOB_TIMEOUT, job_left)
    return Limit(EXECUTION_TIMEOUT, execution_left)


def deferral_timeout(limit: Limit | None, grace: float, margin: float) -> timedelta | None:
    """The deferral's own timeout: after the host's limit, its grace and MARGIN.

    So the host's limit fires first and the task reports it with the job
    stopped; the deferral timeout is only the backstop for a host that
    cannot be reached.
    """
    if limit is None:
        return None
    return timedelta(seconds=max(limit.left, 0.0) + grace + margin)
