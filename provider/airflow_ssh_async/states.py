"""A job's state and the reason for it: the rules of docs/protocol.md "States", as pure functions.

The remote scripts only report facts (status_report.py); :func:`classify`
turns facts into a state, in this one place (tests/unit/test_job.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from airflow_ssh_async.frames import ProtocolError
from airflow_ssh_async.output_cuts import LOW_SPACE_KB, OutputCut, parse_output_cut, running_cuts
from airflow_ssh_async.status_report import JobFacts

# A job folder without job.json is a launch in progress until it has been left
# untouched this long with no launching process alive (lib.sh LAUNCH_PATIENCE).
LAUNCH_PATIENCE = 60


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
