"""Bad arguments are refused before any SSH call, at DAG import where they can be;
the trigger's serialize() round-trips (no network)."""

from __future__ import annotations

import json

import pytest

from airflow_ssh_async import SSHAsyncJobTrigger
from airflow_ssh_async.hooks import SSHAsyncJobHook
from airflow_ssh_async.job import JobIdError


@pytest.mark.parametrize("bad", ["../x", "a/b", "`", "", "x" * 200])
def test_invalid_ids_are_refused_before_any_ssh_call(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The connection points at a closed port: only a check before SSH can answer.
    monkeypatch.setenv(
        "AIRFLOW_CONN_NOWHERE", json.dumps({"conn_type": "ssh", "host": "127.0.0.1", "port": 9, "login": "x"})
    )
    with pytest.raises(JobIdError, match="invalid job id"):
        SSHAsyncJobHook("nowhere").launch(bad, "true")


def test_an_async_dir_holding_the_batch_separator_is_refused_before_any_ssh() -> None:
    from airflow_ssh_async.errors import SSHAsyncJobError

    with pytest.raises(SSHAsyncJobError, match="0x1f.*connection 'no_such_conn'.*choose one without 0x1f"):
        SSHAsyncJobHook("no_such_conn", async_dir="~/jobs\x1fx")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ('command=""', "command must be non-empty shell text"),
        ('command="  \\n\\t"', "command must be non-empty shell text"),
        ("command=None", "command must be non-empty shell text"),
        ('environment={"BAD-NAME": "x"}', "invalid environment variable name 'BAD-NAME'"),
        ('environment={"1X": "x"}', "invalid environment variable name '1X'"),
        ('environment={"A; reboot": "x"}', "invalid environment variable name 'A; reboot'"),
        ('environment={"X" * 5000 + "=": "x"}', "invalid environment variable name"),
        ('job_id="../etc"', "invalid job id '../etc'"),
        ('job_id="a" * 129', "invalid job id"),
        ('job_id="-x"', "invalid job id '-x'"),
        ('cleanup="sometimes"', "cleanup must be one of"),
        ('on_existing="ignore"', "on_existing must be one of"),
    ],
)
def test_arguments_wrong_whatever_the_host_fail_the_dag_import_naming_the_task(args, says, tmp_path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "bad_dag.py").write_text(
        "import pendulum\n"
        "from airflow.sdk import DAG\n"
        "from airflow_ssh_async import SSHAsyncJobOperator\n"
        "with DAG('bad', schedule=None, start_date=pendulum.datetime(2026, 1, 1)):\n"
        f"    SSHAsyncJobOperator(task_id='migrate', ssh_conn_id='x', **dict(command='true') | dict({args}))\n"
    )
    bag = DagBag(str(tmp_path))
    [error] = bag.import_errors.values()
    assert "migrate: " in error and says in error, error


def test_templated_job_ids_and_commands_are_checked_once_rendered_not_at_parse_time() -> None:
    from airflow.sdk import DAG

    from airflow_ssh_async import SSHAsyncJobOperator

    with DAG("parse_ok", schedule=None):
        SSHAsyncJobOperator(task_id="t", command="{{ params.cmd }}", job_id="{{ params.id }}/..", environment={})


def test_trigger_serializes_to_an_equal_trigger() -> None:
    trigger = SSHAsyncJobTrigger("c", "j", job_dir="/d/j", poll_interval=3.0, kill_on_cancel=False)
    path, kwargs = trigger.serialize()
    assert path == "airflow_ssh_async.triggers.SSHAsyncJobTrigger"
    again = SSHAsyncJobTrigger(**kwargs)
    assert again.serialize() == (path, kwargs)
