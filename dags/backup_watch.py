"""Ansible's `async_status`: wait for the backup that `backup_launch` started.

The sensor starts straight in the triggerer, so it never takes a worker slot
while it waits.

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

from airflow_ssh_async import SSHAsyncJobSensor

with DAG(
    dag_id="backup_watch",
    schedule="30 1 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["ssh-async", "example"],
) as dag:
    SSHAsyncJobSensor(
        task_id="wait_for_backup",
        ssh_conn_id="ssh_async_backup",
        job_id="backup-{{ ds_nodash }}",
        poke_interval=2,
        timeout=6 * 3600,
        start_from_trigger=True,
    )
