"""From a job's result to the task's outcome: shared by operator and sensor."""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowSkipException, AirflowTaskTimeout

from airflow_ssh_async.job import JobState

_HINTS: dict[object, str] = {
    JobState.FAILED: "Its output is in this task's log and in the job folder.",
    JobState.KILLED: "Something outside the job sent it that signal (OOM killer, a person, a reboot script).",
    JobState.TIMED_OUT: "Raise job_timeout if the job needs longer; it was stopped (SIGTERM, then SIGKILL).",
    # A timed_out job whose result names execution_timeout:
    "execution_timeout": "Raise the task's execution_timeout if the job needs longer; it was stopped "
    "(SIGTERM, then SIGKILL).",
    JobState.CANCELLED: "Someone cancelled it (mark failed/clear in the UI, or `airflow-ssh-async kill`).",
    JobState.LOST: "Its supervisor died or the host rebooted; the job's own state is unknown. "
    "Clear the task to start a new attempt.",
}


def exit_codes(skip_on_exit_code: int | Iterable[int] | None) -> list[int]:
    """``skip_on_exit_code`` as a list, however it was given (one code, several, none)."""
    if isinstance(skip_on_exit_code, int):
        return [skip_on_exit_code]
    return list(skip_on_exit_code or [])


def settle(event: dict[str, Any], skip_on_exit_code: Container[int] = ()) -> dict[str, Any]:
    """Return the result of a succeeded job; raise for anything else.

    :raises AirflowSkipException: the job failed with an exit code in
        ``skip_on_exit_code``.
    :raises AirflowTaskTimeout: the job hit its time limit (job_timeout or
        execution_timeout, named in the message and in ``result["limit"]``):
        the task fails as Airflow fails a timed-out task, retries included.
    :raises AirflowException: the job did not succeed, or could not be watched.
    """
    if event.get("status") != "finished":
        raise AirflowException(event.get("message") or f"bad trigger event: {event!r}")
    result: dict[str, Any] = event["result"]
    state = JobState(result["state"])
    if state is JobState.SUCCEEDED:
        return result
    where = f"job {result['job_id']!r} on {result['host']} ({result['job_dir']})"
    if state is JobState.FAILED and result["exit_code"] in skip_on_exit_code:
        raise AirflowSkipException(f"{where} exited with {result['exit_code']}, listed in skip_on_exit_code")
    tail = result.get("stderr_tail") or ""
    hint = _HINTS.get(result.get("limit") if state is JobState.TIMED_OUT else None) or _HINTS.get(state, "")
    message = f"{where} {state.value}: {result['reason']}. {hint}" + (f"\n--- last stderr ---\n{tail}" if tail else "")
    if state is JobState.TIMED_OUT:
        raise AirflowTaskTimeout(message)
    raise AirflowException(message)
