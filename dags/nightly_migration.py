"""Nightly database migration, launched on the DB host and watched from the triggerer.

The migration runs detached on the host: a worker restart, a triggerer
restart or a dropped SSH connection does not stop it, and a retry re-attaches
to it instead of running it twice.

Connections: ``ssh_async_db`` (type ssh). Create each once, e.g.::

    airflow connections add ssh_async_db --conn-json '{
        "conn_type": "ssh", "host": "db1.example.com", "login": "deploy",
        "extra": {"key_file": "/opt/airflow/keys/id_ed25519",
                  "host_key": "<what airflow-ssh-async host-key ssh_async_db prints>"}}'

or as ``AIRFLOW_CONN_<ID>`` variables, or in the UI: see the README's "Connections".
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_ssh_async import SSHAsyncJobOperator

MIGRATION = r"""
set -e
echo "migrating $DB_NAME from $(hostname)"
for step in 1 2 3 4 5; do
    echo "applying migration step $step"
    printf '%s\n' "step $step/5" >> "$AIRFLOW_ASYNC_PROGRESS"
    sleep 1
done
echo "migration complete"
"""

with DAG(
    dag_id="nightly_migration",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["ssh-async", "example"],
) as dag:
    SSHAsyncJobOperator(
        task_id="migrate",
        ssh_conn_id="ssh_async_db",
        command=MIGRATION,
        environment={"DB_NAME": "orders"},
        job_timeout=4 * 3600,
        poll_interval=2,
    )
