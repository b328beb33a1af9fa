"""Pure: what the Remote jobs view shows of a job, and how the list is cut.

No I/O and no Airflow import, so the rules (which fields reach the browser,
who launched a job, filtering, sorting, paging, where a UTF-8 read may end)
are unit tested on their own (tests/unit/test_ui_records.py).
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_ssh_async.job import JobFacts, JobStatus

# The state a folder is shown in when its files cannot be read: not a job
# state (job.py never guesses one), the reason says which file and why.
DAMAGED = "damaged"
# job.json fields that may reach the browser. Everything else stays on the
# server: job.json holds no secret today, but a field added later must be
# shown on purpose, not by default.
SHOWN_FACTS = ("host", "user", "cwd", "timeout", "grace", "pid", "pgid", "supervisor_pid", "boot_id")
PAGE_MAX = 500
STATE_ORDER = ("running", "starting", "failed", "killed", "timed_out", "cancelled", "lost", DAMAGED, "succeeded")


@dataclass(frozen=True)
class Origin:
    """The task instance that launched a job (job.json's ``origin``:
    ``dag_id/task_id/run_id/map_index``, operators.py)."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {"dag_id": self.dag_id, "task_id": self.task_id, "run_id": self.run_id, "map_index": self.map_index}

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.dag_id, self.run_id, self.task_id, self.map_index)


def parse_origin(value: object) -> Origin | None:
    """The launching task instance, or None for a job no DAG launched (CLI, Ansible).

    dag ids and task ids hold no ``/``; a run id may, so it is what lies
    between the task id and the last ``/``.
    """
    if not isinstance(value, str) or value.count("/") < 3:
        return None
    dag_id, task_id, rest = value.split("/", 2)
    run_id, _, map_index = rest.rpartition("/")
    try:
        index = int(map_index)
    except ValueError:
        return None
    if not dag_id or not task_id or not run_id:
        return None
    return Origin(dag_id, task_id, run_id, index)


def signal_name(number: int | None) -> str | None:
    if number is None:
        return None
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclass(frozen=True)
class JobRow:
    """One job as the view lists it."""

    job_id: str
    job_dir: str
    state: str
    reason: str
    origin: Origin | None
    exit_code: int | None = None
    signal: int | None = None
    pid: int | None = None
    start_time: int | None = None
    end_time: int | None = None
    sizes: tuple[tuple[str, int], ...] = ()
    facts: tuple[tuple[str, Any], ...] = ()

    @property
    def finished(self) -> bool:
        return self.state not in ("running", "starting")

    @property
    def dag_id(self) -> str | None:
        return self.origin.dag_id if self.origin else None

    def to_dict(self, now: int, progress: str = "", try_number: int | None = None) -> dict[str, Any]:
        end = self.end_time if self.end_time is not None else now
        origin = {**self.origin.to_dict(), "try_number": try_number} if self.origin else None
        return {
            "job_id": self.job_id,
            "state": self.state,
            "reason": self.reason,
            "origin": origin,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "signal_name": signal_name(self.signal),
            "pid": self.pid,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration": max(0, end - self.start_time) if self.start_time is not None else None,
            "sizes": dict(self.sizes),
            "progress": progress,
            "facts": dict(self.facts),
        }


def job_row(job_id: str, job_dir: str, answer: tuple[JobStatus, JobFacts] | Exception) -> JobRow:
    """A listed folder's row: its status, or ``damaged`` with the reason."""
    if isinstance(answer, Exception):
        return JobRow(job_id, job_dir, DAMAGED, str(answer), None)
    status, facts = answer
    info = facts.job_json or {}
    shown = tuple((k, info[k]) for k in SHOWN_FACTS if k in info)
    return JobRow(
        job_id=job_id,
        job_dir=str(info.get("job_dir") or facts.path or job_dir),
        state=status.state.value,
        reason=status.reason,
        origin=parse_origin(info.get("origin")),
        exit_code=status.exit_code,
        signal=status.signal,
        pid=status.pid,
        start_time=status.start_time,
        end_time=status.end_time,
        sizes=tuple(sorted(status.sizes.items())),
        facts=shown,
    )


def newest_first(rows: Iterable[JobRow]) -> list[JobRow]:
    """By start, newest first; folders without a start (starting, damaged) on top, then by id."""
    return sorted(rows, key=lambda r: (r.start_time is not None, -(r.start_time or 0), r.job_id))


def select(
    rows: Sequence[JobRow],
    *,
    states: Sequence[str] = (),
    dag_id: str = "",
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[JobRow], int]:
    """The page of ROWS matching the filters, newest first, and how many matched."""
    wanted = set(states)
    matched = [r for r in rows if (not wanted or r.state in wanted) and (not dag_id or r.dag_id == dag_id)]
    ordered = newest_first(matched)
    offset = max(0, offset)
    limit = max(1, min(limit, PAGE_MAX))
    return ordered[offset : offset + limit], len(ordered)


def state_counts(rows: Iterable[JobRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    return {s: counts[s] for s in sorted(counts, key=lambda s: (STATE_ORDER + (s,)).index(s))}


def whole_utf8(data: bytes) -> int:
    """How many bytes of DATA end on a character boundary.

    A read of a growing file may stop inside a UTF-8 character; the browser
    gets the bytes up to the last whole character and asks from there next
    time, so no character is split or garbled. A sequence that cannot
    become whole (invalid bytes) is not held back.
    """
    n = len(data)
    for back in range(1, min(4, n) + 1):
        b = data[n - back]
        if b < 0x80:  # ASCII: everything up to here is whole
            return n
        if b >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4 if b < 0xF8 else 1
            return n if back >= need else n - back
    return n


def lead_cut(data: bytes, at_tail: bool = False) -> int:
    """How many leading bytes of a chunk read from inside a file to drop.

    Bytes continuing a character begun before the chunk are dropped (they
    cannot be shown); a tail opened at the end of a large output also starts
    at its first whole line, when there is one.
    """
    if at_tail:
        nl = data.find(b"\n")
        if 0 <= nl < len(data) - 1:
            return nl + 1
    cut = 0
    while cut < min(3, len(data)) and data[cut] & 0xC0 == 0x80:
        cut += 1
    return cut


def last_line(data: bytes) -> str:
    """The last non-empty line of a progress tail, as text (``\\r`` ends a line too)."""
    text = data.decode("utf-8", "replace").replace("\r", "\n")
    lines = [line for line in text.split("\n") if line.strip()]
    return lines[-1][-500:] if lines else ""
