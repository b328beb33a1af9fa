"""Pure job logic: ids, paths, states, the remote reports and how to read them.

Nothing here does I/O, so every rule that decides a job's state is tested
without SSH (tests/unit/test_job.py). The remote scripts only report facts;
:func:`classify` turns facts into a state, in this one place.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import shlex
import signal
from dataclasses import asdict, dataclass, field, replace
from typing import Any

PROTOCOL = 1
DEFAULT_ASYNC_DIR = "~/.airflow_async"
ARCHIVE_DIR = ".archive"  # ASYNC_DIR/.archive/ID/N: attempt N of ID, moved aside (archive.sh); no id starts with "."
# A job folder without job.json is a launch in progress until it has been left
# untouched this long with no launching process alive (lib.sh LAUNCH_PATIENCE).
LAUNCH_PATIENCE = 60
# output_limit's default: the bytes each of stdout and stderr may store on the
# host (1 GiB; 0: no cap). Past it the job runs on and the rest is counted,
# not stored (supervise.sh cap).
DEFAULT_OUTPUT_LIMIT = 1024**3
# Less free space than this in a job's async_dir is worth a warning (once per
# watch): a job may write up to output_limit on each stream.
LOW_SPACE_KB = 1024 * 1024
JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class JobState(str, enum.Enum):
    """What a job is doing, as docs/protocol.md "States" names it."""

    STARTING = "starting"  # the job directory exists but job.json is not written yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"
    MISSING = "missing"

    @property
    def finished(self) -> bool:
        return self not in (JobState.STARTING, JobState.RUNNING)

    @property
    def has_result(self) -> bool:
        """True for states that a result.json stands behind."""
        return self in FINISHED_WITH_RESULT


FINISHED_WITH_RESULT = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.KILLED, JobState.TIMED_OUT, JobState.CANCELLED}
)


class JobIdError(ValueError):
    """A job id that could name a path outside the job directory, or nothing."""


class ProtocolError(ValueError):
    """A remote report that cannot be read: half-written, truncated, unknown."""


def validate_job_id(job_id: str) -> str:
    """Refuse ids that are not plain names before anything reaches a host."""
    if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
        raise JobIdError(
            f"invalid job id {job_id!r}: a job id is 1 to 128 characters of letters, digits, "
            "'.', '_' and '-', starting with a letter or digit. Pass job_id= with such a name."
        )
    return job_id


def derive_job_id(dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> str:
    """A stable id for one task instance: every try of it finds the same job.

    Readable parts (cut to fit) plus a hash of the full key, so two runs whose
    names only differ in characters we drop still get different ids.
    """
    key = f"{dag_id}\0{task_id}\0{run_id}\0{map_index}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]

    def clean(part: str, limit: int) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip("._-")[:limit]

    parts = [clean(dag_id, 40), clean(task_id, 40), clean(run_id, 24)]
    if map_index >= 0:
        parts.append(str(map_index))
    readable = "-".join(p for p in parts if p)
    return validate_job_id(f"{readable}-{digest}" if readable else digest)


def log_key(dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> str:
    """Names one task try's log on the host (letters and digits): where a
    watcher of that try records how far the log got (see output.sh)."""
    key = f"{dag_id}\0{run_id}\0{task_id}\0{map_index}\0{try_number}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def job_dir_in(async_dir: str, job_id: str) -> str:
    """The folder of job JOB_ID under ASYNC_DIR, as given (``~`` is resolved on the host)."""
    return f"{async_dir.rstrip('/')}/{validate_job_id(job_id)}"


@dataclass(frozen=True)
class JobRef:
    """Where a job lives: what XCom carries and what a sensor is given."""

    ssh_conn_id: str
    job_id: str
    job_dir: str
    host: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


# --- framed records ------------------------------------------------------------


def parse_frames(data: bytes) -> list[tuple[str, bytes]]:
    """Read `NAME LEN\\nVALUE\\n` records, byte exact; raise on anything else."""
    records: list[tuple[str, bytes]] = []
    pos = 0
    end = len(data)
    while pos < end:
        nl = data.find(b"\n", pos)
        if nl < 0:
            raise ProtocolError(f"truncated record header at byte {pos}")
        header = data[pos:nl].split(b" ")
        if len(header) != 2 or not header[1].isdigit():
            raise ProtocolError(f"bad record header {data[pos:nl][:80]!r} at byte {pos}")
        name, size = header[0].decode("ascii", "replace"), int(header[1])
        value_end = nl + 1 + size
        if value_end + 1 > end or data[value_end : value_end + 1] != b"\n":
            raise ProtocolError(f"record {name!r} of {size} bytes is truncated at byte {pos}")
        records.append((name, data[nl + 1 : value_end]))
        pos = value_end + 1
    return records


# --- the launch payload ----------------------------------------------------------


ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def validate_env_name(name: object) -> str:
    """Refuse a variable name that `export` would not take (or would run as code)."""
    if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid environment variable name {name!r}: use letters, digits and '_', not starting with a digit"
        )
    return name


def env_exports(environment: dict[str, str]) -> bytes:
    """The env file: one `export NAME='value'` a variable, one quoting layer."""
    lines = [f"export {validate_env_name(name)}={shlex.quote(str(value))}\n" for name, value in environment.items()]
    return "".join(lines).encode()


def supervisor_id(supervisor: bytes) -> str:
    """The name of a supervisor's shared copy: ASYNC_DIR/.supervisor/ID/supervise.sh."""
    return hashlib.sha256(supervisor).hexdigest()[:16]


