"""The same command on several hosts, one mapped task per host.

Connections: ``ssh_async_host_a``, ``ssh_async_host_b`` (type ssh). Create each once, e.g.::

    airflow connections add ssh_async_host_a --conn-json '{
        "conn_type": "ssh", "host": "host-a.example.com", "login": "deploy",
        "extra": {"key_file": "/opt/airflow/keys/id_ed25519",
                  "host_key": "<what airflow-ssh-async host-key ssh_async_host_a prints>"}}'
    airflow connections add ssh_async_host_b --conn-json '{
        "conn_type": "ssh", "host": "host-b.example.com", "login": "deploy",
        "extra": {"key_file": "/opt/airflow/keys/id_ed25519",
                  "host_key": "<what airflow-ssh-async host-key ssh_async_host_b prints>"}}'

or as ``AIRFLOW_CONN_<ID>`` variables, or in the UI: see the README's "Connections".
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_ssh_async import SSHAsyncJobOperator

with DAG(
    dag_id="fleet_report",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["ssh-async", "example"],
) as dag:
    SSHAsyncJobOperator.partial(
        task_id="disk_report",
        command='echo "$(id -un)@$(hostname): $(df -P / | tail -n 1)"',
        poll_interval=2,
    ).expand(ssh_conn_id=["ssh_async_host_a", "ssh_async_host_b"])
