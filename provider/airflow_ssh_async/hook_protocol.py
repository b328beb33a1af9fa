"""What the hook's remote calls take and give, and how each script's reply is read.

Pure (no SSH): the arguments each script is called with and the records it
answers in become these shapes here, so hook_calls.py only sequences calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from airflow_ssh_async.frames import ProtocolError, parse_frames
from airflow_ssh_async.job_ids import ARCHIVE_DIR

STREAMS = ("stdout", "stderr", "progress")
DEFAULT_GRACE = 10
# What a cancel may take beyond its grace: connecting, and signal.sh's own
# work. signal.sh itself waits up to grace (when the supervisor is gone)
# before its SIGKILL, so a bound on the whole cancel must follow grace.
CANCEL_MARGIN = 25.0
DEFAULT_CHUNK = 4 * 1024 * 1024
# One output call's reply holds at most this much, shared fairly between its
# requests (never less than MIN_SHARE each: a batch of more requests than
# REPLY_BUDGET // MIN_SHARE is read in several calls). A backlog is read
# over several calls.
REPLY_BUDGET = 8 * 1024 * 1024
MIN_SHARE = 16 * 1024


def cancel_bound(grace: float) -> float:
    """How long to wait for a cancel with this grace before giving up on it."""
    return max(0.0, float(grace)) + CANCEL_MARGIN


@dataclass(frozen=True)
class Launched:
    """What a successful launch tells: where the job lives and its pids.

    The supervisor reports before it writes job.json (launch latency), so
    this is what a caller may rely on at once; job.json follows shortly.
    """

    job_id: str
    job_dir: str
    pid: int
    start_time: int
    supervisor_pid: int


def launch_args(
    async_dir: str, job_id: str, timeout: int, grace: int, origin: str, execution_left: int, output_limit: int
) -> list[str]:
    """launch.sh's arguments; the optional ones only when set (older hosts' scripts take five)."""
    args = [async_dir, job_id, str(int(timeout or 0)), str(int(grace)), origin]
    if execution_left or output_limit:
        args.append(str(int(execution_left)))
    if output_limit:
        args.append(str(output_limit))
    return args


def read_launched(job_id: str, raw: bytes) -> Launched | None:
    """launch.sh's reply; None when the supervisor never reported (it did not start)."""
    out = dict(parse_frames(raw))
    if "pid" not in out:
        return None
    return Launched(
        job_id=job_id,
        job_dir=out["job_dir"].decode(),
        pid=int(out["pid"]),
        start_time=int(out["start_time"]),
        supervisor_pid=int(out["supervisor_pid"]),
    )


class ReadRequest(NamedTuple):
    """Bytes of one stream of one job from OFFSET, at most MAX_BYTES.

    With a LOG_KEY (the task log the bytes go to) the host records how far
    that log got (LOGGED: the lines the watcher has handed to the log, never
    what it is being sent) and what was read, so a watcher that starts again
    continues where it stopped (see output.sh).
    """

    job_dir: str
    stream: str
    offset: int
    max_bytes: int = DEFAULT_CHUNK
    log_key: str = ""
    logged: int = 0


@dataclass(frozen=True)
class Chunk:
    """Bytes of one stream from an offset, and the stream's size when read.

    ``shrunk``: the file is shorter than the offset (the job rewrote it);
    ``size`` is then its size now.
    """

    data: bytes
    size: int
    missing: bool = False
    shrunk: bool = False


@dataclass(frozen=True)
class StatusWait:
    """How long a status call may wait on the host (status.sh --wait).

    It returns when a watched job ends, after ``max_seconds``, or, once
    ``grow_after`` seconds have passed (None: never), when the jobs'
    streams together are no longer ``known_total`` bytes (None: their size
    when the wait began).
    """

    max_seconds: int
    grow_after: int | None = None
    known_total: int | None = None
    # A job's end does not end the call: the ended jobs' report comes as a
    # part while the wait goes on for the others (status.sh --wait-parts).
    parts: bool = False

    def args(self) -> list[str]:
        grow = "-1" if self.grow_after is None else str(max(0, int(self.grow_after)))
        known = "-" if self.known_total is None else str(int(self.known_total))
        return ["--wait-parts" if self.parts else "--wait", str(max(0, int(self.max_seconds))), grow, known]