def launch_payload(command: str, environment: dict[str, str], cwd: str, supervisor: bytes) -> bytes:
    """What the launcher reads on stdin: a header of lengths, then the parts.

    The header ends with the supervisor's content hash: the host keeps one
    copy of each supervisor per async_dir under that name, so a launch
    writes it only the first time (every process there is launch latency).
    """
    cwd_b = cwd.encode()
    env_b = env_exports(environment)
    cmd_b = command.encode()  # verbatim: the command file is exactly what the user wrote
    sup_id = supervisor_id(supervisor)
    lengths = f"{len(cwd_b)} {len(env_b)} {len(supervisor)} {len(cmd_b)}"
    header = f"airflow-ssh-async-payload {PROTOCOL} {lengths} {sup_id}\n"
    return header.encode() + cwd_b + env_b + supervisor + cmd_b


# --- status ---------------------------------------------------------------------


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
    """Read status.sh output for one or many jobs."""
    records = parse_frames(data)
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


# --- listing ---------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """What list.sh reported: the host's clock, the resolved async_dir and the
    names of its job folders and archived attempts (``.archive/ID/N``)."""

    now: int
    async_dir: str  # absolute, as the host resolved it (as given when it does not exist)
    exists: bool
    names: list[str]
    attempts: list[str]

    def folders(self, *, attempts: bool = False) -> dict[str, str]:
        """Folder name -> its absolute path; with ATTEMPTS the archived attempts too."""
        names = self.names + self.attempts if attempts else self.names
        return {name: f"{self.async_dir}/{name}" for name in names}


def parse_listing(data: bytes, async_dir: str) -> Listing:
    """Read list.sh output. Names that are no job id are not ours: never listed.

    :raises ProtocolError: the reply is damaged or of another protocol.
    """
    now, exists = 0, False
    names: list[str] = []
    attempts: list[str] = []
    for name, value in parse_frames(data):
        if name == "now":
            now = int(value)
        elif name == "async_dir":
            async_dir = value.decode("utf-8", "replace")
        elif name == "exists":
            exists = value == b"1"
        elif name == "job":
            job = value.decode("utf-8", "replace")
            if JOB_ID_RE.fullmatch(job):  # anything else is not ours to show or delete
                names.append(job)
        elif name == "attempt":
            job, _, n = value.decode("utf-8", "replace").partition("/")
            if JOB_ID_RE.fullmatch(job) and n.isdigit():
                attempts.append(f"{ARCHIVE_DIR}/{job}/{n}")
        elif name == "protocol" and value != str(PROTOCOL).encode():
            raise ProtocolError(f"list protocol {value!r}, expected {PROTOCOL}")
    return Listing(now, async_dir, exists, sorted(names), sorted(attempts))


def parse_supervisor_copies(data: bytes) -> dict[str, str]:
    """Read supervisors.sh output: copy id -> what became of it."""
    copies: dict[str, str] = {}
    current = ""
    for name, value in parse_frames(data):
        if name == "copy":
            current = value.decode("ascii", "replace")
        elif name == "copy_state" and current:
            copies[current] = value.decode("ascii", "replace")
        elif name == "protocol" and value != str(PROTOCOL).encode():
            raise ProtocolError(f"supervisors protocol {value!r}, expected {PROTOCOL}")
    return copies


@dataclass(frozen=True)
class OutputCut:
    """A stream whose stored output stopped short of what the job wrote.

    ``cause`` is ``output_limit`` (the job went on; the rest was discarded
    and counted) or ``ENOSPC`` (the disk was full). ``at`` is how many bytes
    were stored; ``dropped`` how many were discarded after them (None when
    unknown: a disk full without a cap, or a stream still being discarded).
    """

    stream: str
    cause: str
    at: int
    dropped: int | None = None

    def describe(self) -> str:
        if self.cause == "output_limit":
            what = f"{self.stream} truncated at {self.at} bytes (output_limit)"
        else:
            what = f"{self.stream} cut short at {self.at} bytes: the disk was full ({self.cause})"
        if self.dropped is not None:
            what += f", {self.dropped} bytes dropped"
        return what


def cut_notice(cut: OutputCut) -> str:
    """What the task log says, once, when a stream stops being stored."""
    if cut.cause == "output_limit":
        return (
            f"{cut.stream} reached output_limit ({cut.at} bytes): the job runs on, its further {cut.stream} "
            "is counted, not stored (the result says how much was dropped)"
        )
    return (
        f"{cut.stream} was cut short at {cut.at} bytes: the disk of async_dir is full ({cut.cause}); the job "
        f"runs on, its further {cut.stream} is counted, not stored"
    )


def running_cuts(facts: JobFacts) -> tuple[OutputCut, ...]:
    """The cuts of a running job, from its caps' records (a bad record is skipped: it is being rewritten)."""
    cuts = []
    for stream, record in sorted(facts.cuts.items()):
        parts = record.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            cuts.append(OutputCut(stream, parts[0], int(parts[1]), int(parts[2])))
    return tuple(cuts)


