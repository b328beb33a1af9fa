"""gc_candidate: which job folders `airflow-ssh-async gc` may remove (no I/O)."""

from __future__ import annotations

import pytest

from airflow_ssh_async.job import JobFacts, JobState, JobStatus, ListedJob, gc_candidate

CUTOFF = 1_000_000


def entry(state: JobState, *, start: int | None = None, end: int | None = None, alive: bool | None = None) -> ListedJob:
    status = JobStatus(state, state.value, start_time=start, end_time=end)
    return ListedJob("j", "/h/.airflow_async/j", status, JobFacts(job="j", exists=True, job_alive=alive))


@pytest.mark.parametrize(
    "state", [JobState.SUCCEEDED, JobState.FAILED, JobState.KILLED, JobState.TIMED_OUT, JobState.CANCELLED]
)
def test_a_job_with_a_result_counts_from_its_end(state: JobState) -> None:
    assert gc_candidate(entry(state, start=1, end=CUTOFF), CUTOFF)
    assert not gc_candidate(entry(state, start=1, end=CUTOFF + 1), CUTOFF)
    assert not gc_candidate(entry(state, start=1), CUTOFF)  # no end time: not old enough to know


def test_a_lost_job_counts_from_its_start_and_only_once_its_process_is_gone() -> None:
    assert gc_candidate(entry(JobState.LOST, start=CUTOFF, alive=False), CUTOFF)
    assert gc_candidate(entry(JobState.LOST, start=CUTOFF, alive=None), CUTOFF)  # not reported: not known to run
    assert not gc_candidate(entry(JobState.LOST, start=CUTOFF, alive=True), CUTOFF)  # outlived its supervisor
    assert not gc_candidate(entry(JobState.LOST, start=CUTOFF + 1, alive=False), CUTOFF)
    assert not gc_candidate(entry(JobState.LOST, alive=False), CUTOFF)  # a launch that died: no start


@pytest.mark.parametrize("state", [JobState.RUNNING, JobState.STARTING, JobState.MISSING])
def test_a_job_not_finished_or_not_there_is_never_removed(state: JobState) -> None:
    assert not gc_candidate(entry(state, start=1, end=2), CUTOFF)


def test_an_entry_whose_state_could_not_be_read_is_left_alone() -> None:
    assert not gc_candidate(ListedJob("j", "/h/.airflow_async/j", None, None, error="damaged job.json"), CUTOFF)
