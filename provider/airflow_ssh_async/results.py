"""What the trigger reports and the operator returns: the result dict, the trigger event, a listing's record."""

from __future__ import annotations

import signal
from dataclasses import asdict
from typing import Any

from airflow_ssh_async.job_ids import JobRef
from airflow_ssh_async.states import JobStatus


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