def parse_output_cut(job: str, value: object) -> tuple[OutputCut, ...]:
    """result.json's "output_cut" list (absent: nothing was cut)."""
    if value is None:
        return ()
    bad = ProtocolError(f"{job}/result.json has a malformed output_cut {value!r}: the file is damaged")
    if not isinstance(value, list):
        raise bad
    cuts = []
    for item in value:
        if not isinstance(item, dict):
            raise bad
        stream, cause, at, dropped = item.get("stream"), item.get("cause"), item.get("at"), item.get("dropped")
        if not (isinstance(stream, str) and isinstance(cause, str) and isinstance(at, int)):
            raise bad
        if dropped is not None and not isinstance(dropped, int):
            raise bad
        cuts.append(OutputCut(stream, cause, at, dropped))
    return tuple(cuts)


@dataclass(frozen=True)
class JobStatus:
    """A job's state with the reason for it: what everything above the hook uses."""

    state: JobState
    reason: str
    exit_code: int | None = None
    signal: int | None = None
    pid: int | None = None
    start_time: int | None = None
    end_time: int | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    limit: str | None = None  # timed_out: which limit ended it ("job_timeout" or "execution_timeout")
    output_cut: tuple[OutputCut, ...] = ()  # streams stored short: output_limit, or a full disk
    # Processes of the job's group that outlived its SIGKILL (result.json's
    # "survivors": pid, uid, user), e.g. a child of the job's own `sudo -u`.
    survivors: tuple[dict[str, Any], ...] = ()
    free_kb: int | None = None  # free KiB in the job's async_dir, when the host told

    @property
    def low_space(self) -> bool:
        """Less than LOW_SPACE_KB free in async_dir: output or results may soon not fit."""
        return self.free_kb is not None and self.free_kb < LOW_SPACE_KB