def share_budget(requests: Sequence[ReadRequest], budget: int = REPLY_BUDGET) -> list[list[ReadRequest]]:
    """REQUESTS in calls whose replies stay within BUDGET bytes, each request
    capped at an equal share (at least MIN_SHARE) of its call's budget."""
    per_call = max(1, budget // MIN_SHARE)
    calls = [list(requests[i : i + per_call]) for i in range(0, len(requests), per_call)]
    return [[r._replace(max_bytes=min(r.max_bytes, budget // len(call))) for r in call] for call in calls]


def read_requests(
    requests: Sequence[ReadRequest | tuple[str, str, int]], max_bytes: int = DEFAULT_CHUNK
) -> list[ReadRequest]:
    """REQUESTS as ReadRequests (a tuple reads at most MAX_BYTES); an unknown stream is refused."""
    reqs = [r if isinstance(r, ReadRequest) else ReadRequest(*r, max_bytes=max_bytes) for r in requests]
    for r in reqs:
        if r.stream not in STREAMS:
            raise ValueError(f"stream must be one of {STREAMS}, not {r.stream!r}")
    return reqs


def output_args(reqs: Sequence[ReadRequest], offsets: Sequence[str], max_bytes: str = "") -> list[str]:
    """output.sh's arguments: six a request ("?" as the offset asks only how far
    its log got; MAX_BYTES "-" for every request records without reading)."""
    args: list[str] = []
    for r, offset in zip(reqs, offsets, strict=True):
        if r.log_key and not r.log_key.isalnum():
            raise ValueError(f"a log key is letters and digits, not {r.log_key!r}")
        limit = max_bytes or str(int(r.max_bytes))
        args += [r.job_dir, r.stream, offset, limit, r.log_key or "-", str(int(r.logged))]
    return args


def read_chunks(records: Iterable[tuple[str, bytes]], asked: int) -> list[Chunk]:
    """output.sh's replies to ASKED reads: one chunk (or missing, or shrunk) a request.

    :raises ProtocolError: fewer or more answers than requests.
    """
    chunks: list[Chunk] = []
    size = 0
    for name, value in records:
        if name == "missing":
            chunks.append(Chunk(b"", 0, missing=True))
        elif name == "shrunk":
            chunks.append(Chunk(b"", int(value), shrunk=True))
        elif name == "size":
            size = int(value)
        elif name == "chunk":
            chunks.append(Chunk(value, size))
    if len(chunks) != asked:
        raise ProtocolError(f"output answered {len(chunks)} of {asked} requests")
    return chunks


def read_delivered(records: Iterable[tuple[str, bytes]]) -> list[tuple[int, int] | None]:
    """output.sh's reply to "?" requests: (whole lines delivered, bytes read), None where unrecorded."""
    out: list[tuple[int, int] | None] = []
    for name, value in records:
        logged, _, read = value.decode().partition(" ")
        ok = name == "delivered" and logged.isdigit() and read.isdigit()
        out.append((int(logged), int(read)) if ok else None)
    return out


def folder_id(job_dir: str) -> str:
    """The job id a folder is named by; ASYNC_DIR/.archive/ID/N is an earlier attempt of ID."""
    parts = job_dir.rstrip("/").split("/")
    if len(parts) >= 3 and parts[-3] == ARCHIVE_DIR:
        return f"{parts[-2]} (archived attempt {parts[-1]})"
    return parts[-1]


def folder_ids(job_dirs: Iterable[str]) -> str:
    """The job ids that errors about these folders name."""
    return ", ".join(dict.fromkeys(folder_id(d) for d in job_dirs))
