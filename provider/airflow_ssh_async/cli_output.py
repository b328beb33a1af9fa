"""How `airflow-ssh-async` prints: tables, spans, JSON, one-line errors.

No SSH here: the commands (cli_commands.py) fetch, these functions print
what they fetched. The JSON of a job is :func:`job.job_record`, the shape
of the result dict in XCom; the text is for a person and reads JobStatus.
"""

from __future__ import annotations

import codecs
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_ssh_async.job import JobListing, JobState, JobStatus, ListedJob, low_space_notice, signal_name

PROG = "airflow-ssh-async"


def fmt_span(seconds: float | None) -> str:
    """A short human span: 45s, 12m, 3h05m, 2d04h."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_time(epoch: int | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def fmt_exit(status: JobStatus) -> str:
    """What the EXIT column shows: the code, or the signal that ended the job."""
    if status.exit_code is not None:
        return str(status.exit_code)
    if status.signal is not None:
        return signal_name(status.signal)
    return "-"


def since(epoch: int | None, now: float) -> float | None:
    """Seconds from EPOCH to NOW; None when there is no EPOCH."""
    return now - epoch if epoch is not None else None


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def print_json_line(value: Any) -> None:
    """One JSON value on one line (a stream of them: `logs --json`)."""
    print(json.dumps(value), flush=True)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def error_line(message: str) -> None:
    """Every failure is one line on stderr, never a traceback."""
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)


def note(message: str) -> None:
    """A remark for the person at the shell, on stderr (stdout stays the data)."""
    print(f"{PROG}: {message}", file=sys.stderr)


def print_jobs(jobs: Sequence[ListedJob], now: float) -> None:
    """The `jobs` table: a row a job, a damaged one with its error as the reason."""
    rows = []
    for e in jobs:
        status = e.status
        if status is None:
            rows.append([e.name, "error", "-", "-", "-", "-", e.error])
            continue
        rows.append(
            [
                e.name,
                status.state.value,
                fmt_span(since(status.start_time, now)),
                fmt_span(since(status.end_time, now)),
                str(status.pid) if status.pid is not None else "-",
                fmt_exit(status),
                status.reason,
            ]
        )
    print_table(["JOB", "STATE", "AGE", "ENDED", "PID", "EXIT", "REASON"], rows)


def print_status(job_id: str, label: str, job_dir: str, status: JobStatus, now: float) -> None:
    """`status` as text: one `key: value` line each."""
    lines = [("job", job_id), ("host", label), ("dir", job_dir), ("state", f"{status.state.value} ({status.reason})")]
    if status.state is not JobState.MISSING:
        start, end = status.start_time, status.end_time
        # A running job's duration is so far, to now.
        duration = ((end if end is not None else now) - start) if start is not None else None
        sizes = status.sizes
        lines += [
            ("pid", str(status.pid) if status.pid is not None else "-"),
            ("exit", fmt_exit(status)),
            ("started", f"{fmt_time(start)} ({fmt_span(since(start, now))} ago)"),
            ("ended", f"{fmt_time(end)} ({fmt_span(since(end, now))} ago)" if end is not None else "-"),
            ("duration", fmt_span(duration)),
            (
                "output",
                f"stdout {sizes.get('stdout') or 0} B, stderr {sizes.get('stderr') or 0} B, "
                f"progress {sizes.get('progress') or 0} B",
            ),
        ]
        if status.low_space and status.free_kb is not None:
            lines.append(("space", f"low: {low_space_notice(status.free_kb)}"))
    for key, value in lines:
        print(f"{key + ':':<10}{value}")


KILL_OUTCOMES = {
    "finished": "had already finished; nothing to kill",
    "gone": "is lost: its process is gone or no longer ours; nothing to kill",
    "pending": "had not finished launching: the cancel is recorded and its supervisor stops it as it starts",
}


def kill_text(outcome: str, grace: int) -> str:
    """What `kill` says a cancel's OUTCOME (signal.sh) did."""
    if outcome == "cancelled":
        return f"cancel requested (SIGTERM sent to its process group, SIGKILL after {grace} s if it still runs)"
    return KILL_OUTCOMES.get(outcome, outcome)


COPY_STATES = {
    "unused": "would remove",
    "removed": "removed",
    "in_use": "kept, a running job uses it",
    "unknown": "kept, this host has no /proc to tell whether a job uses it",
    "failed": "could not remove",
}


def gc_age(status: JobStatus, now: int) -> int | None:
    """Age that gc measures: from the end, or from the start for a lost job."""
    ref = status.end_time if status.end_time is not None else status.start_time
    return now - ref if ref is not None else None


@dataclass
class Sweep:
    """What one `gc` found and did: candidates, the names removed, the ones
    skipped (and why) and what became of the shared supervisor copies."""

    candidates: list[ListedJob]
    removed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    copies: dict[str, str] = field(default_factory=dict)


def print_gc(sweep: Sweep, listing: JobListing, *, dry_run: bool, older_than: int, label: str) -> None:
    """What `gc` removed (or would), what it skipped and why, then a count."""
    verb = "would remove" if dry_run else "removed"
    for e in sweep.candidates:
        if e.status is not None and (dry_run or e.name in sweep.removed):
            print(f"{verb} {e.name} ({e.status.state.value}, ended {fmt_span(gc_age(e.status, listing.now))} ago)")
    for name, why in sweep.skipped.items():
        print(f"skipped {name}: {why}")
    for copy_id, state in sweep.copies.items():
        folder = f"{listing.async_dir}/.supervisor/{copy_id}"
        print(f"{COPY_STATES.get(state, state)}: {folder} (the supervisor of another version)")
    count = len(sweep.candidates) if dry_run else len(sweep.removed)
    print(f"{verb} {count} job folder(s) older than {fmt_span(older_than)} in {listing.async_dir} on {label}")


class LogSink:
    """Where log bytes go: raw to stdout (byte exact), or JSON lines (UTF-8 safe across reads)."""

    def __init__(self, stream: str, as_json: bool) -> None:
        self.stream = stream
        self.as_json = as_json
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, data: bytes, offset: int) -> None:
        if self.as_json:
            self._line(self.decoder.decode(data), offset)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    def close(self, offset: int) -> None:
        if self.as_json:
            self._line(self.decoder.decode(b"", final=True), offset)

    def _line(self, text: str, offset: int) -> None:
        if text:
            print_json_line({"stream": self.stream, "offset": offset, "data": text})