def survivors_of(result: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """result.json's survivors, each {"pid", "uid", "user"}; damaged entries are skipped."""
    raw = result.get("survivors")
    if not isinstance(raw, list):
        return ()
    return tuple(
        {"pid": s.get("pid"), "uid": s.get("uid"), "user": str(s.get("user", ""))}
        for s in raw
        if isinstance(s, dict) and isinstance(s.get("pid"), int)
    )


def with_survivors(status: JobStatus, result: dict[str, Any]) -> JobStatus:
    """STATUS with what its end left running that the supervisor could not end, said in its reason too."""
    survivors = survivors_of(result)
    if survivors:
        names = ", ".join(f"pid {s['pid']} (user {s['user'] or s.get('uid')})" for s in survivors)
        left = (
            f"NOT everything ended: {len(survivors)} process(es) of the job outlived SIGKILL and still run: "
            f"{names} (a process of another user, started by the job's own sudo, never gets the job's signals)"
        )
    elif result.get("group_left") is True:
        left = "NOT everything ended: processes of the job's group outlived SIGKILL"
    else:
        return status
    return replace(status, survivors=survivors, reason=f"{status.reason}; {left}")


def low_space_notice(free_kb: int) -> str:
    """The warning a watcher logs once (and the CLI shows) when async_dir runs low."""
    return (
        f"only {free_kb // 1024} MiB free in its async_dir (under {LOW_SPACE_KB // 1024} MiB): the job's output "
        "may soon be cut short by a full disk; free space on that filesystem or lower output_limit"
    )


def with_cuts(status: JobStatus, cuts: tuple[OutputCut, ...]) -> JobStatus:
    """STATUS with the streams that were cut short, said in its reason too."""
    if not cuts:
        return status
    return replace(status, output_cut=cuts, reason="; ".join([status.reason, *(c.describe() for c in cuts)]))


def timed_out_reason(limit: str, job_timeout: object) -> str:
    """Which limit ended the job, in words (supervisors before the deadline file knew only job_timeout)."""
    if limit == "execution_timeout":
        return "time limit of the task's execution_timeout reached (the try's time ran out)"
    return f"time limit of {job_timeout} s reached (job_timeout)"


def _ended(facts: JobFacts, info: dict[str, Any], result: dict[str, Any], base: JobStatus) -> JobStatus:
    """Rules 4-8: what result.json says."""
    reason = result.get("reason")
    code, sig = result.get("exit_code"), result.get("signal")
    ended = replace(base, exit_code=code, signal=sig, end_time=result.get("end_time"))
    if reason == "cancelled":
        return replace(ended, state=JobState.CANCELLED, reason="cancelled on request")
    if reason == "timed_out":
        limit = result.get("limit") or "job_timeout"
        why = timed_out_reason(limit, info.get("timeout"))
        return replace(ended, state=JobState.TIMED_OUT, reason=why, limit=limit)
    if reason == "signal":
        return replace(ended, state=JobState.KILLED, reason=f"killed by signal {sig}", exit_code=None)
    if reason == "exited" and isinstance(code, int):
        # The exit status wins over a cancel: exit 0 after one is a job that did its work.
        state = JobState.SUCCEEDED if code == 0 else JobState.FAILED
        why = f"exited with code {code}" + (", although a cancel was requested" if facts.cancel_requested else "")
        return replace(ended, state=state, reason=why, signal=None)
    raise ProtocolError(f"{facts.job}/result.json has unknown reason {reason!r}")


def classify(facts: JobFacts, boot_id: str, now: int, job_json: dict[str, Any] | None = None) -> JobStatus:
    """The state rules of docs/protocol.md "States", as one pure function.

    ``job_json`` is the caller's cached copy when status.sh was asked not to
    send it again.
    """
    if facts.damaged:
        raise ProtocolError(facts.damaged)
    if not facts.exists:
        return JobStatus(JobState.MISSING, f"no job directory {facts.path or facts.job}")
    info = facts.job_json or job_json
    if info is None:
        if facts.launch_over:
            untouched = f", folder untouched for {facts.launch_age} s" if facts.launch_age is not None else ""
            return JobStatus(
                JobState.LOST,
                f"the launch died before writing job.json (no launching process alive{untouched})",
                sizes=facts.sizes,
            )
        return JobStatus(JobState.STARTING, "job directory exists but job.json is not written yet", sizes=facts.sizes)
    # What every answer below shares; each rule fills in state and reason.
    base = JobStatus(
        JobState.RUNNING,
        "running",
        pid=info.get("pid"),
        start_time=info.get("start_time"),
        sizes=facts.sizes,
        free_kb=facts.free_kb,
    )
    result = facts.result_json
    if result is not None:
        ended = with_survivors(_ended(facts, info, result, base), result)
        return with_cuts(ended, parse_output_cut(facts.job, result.get("output_cut")))
    recorded_boot = info.get("boot_id") or ""
    if recorded_boot and boot_id and recorded_boot != boot_id:
        return replace(base, state=JobState.LOST, reason="the host rebooted since launch (boot id differs)")
    if facts.supervisor_alive is False:
        return replace(base, state=JobState.LOST, reason="the supervisor is gone and left no result")
    recorded_sup_start = info.get("supervisor_start") or ""
    if recorded_sup_start and facts.supervisor_start is not None and facts.supervisor_start != recorded_sup_start:
        return replace(base, state=JobState.LOST, reason="the supervisor's pid now belongs to another process")
    if facts.cancel_requested:
        base = replace(base, reason="running, cancel requested: SIGTERM sent, SIGKILL after the grace period")
    return with_cuts(base, running_cuts(facts))


@dataclass(frozen=True)
class ListedJob:
    """One job folder of a listing, with its state or why it could not be read.

    ``name`` is the folder's name under async_dir: the job id, or
    ``.archive/ID/N`` for attempt N of job ID that a retry moved aside.
    ``status`` and ``facts`` are None exactly when ``error`` says why (a
    damaged job file): one bad folder never hides the others.
    """

    name: str
    job_dir: str
    status: JobStatus | None
    facts: JobFacts | None
    error: str = ""

    @property
    def job_id(self) -> str:
        """The job's id, also for an archived attempt of it."""
        return self.name.split("/")[1] if self.name.startswith(f"{ARCHIVE_DIR}/") else self.name

    @property
    def attempt(self) -> int | None:
        """N for an archived attempt ``.archive/ID/N``; None for the job's current folder."""
        return int(self.name.rsplit("/", 1)[1]) if self.name.startswith(f"{ARCHIVE_DIR}/") else None


@dataclass(frozen=True)
class JobListing:
    """The jobs of one async_dir on one host, as :meth:`SSHAsyncJobHook.alist_jobs` read them."""

    now: int  # the host's clock when listed (epoch seconds)
    async_dir: str  # absolute, as the host resolved it
    exists: bool  # False: async_dir does not exist on the host (no jobs, not an error)
    jobs: list[ListedJob]


def gc_candidate(entry: ListedJob, cutoff: int) -> bool:
    """Finished long enough ago, and surely not running: what `airflow-ssh-async gc` may remove.

    Jobs with a result count from their end time. Lost jobs have none, so they
    count from their start, and only when the job's own process is gone too.
    """
    status, facts = entry.status, entry.facts
    if status is None or facts is None:
        return False
    if status.state.has_result:
        return status.end_time is not None and status.end_time <= cutoff
    if status.state is JobState.LOST:
        return facts.job_alive is not True and status.start_time is not None and status.start_time <= cutoff
    return False


# --- what the trigger reports and the operator returns ----------------------------


def iso_time(epoch: int | None) -> str | None:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat() if epoch is not None else None


def delivery_marker(pid: int | None, start_time: str | None) -> dict[str, Any]:
    """Names one run of a job: a relaunch under the same id has another pid or start."""
    return {"pid": pid, "start_time": start_time}


# How much of stdout and stderr a result keeps (bytes), unless told otherwise.
TAIL_BYTES = 4096


def build_result(
    ref: JobRef, status: JobStatus, *, progress: str = "", stdout_tail: str = "", stderr_tail: str = ""
) -> dict[str, Any]:
    """The result dict: the operator's return value and the sensor's, one shape."""
    duration = (
        status.end_time - status.start_time if status.end_time is not None and status.start_time is not None else None
    )
    return {
        "job_id": ref.job_id,
        "host": ref.host,
        "job_dir": ref.job_dir,
        "state": status.state.value,
        "reason": status.reason,
        "exit_code": status.exit_code,
        "signal": status.signal,
        "pid": status.pid,
        "start_time": iso_time(status.start_time),
        "end_time": iso_time(status.end_time),
        "duration": duration,
        "limit": status.limit,
        "output_cut": [asdict(c) for c in status.output_cut],
        "survivors": [dict(s) for s in status.survivors],
        "progress": progress,
        "stdout_tail": stdout_tail,
        "stderr_tail": stderr_tail,
    }


OUTPUT_KEYS = ("progress", "stdout_tail", "stderr_tail")


def signal_name(number: int) -> str:
    """SIGKILL for 9: how a person reads a signal number."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def job_record(ref: JobRef, status: JobStatus, now: float) -> dict[str, Any]:
    """A job as a listing shows it (`airflow-ssh-async ... --json`): the result
    dict, so a script reads one shape from XCom and from the ops command,
    without the output (``progress`` and the tails: a listing reads none)
    and with what a person at a shell asks for: ages from NOW (epoch
    seconds), the signal's name and the size of each stream."""
    start, end = status.start_time, status.end_time
    record = {k: v for k, v in build_result(ref, status).items() if k not in OUTPUT_KEYS}
    return {
        **record,
        "signal_name": signal_name(status.signal) if status.signal is not None else None,
        "age": int(now - start) if start is not None else None,
        "ended_ago": int(now - end) if end is not None else None,
        "stdout_size": status.sizes.get("stdout"),
        "stderr_size": status.sizes.get("stderr"),
        "progress_size": status.sizes.get("progress"),
    }


def job_event(status: str, message: str, ref: JobRef, result: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every trigger event has this shape; ``status`` is "finished" or "error"."""
    return {"status": status, "message": message, "job": ref.to_dict(), "result": result}


# --- what a launch does when the job exists ------------------------------------------


class OnExisting(str, enum.Enum):
    REATTACH = "reattach"
    RERUN = "rerun"
    FAIL = "fail"


class ExistingAction(enum.Enum):
    WATCH = "watch"  # it is running: follow it
    TAKE_RESULT = "take_result"  # it succeeded and Airflow never took the result
    ARCHIVE_AND_START = "archive_and_start"
    LAUNCH_AGAIN = "launch_again"  # it vanished between our launch and status (raced archive)
    REFUSE = "refuse"


def decide_existing(on_existing: OnExisting, state: JobState, delivered: bool, same_origin: bool) -> ExistingAction:
    """docs/reference.md "on_existing", as one pure function.

    ``same_origin``: the job was launched by this task instance (an earlier
    try of it). A succeeded job from another run (a fixed job_id reused by
    tomorrow's run) is never "taken": it is archived and the job runs again.
    """
    if state is JobState.MISSING:
        return ExistingAction.LAUNCH_AGAIN
    if on_existing is OnExisting.FAIL:
        return ExistingAction.REFUSE
    if not state.finished:
        return ExistingAction.WATCH if on_existing is OnExisting.REATTACH else ExistingAction.REFUSE
    if on_existing is OnExisting.REATTACH and state is JobState.SUCCEEDED and same_origin and not delivered:
        return ExistingAction.TAKE_RESULT
    return ExistingAction.ARCHIVE_AND_START
