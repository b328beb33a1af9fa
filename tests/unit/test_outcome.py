"""settle: from a job's event to the task's outcome, shared by operator and sensor (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowSkipException, AirflowTaskTimeout

from airflow_ssh_async.job import JobRef, JobState, JobStatus, build_result, job_event
from airflow_ssh_async.outcome import exit_codes, settle

REF = JobRef("conn", "nightly", "/home/u/.airflow_async/nightly", "u@db1:22")


def finished(state: JobState, reason: str = "", **kw: Any) -> dict[str, Any]:
    tails = {k: kw.pop(k) for k in ("stdout_tail", "stderr_tail") if k in kw}
    result = build_result(REF, JobStatus(state, reason or state.value, **kw), **tails)
    return job_event("finished", f"job 'nightly' on u@db1:22: {state.value}", REF, result)


def test_a_succeeded_job_returns_its_result() -> None:
    event = finished(JobState.SUCCEEDED, exit_code=0, stdout_tail="done\n")
    assert settle(event) is event["result"]
    assert settle(event)["stdout_tail"] == "done\n"


def test_a_failure_names_the_job_host_and_folder_and_ends_with_the_stderr_tail() -> None:
    event = finished(JobState.FAILED, "exited with code 3", exit_code=3, stderr_tail="boom\n")
    with pytest.raises(AirflowException) as err:
        settle(event)
    message = str(err.value)
    assert message.startswith("job 'nightly' on u@db1:22 (/home/u/.airflow_async/nightly) failed: exited with code 3.")
    assert "Its output is in this task's log" in message
    assert message.endswith("--- last stderr ---\nboom\n")
    assert not isinstance(err.value, (AirflowSkipException, AirflowTaskTimeout))


def test_no_stderr_no_stderr_section() -> None:
    with pytest.raises(AirflowException) as err:
        settle(finished(JobState.FAILED, "exited with code 1", exit_code=1))
    assert "last stderr" not in str(err.value)


def test_skip_on_exit_code_skips_only_that_failure() -> None:
    with pytest.raises(AirflowSkipException, match="exited with 99, listed in skip_on_exit_code"):
        settle(finished(JobState.FAILED, exit_code=99), [99])
    with pytest.raises(AirflowException) as err:
        settle(finished(JobState.FAILED, exit_code=98), [99])
    assert not isinstance(err.value, AirflowSkipException)


def test_a_killed_job_with_a_listed_code_is_not_skipped() -> None:
    # A signal is no exit code: skip_on_exit_code applies to exits only.
    with pytest.raises(AirflowException) as err:
        settle(finished(JobState.KILLED, "killed by signal 9", signal=9), [9])
    assert not isinstance(err.value, AirflowSkipException)
    assert "OOM killer" in str(err.value)


@pytest.mark.parametrize(
    ("limit", "hint"),
    [("job_timeout", "Raise job_timeout"), ("execution_timeout", "Raise the task's execution_timeout")],
)
def test_a_timed_out_job_fails_as_a_timeout_naming_its_limit(limit: str, hint: str) -> None:
    with pytest.raises(AirflowTaskTimeout) as err:
        settle(finished(JobState.TIMED_OUT, f"time limit reached ({limit})", signal=15, limit=limit))
    assert hint in str(err.value)


@pytest.mark.parametrize("state", [JobState.CANCELLED, JobState.LOST])
def test_cancelled_and_lost_jobs_fail_with_their_hint(state: JobState) -> None:
    with pytest.raises(AirflowException) as err:
        settle(finished(state))
    assert f" {state.value}: " in str(err.value)
    assert ("cancelled it" if state is JobState.CANCELLED else "Clear the task") in str(err.value)


def test_an_error_event_raises_its_message() -> None:
    event = job_event("error", "job 'nightly' has no directory /x on u@db1:22", REF)
    with pytest.raises(AirflowException, match="has no directory /x"):
        settle(event)


def test_a_malformed_event_is_named_not_taken_for_success() -> None:
    with pytest.raises(AirflowException, match="bad trigger event"):
        settle({"status": "weird", "message": ""})


def test_skip_on_exit_code_is_taken_as_one_code_several_or_none() -> None:
    assert exit_codes(3) == [3]
    assert exit_codes((3, 4)) == [3, 4]
    assert exit_codes(None) == [] and exit_codes([]) == []
