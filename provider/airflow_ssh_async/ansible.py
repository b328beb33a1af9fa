"""Jobs that Ansible started (``async: N``, ``poll: 0``), watched from Airflow.

Ansible's ``async_wrapper`` keeps one result file per job,
``$ANSIBLE_ASYNC_DIR/<jid>`` (default ``~/.ansible_async/<jid>``), written
whole each time (write to ``<jid>.tmp``, then rename):

- while the job runs: ``{"started": true, "finished": false, "ansible_job_id": jid}``;
- when it ends: the module's own result, e.g. for ``command``/``shell``
  ``{"rc": 3, "stdout": "...", "stderr": "...", "failed": true, "msg":
  "non-zero return code", "start": ..., "end": ..., "delta": ..., ...}``
  (``rc`` is ``-N`` when signal N killed the command);
- when its time limit (``async: N``) ran out: ``{"msg": "Timeout exceeded",
  "failed": true, "child_pid": PID}``: the wrapper SIGKILLed the job's group.

(``"finished": 1``, ``ansible_job_id`` on every result and
``_ansible_suppress_tmpdir_delete`` are added by ``async_status`` or the
launch reply, not stored in the file.)

What can and cannot be told about liveness. The file holds no pid, no boot id
and no start time, so:

- A job whose file says running while no ``async_wrapper`` process with its
  jid runs any more is ``lost``: the wrapper was killed or the host rebooted.
  ansible_status.sh looks for those processes (their argv carries the jid)
  before it reads the file, so a job that just ended is never taken for lost.
- Which of the two (kill or reboot) cannot be told: there is no boot id.
- Liveness cannot be seen on a host without /proc, nor when /proc hides other
  users' processes (``hidepid``) and the file belongs to another user (a
  ``become`` job): the state is then ``running`` as the file says, and the
  reason says that liveness is unknown.
- A job that hangs but whose wrapper lives reads ``running``, as in Ansible;
  if only the wrapper's timer process was killed, the time limit is no longer
  enforced and nothing shows it.
- Output is only in the final result (Ansible holds it in memory until the
  end): stdout and stderr arrive at the end, as ``command`` recorded them (it
  strips the last newline); a job killed with its wrapper leaves none.
- Times: the end is the file's mtime when the result was written; the start
  is that minus the module's ``delta``, or the mtime of the "running" record
  when a watcher saw it; the time limit is read from the wrapper's argv while
  it runs.

A file that is empty, half-written, not a JSON object or of another job is an
error that names the file, never "running" (``async_status`` would say
running; Ansible writes the file by rename, so such a file is a failed write).

Everything but :func:`aansible_status` is pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_ssh_async.job import JobState, JobStatus, ProtocolError, parse_frames, validate_job_id

if TYPE_CHECKING:
    from airflow_ssh_async.client import RemoteHost

SOURCE_AIRFLOW = "airflow-ssh-async"
SOURCE_ANSIBLE = "ansible"
SOURCES = (SOURCE_AIRFLOW, SOURCE_ANSIBLE)
DEFAULT_ANSIBLE_ASYNC_DIR = "~/.ansible_async"
PROTOCOL = 1
TIMEOUT_MSG = "Timeout exceeded"
SIGKILL = 9


def validate_source(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    return source


def ansible_request(ansible_async_dir: str, job_id: str, result_file: str = "") -> tuple[str, str]:
    """(DIR, JID) as ansible_status.sh takes them.

    DIR is ``""`` for the default dir, so that the host's own
    ``$ANSIBLE_ASYNC_DIR`` wins as it does for async_wrapper. ``result_file``
    (a full path) overrides dir and id.
    """
    if result_file:
        folder, _, name = result_file.rstrip("/").rpartition("/")
        return folder or "/", validate_job_id(name)
    folder = "" if ansible_async_dir in ("", DEFAULT_ANSIBLE_ASYNC_DIR) else ansible_async_dir
    return folder, validate_job_id(job_id)


def ansible_file(ansible_async_dir: str, job_id: str, result_file: str = "") -> str:
    """The result file as the user named it (before the host resolves ~ and env)."""
    return result_file or f"{(ansible_async_dir or DEFAULT_ANSIBLE_ASYNC_DIR).rstrip('/')}/{job_id}"


@dataclass(frozen=True)
class AnsibleFacts:
    """What ansible_status.sh reported about one Ansible job, unclassified."""

    job: str
    path: str
    exists: bool
    data: bytes | None = None
    mtime: int | None = None
    unreadable: bool = False
    wrapper_alive: bool | None = None  # None: liveness cannot be seen (see liveness_unknown)
    time_limit: int | None = None
    liveness_unknown: str = ""


@dataclass(frozen=True)
class AnsibleReport:
    now: int
    jobs: list[AnsibleFacts]  # in the order asked


def parse_ansible_status(data: bytes) -> AnsibleReport:
    """Read ansible_status.sh output."""
    head: dict[str, bytes] = {}
    jobs: list[dict[str, Any]] = []
    for name, value in parse_frames(data):
        if name == "job":
            jobs.append({"job": value.decode()})
        elif not jobs:
            head[name] = value
        elif name == "result":
            jobs[-1]["data"] = value
        elif name in ("exists", "unreadable", "wrapper_alive"):
            jobs[-1][name] = value == b"1"
        elif name in ("mtime", "time_limit"):
            jobs[-1][name] = int(value) if value.strip().isdigit() else None
        elif name in ("path", "liveness_unknown"):
            jobs[-1][name] = value.decode("utf-8", "replace")
        else:
            raise ProtocolError(f"unknown ansible_status field {name!r} for {jobs[-1]['job']}")
    if head.get("protocol") != str(PROTOCOL).encode():
        raise ProtocolError(f"ansible_status protocol {head.get('protocol')!r}, expected {PROTOCOL}")
    try:
        return AnsibleReport(now=int(head["now"]), jobs=[AnsibleFacts(**j) for j in jobs])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"incomplete ansible_status report ({exc})") from None


def load_ansible_result(facts: AnsibleFacts) -> dict[str, Any]:
    """The file's JSON object; a ProtocolError that names the file otherwise."""
    where = f"Ansible result file {facts.path or facts.job}"
    if facts.unreadable or facts.data is None:
        raise ProtocolError(f"{where} exists but the SSH user cannot read it: connect as the user Ansible ran as")
    if not facts.data.strip():
        raise ProtocolError(
            f"{where} is empty: Ansible's write of it failed (disk full?), so the job's state is unknown"
        )
    try:
        value = json.loads(facts.data)
    except ValueError as exc:
        raise ProtocolError(
            f"{where} is not valid JSON ({exc}): it is half-written or damaged. Ansible replaces it "
            "whole (by rename), so this is not a job still running"
        ) from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{where} is not a JSON object: the file is damaged")
    recorded = value.get("ansible_job_id")
    if recorded is not None and str(recorded) != facts.job:
        raise ProtocolError(f"{where} belongs to job {recorded!r}, not {facts.job!r}: the file was copied or renamed")
    return value


