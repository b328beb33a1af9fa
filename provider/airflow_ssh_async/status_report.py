"""What status.sh reports about jobs, read into facts: no state is decided here (that is states.py)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from airflow_ssh_async.frames import PROTOCOL, ProtocolError, parse_frames


@dataclass(frozen=True)
class JobFacts:
    """What status.sh reported about one job, unclassified."""

    job: str
    exists: bool
    path: str = ""  # the folder with ~ resolved on the host
    job_json: dict[str, Any] | None = None
    result_json: dict[str, Any] | None = None
    job_alive: bool | None = None
    pid_start: str | None = None
    supervisor_alive: bool | None = None
    supervisor_start: str | None = None
    cancel_requested: bool = False
    launch_over: bool = False  # no job.json, and the launch provably ended (lib.sh launch_over)
    launch_age: int | None = None  # seconds since the folder last changed, when it has no job.json
    sizes: dict[str, int] = field(default_factory=dict)
    cuts: dict[str, str] = field(default_factory=dict)  # stream -> its cap's "CAUSE AT DROPPED" (supervise.sh)
    free_kb: int | None = None  # free space of the filesystem the job folder is on (status.sh df)
    damaged: str = ""  # why a job file could not be read; classify raises it


@dataclass(frozen=True)
class StatusReport:
    now: int
    boot_id: str
    jobs: dict[str, JobFacts]
    # Why a waiting call returned (status.sh --wait): "ended", "grew" or
    # "time"; empty for a call that did not wait.
    woke: str = ""


def _load_json(name: str, job: str, raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ProtocolError(f"{job}/{name} is not valid JSON ({exc}): the file is damaged") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{job}/{name} is not a JSON object: the file is damaged")
    return value


def parse_status(data: bytes) -> StatusReport:
    """Read status.sh output for one or many jobs (its parts left out: see
    :class:`StatusParts`)."""
    records: list[tuple[str, bytes]] = []
    in_part = False
    for name, value in parse_frames(data):
        if name in ("part_begin", "part_end"):
            in_part = name == "part_begin"
        elif not in_part:
            records.append((name, value))
    return status_report(records)


class StatusParts:
    """The parts of a status.sh --wait-parts reply, as its bytes arrive.

    Each part (``part_begin`` ... ``part_end``) is the report of jobs that
    ended while the call waits on for the others; :meth:`feed` returns the
    parts its bytes complete. A part that cannot be read is left to the
    whole reply's parse, which then fails the call as any damaged reply.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._part: list[tuple[str, bytes]] | None = None

    def feed(self, data: bytes) -> list[StatusReport]:
        self._buf += data
        done: list[StatusReport] = []
        pos = 0
        while True:
            nl = self._buf.find(b"\n", pos)
            if nl < 0:
                break
            header = bytes(self._buf[pos:nl]).split(b" ")
            if len(header) != 2 or not header[1].isdigit():
                break
            end = nl + 1 + int(header[1])
            if end + 1 > len(self._buf):
                break
            name, value = header[0].decode("ascii", "replace"), bytes(self._buf[nl + 1 : end])
            pos = end + 1
            if name == "part_begin":
                self._part = []
            elif name == "part_end" and self._part is not None:
                with contextlib.suppress(ProtocolError, KeyError, ValueError):
                    done.append(status_report(self._part))
                self._part = None
            elif self._part is not None:
                self._part.append((name, value))
        del self._buf[:pos]
        return done


def status_report(records: list[tuple[str, bytes]]) -> StatusReport:
    """The report that status.sh RECORDS (framed fields) make."""
    head: dict[str, bytes] = {}
    jobs: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for name, value in records:
        if name == "job":
            current = {"job": value.decode(), "sizes": {}}
            jobs[current["job"]] = current
        elif current is None:
            head[name] = value
        elif name.endswith("_size"):
            current["sizes"][name[: -len("_size")]] = int(value)
        elif name in ("stdout_cut", "stderr_cut"):
            current.setdefault("cuts", {})[name[: -len("_cut")]] = value.decode()
        elif name in ("job.json", "result.json"):
            # A damaged file is this job's error, not the whole batch's.
            try:
                current[name.replace(".", "_")] = _load_json(name, current["job"], value)
            except ProtocolError as exc:
                current["damaged"] = str(exc)
        elif name in ("exists", "job_alive", "supervisor_alive", "cancel_requested", "launch_over"):
            current[name] = value == b"1"
        elif name in ("pid_start", "supervisor_start", "path"):
            current[name] = value.decode()
        elif name in ("launch_age", "free_kb"):
            current[name] = int(value)
        else:
            raise ProtocolError(f"unknown status field {name!r} for {current['job']}")
    if head.get("protocol") != str(PROTOCOL).encode():
        raise ProtocolError(f"status protocol {head.get('protocol')!r}, expected {PROTOCOL}")
    return StatusReport(
        now=int(head["now"]),
        boot_id=head.get("boot_id", b"").decode().strip(),
        jobs={k: JobFacts(**v) for k, v in jobs.items()},
        woke=head.get("woke", b"").decode(),
    )
