"""Secrets stay masked (issue 21), on a real Airflow: log, XCom, trigger table.

One run of the ``e2e_secrets`` DAG: the job echoes a connection password, a
sensitive-named variable, a ``mask_secret`` value and a literal under a
sensitive env name, also across a read boundary, at the end of an 8 KB
line and across the 64 KiB boundary of reads and log pieces; watched by the trigger, by the operator's own wait in the worker, and by
a sensor started in the triggerer. ``SSHOperator`` with the same script is
Airflow's own reference.
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy

from tests.e2e.conftest import RemoteJobs
from tests.e2e.test_scenarios import finish, rerun_on_stale_defer_exit
from tests.harness.airflow_stack import AirflowStack

pytestmark = pytest.mark.e2e
DAG_ID = "e2e_secrets"


def trigger_kwargs(db: sqlalchemy.engine.Engine) -> list[str]:
    """The kwargs column of every trigger row now, as stored (SQLite file or PostgreSQL)."""
    try:
        with db.connect() as conn:
            return [str(row[0]) for row in conn.execute(sqlalchemy.text("SELECT kwargs FROM trigger"))]
    except sqlalchemy.exc.OperationalError:  # SQLite locked by a writer this instant: next round
        return []


# Both stacks: on Celery the worker that rendered the secrets and the triggerer that
# streams the output share no process, environment or machine-local file.
@pytest.mark.timeout(420)
@rerun_on_stale_defer_exit  # Airflow's scheduler race (docs/troubleshooting.md), never the secrets
def test_secrets_never_reach_the_task_log_the_result_or_the_trigger_table(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, secret_values: dict[str, str], metrics: dict
) -> None:
    af = airflow_stack
    job_id = remote_jobs.new("secrets")
    run_id = af.trigger_dag(DAG_ID, conf={"job_id": job_id})
    stored: list[str] = []
    deadline = time.monotonic() + 240
    db = sqlalchemy.create_engine(af.db_url, poolclass=sqlalchemy.pool.NullPool)
    try:
        while af.dag_run_state(DAG_ID, run_id) in ("queued", "running") and time.monotonic() < deadline:
            stored += trigger_kwargs(db)
            time.sleep(0.3)
    finally:
        db.dispose()
    finish(af, DAG_ID, run_id, "success", timeout=30)

    secrets = list(secret_values.values())
    # Airflow's own masking, the reference: the worker knows these secrets and masks
    # them in its log. (SSHOperator logs per read, so the secret split across two
    # reads shows in its log in two clear halves: seen as "split=e2e-Db-" / "Pa55-...".)
    reference = af.task_log(DAG_ID, run_id, "reference")
    assert "export DB_PASSWORD='***'" in reference and "export API_VALUE='***'" in reference, reference[-3000:]
    for known in ("api_secret", "context"):
        assert secret_values[known] not in reference, known

    for task_id in ("ours", "ours_in_worker", "watch"):
        log = af.task_log(DAG_ID, run_id, task_id)
        assert "dsn=postgres://app:***@db/app" in log, (task_id, log[-3000:])
        assert "split=***@db" in log, (task_id, "a secret across two reads")
        assert "x" * 100 + "***" in log, (task_id, "a secret at the end of a long line")
        # 65,530 y then the secret: it straddles the 64 KiB read and log-piece boundaries.
        assert log.count("y" * 1000) >= 65, (task_id, "the 64 KiB line is logged whole, in pieces")
        assert "y" * 100 + "***" in log, (task_id, "a secret across the 64 KiB boundary")
        leaked = [s for s in secrets if s in log]
        assert not leaked, f"{task_id}'s log shows {leaked}"
        result = af.xcom(DAG_ID, run_id, task_id)
        assert result["state"] == "succeeded" and "***" in result["stdout_tail"], (task_id, result)
        assert not [s for s in secrets if s in repr(result)], f"{task_id}'s result holds a secret: {result}"
    ours = af.task_log(DAG_ID, run_id, "ours")
    assert "api=*** ctx=*** tok=***" in ours and "err ***" in ours and "progress: step ***" in ours, ours[-3000:]

    assert any('"secrets"' in row for row in stored), f"no trigger row was seen: {stored[:3]}"
    assert not [s for s in secrets if any(s in row for row in stored)], "a trigger row holds a secret in clear"
