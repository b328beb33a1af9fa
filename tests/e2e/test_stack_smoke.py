"""Smoke test of the e2e harness: a real Airflow runs a deferrable DAG end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.airflow_stack import AirflowStack

DAGS = Path(__file__).parent / "dags"
DAG_ID = "stack_smoke"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def airflow_stack() -> Iterator[AirflowStack]:
    """One real Airflow for the module; a startup failure fails the tests, never skips."""
    with AirflowStack(DAGS, dag_ids=[DAG_ID]) as stack:
        yield stack


@pytest.mark.timeout(300)
def test_deferrable_dag_runs_end_to_end(airflow_stack: AirflowStack) -> None:
    af = airflow_stack
    assert af.startup_seconds is not None and af.startup_seconds < 60, af.startup_seconds
    assert [t.name for t in af.triggerers] == ["triggerer-1"]

    af.unpause_dag(DAG_ID)
    run_id = af.trigger_dag(DAG_ID, conf={"greeting": "hello"})

    ti = af.wait_for_task_state(DAG_ID, run_id, "wait", "deferred", timeout=60)
    assert ti["try_number"] == 1
    assert ti["trigger"] is not None, ti
    assert af.wait_for_trigger_holder(DAG_ID, run_id, "wait", timeout=30) == "triggerer-1"
    # A deferred task holds no worker: its runner exits, its pool worker goes back to idle.
    af.wait_for_no_worker(ti["id"], timeout=20)
    assert af.worker_processes(), "the LocalExecutor's idle pool workers should be visible"
    assert not af.busy_workers(), af.busy_workers()
    assert af.task_instance(DAG_ID, run_id, "wait")["state"] == "deferred"

    assert "Pausing task as DEFERRED" in af.task_log(DAG_ID, run_id, "wait", try_number=1)

    assert af.wait_for_dag_run(DAG_ID, run_id, timeout=120) == "success", af.diagnostics()
    assert af.task_states(DAG_ID, run_id) == {("wait", -1): "success", ("answer", -1): "success"}
    assert "Trigger fired event" in af.task_log(DAG_ID, run_id, "wait", try_number=1)  # the triggerer's part
    assert af.xcom(DAG_ID, run_id, "answer") == {"answer": 42, "greeting": "hello"}
    assert "Done. Returned value was" in af.task_log(DAG_ID, run_id, "answer")
