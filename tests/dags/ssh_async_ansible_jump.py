"""DAGs of the Ansible-source sensor and of a job through a jump host (tests/integration)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_ssh_async import SSHAsyncJobOperator, SSHAsyncJobSensor

START = pendulum.datetime(2026, 1, 1, tz="UTC")
CONF_JOB = "{{ dag_run.conf['job_id'] }}"


def dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=START, catchup=False)


with dag("ssh_async_ansible_sensor"):
    SSHAsyncJobSensor(
        task_id="watch",
        ssh_conn_id="test_asyncdash",
        job_id=CONF_JOB,
        source="ansible",
        ansible_async_dir="{{ dag_run.conf.get('ansible_async_dir', '~/.ansible_async') }}",
        poke_interval=0.5,
        timeout=120,
    )

with dag("ssh_async_ansible_sensor_in_worker"):
    SSHAsyncJobSensor(
        task_id="watch",
        ssh_conn_id="test_asyncdash",
        job_id=CONF_JOB,
        source="ansible",
        deferrable=False,
        poke_interval=0.5,
        timeout=120,
    )

with dag("ssh_async_via_jump_host"):
    SSHAsyncJobOperator(
        task_id="job",
        ssh_conn_id="test_via_jump",
        command="echo through the bastion 1; sleep 1; echo through the bastion 2",
        poll_interval=0.5,
    )
