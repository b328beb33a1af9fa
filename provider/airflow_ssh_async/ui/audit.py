"""A kill from the view, written to Airflow's audit log (the Log table, the UI's Audit Log)."""

from __future__ import annotations

import json
from typing import Any

from airflow_ssh_async.ui import hosts
from airflow_ssh_async.ui.access import user_name
from airflow_ssh_async.ui.records import JobRow

AUDIT_EVENT = "ssh_async.kill"


def audit_kill(user: Any, snap: hosts.Snapshot, row: JobRow, grace: int, outcome: str) -> None:
    """The kill in Airflow's audit log (the Log table, the UI's Audit Log): who, which host, which job."""
    from airflow.models.log import Log
    from airflow.utils.session import create_session

    origin = row.origin
    extra = {
        "conn_id": snap.conn_id,
        "host": snap.label,
        "become_user": snap.become_user,
        "job_id": row.job_id,
        "job_dir": row.job_dir,
        "grace": grace,
        "outcome": outcome,
    }
    kwargs: dict[str, Any] = {}
    if origin is not None:
        kwargs = {"dag_id": origin.dag_id, "task_id": origin.task_id, "run_id": origin.run_id}
        kwargs["map_index"] = origin.map_index
    with create_session() as session:
        session.add(Log(event=AUDIT_EVENT, owner=user_name(user), extra=json.dumps(extra), **kwargs))
