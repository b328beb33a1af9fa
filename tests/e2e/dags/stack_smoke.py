"""Throwaway DAG for the stack smoke test: a deferrable wait, then a task returning a value."""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.sensors.time_delta import WaitSensor
from airflow.sdk import DAG, task

with DAG(dag_id="stack_smoke", schedule=None, catchup=False, tags=["e2e"]):
    # Measured from task start, so it always defers (TimeDeltaSensor counts from
    # run_after and would not defer if the scheduler were slow).
    wait = WaitSensor(task_id="wait", time_to_wait=timedelta(seconds=8), deferrable=True)

    @task
    def answer(**context) -> dict:
        return {"answer": 42, "greeting": context["dag_run"].conf.get("greeting", "none")}

    wait >> answer()
