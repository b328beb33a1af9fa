"""The example DAGs in dags/ load cleanly and run against the test sshd."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def examples(airflow_db: None) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    assert set(bag.dags) == {"nightly_migration", "backup_launch", "backup_watch", "fleet_report"}
    return bag


def states(dag_run: Any) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}


def test_nightly_migration_runs(sshd, examples) -> None:
    dag_run = examples.dags["nightly_migration"].test()
    assert states(dag_run) == {("migrate", -1): "success"}


def test_fire_and_forget_then_the_sensor_dag_picks_it_up(sshd, examples) -> None:
    # Both runs get today's logical date, so both template the same job id.
    assert states(examples.dags["backup_launch"].test()) == {("start_backup", -1): "success"}
    assert states(examples.dags["backup_watch"].test()) == {("wait_for_backup", -1): "success"}


def test_fleet_report_fans_out_over_hosts(sshd, examples) -> None:
    dag_run = examples.dags["fleet_report"].test()
    assert states(dag_run) == {("disk_report", 0): "success", ("disk_report", 1): "success"}
