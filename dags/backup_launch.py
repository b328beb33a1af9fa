"""Fire and forget (Ansible's `poll: 0`): start tonight's backup and move on.

`backup_watch` picks the job up later by its id.

Connections: ``ssh_async_backup`` (type ssh). Create each once, e.g.::

    airflow connections add ssh_async_backup --conn-json '{
        "conn_type": "ssh", "host": "backup1.example.com", "login": "deploy",
        "extra": {"key_file": "/opt/airflow/keys/id_ed25519",
                  "host_key": "<what airflow-ssh-async host-key ssh_async_backup prints>"}}'

or as ``AIRFLOW_CONN_<ID>`` variables, or in the UI: see the README's "Connections".
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_ssh_async import SSHAsyncJobOperator

with DAG(
    dag_id="backup_launch",
    schedule="0 1 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["ssh-async", "example"],
) as dag:
    SSHAsyncJobOperator(
        task_id="start_backup",
        ssh_conn_id="ssh_async_backup",
        job_id="backup-{{ ds_nodash }}",
        command="echo 'backing up'; sleep 3; echo 'backup done: 42 files'",
        wait_for_completion=False,
    )