_DELTA_RE = re.compile(r"(?:(\d+) days?, )?(\d+):(\d\d):(\d\d(?:\.\d+)?)")


def parse_delta(delta: Any) -> float | None:
    """Seconds of a Python timedelta string as Ansible's command module writes it."""
    match = _DELTA_RE.fullmatch(str(delta or "").strip())
    if not match:
        return None
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _true(value: Any) -> bool:
    return value is True or value == 1 or str(value).lower() in ("true", "1", "yes")


def classify_ansible(facts: AnsibleFacts, *, time_limit: int | None = None, start_time: int | None = None) -> JobStatus:
    """The state of an Ansible job from its file and what liveness could be seen.

    ``time_limit`` and ``start_time`` are what a watcher learnt on earlier
    polls (the wrapper's argv, the mtime of the "running" record).

    :raises ProtocolError: the file cannot be read as Ansible writes it.
    """
    time_limit = facts.time_limit if facts.time_limit is not None else time_limit
    if not facts.exists:
        if facts.wrapper_alive:
            return JobStatus(JobState.STARTING, f"Ansible's async_wrapper runs but has not written {facts.path} yet")
        return JobStatus(JobState.MISSING, f"no Ansible result file {facts.path or facts.job}")
    data = load_ansible_result(facts)
    if "started" in data and not _true(data.get("finished", False)):
        start = start_time if start_time is not None else facts.mtime
        if facts.wrapper_alive:
            return JobStatus(JobState.RUNNING, "running (its async_wrapper is alive)", start_time=start)
        if facts.wrapper_alive is False:
            return JobStatus(
                JobState.LOST,
                f"{facts.path} says running but no async_wrapper process of job {facts.job} is left: it was "
                "killed or the host rebooted (Ansible records no pid or boot id, so which cannot be told), "
                "and it will never write a result",
                start_time=start,
            )
        return JobStatus(
            JobState.RUNNING, f"running per {facts.path} (liveness unknown: {facts.liveness_unknown})", start_time=start
        )
    end = facts.mtime
    delta = parse_delta(data.get("delta"))
    start = round(end - delta) if end is not None and delta is not None else start_time
    common: dict[str, Any] = {"start_time": start, "end_time": end}
    failed = _true(data.get("failed", False))
    msg = str(data.get("msg") or "").strip()
    if failed and msg == TIMEOUT_MSG:
        limit = f" of {time_limit} s" if time_limit else ""
        return JobStatus(
            JobState.TIMED_OUT,
            f"Ansible's time limit{limit} reached: async_wrapper killed the job (SIGKILL to its group)",
            None,
            SIGKILL,
            pid=_int(data.get("child_pid")),
            **common,
        )
    rc = _int(data.get("rc"))
    note = f" ({msg})" if msg else ""
    if rc is not None and rc < 0:
        return JobStatus(JobState.KILLED, f"killed by signal {-rc}", None, -rc, **common)
    if rc is not None and (rc != 0 or failed):
        return JobStatus(JobState.FAILED, f"exited with code {rc}{note}", rc, **common)
    if rc is not None:
        return JobStatus(JobState.SUCCEEDED, "exited with code 0", 0, **common)
    if failed:
        return JobStatus(JobState.FAILED, f"Ansible reports a failure: {msg or 'no message'}", **common)
    return JobStatus(JobState.SUCCEEDED, "Ansible reports success (the module gives no exit code)", **common)


def ansible_output(data: dict[str, Any]) -> tuple[bytes, bytes]:
    """stdout and stderr as the module recorded them in its result."""

    def text(value: Any) -> bytes:
        if value is None:
            return b""
        return (value if isinstance(value, str) else json.dumps(value)).encode("utf-8", "surrogateescape")

    return text(data.get("stdout")), text(data.get("stderr"))


async def aansible_status(
    host: RemoteHost, requests: Sequence[tuple[str, str]], *, job_id: str = ""
) -> list[AnsibleFacts]:
    """Facts about many Ansible jobs, (DIR, JID) each, in one remote command.

    :raises SSHAsyncJobError: the host could not be reached or the script failed.
    :raises ProtocolError: the report cannot be read.
    """
    args: list[str] = []
    for folder, jid in requests:
        args += [folder, validate_job_id(jid)]
    report = parse_ansible_status(
        await host.run("ansible_status", args, args_on_stdin=True, job_id=job_id or ", ".join(j for _, j in requests))
    )
    if [f.job for f in report.jobs] != [j for _, j in requests]:
        raise ProtocolError("ansible_status answered for other jobs than asked")
    return report.jobs
