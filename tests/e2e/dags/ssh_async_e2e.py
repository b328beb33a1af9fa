"""DAGs of the e2e scenarios (tests/e2e/test_scenarios.py), run by a real Airflow.

Job ids and commands come from each run's conf, so every test has its own
job on the test sshd. Connections are the ``AIRFLOW_CONN_*`` variables the
session sshd fixture and tests/e2e/conftest.py put in the stack's environment.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_ssh_async import SSHAsyncJobOperator, SSHAsyncJobSensor

START = pendulum.datetime(2026, 1, 1, tz="UTC")
CONF_JOB = "{{ dag_run.conf['job_id'] }}"
CONF_COMMAND = "{{ dag_run.conf['command'] }}"
CONN = "test_asyncdash"
# A bad input must fail at once: were it retried, the test would see up_for_retry.
NO_QUICK_RETRY = {"retries": 2, "retry_delay": timedelta(minutes=10)}


def dag(dag_id: str, **kwargs) -> DAG:
    return DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["e2e"], max_active_runs=16, **kwargs)


# Scenarios 1-5 and 7: launch, defer, watch, with the defaults a DAG author gets.
with dag("e2e_job"):
    SSHAsyncJobOperator(task_id="job", ssh_conn_id=CONN, job_id=CONF_JOB, command=CONF_COMMAND, poll_interval=1)

# Scenarios 6 and 10: how fast an ended job is noticed, counted in poll intervals.
with dag("e2e_watch_2s"):
    SSHAsyncJobOperator(task_id="job", ssh_conn_id=CONN, job_id=CONF_JOB, command=CONF_COMMAND, poll_interval=2)

# Scenario 8: the remote time limit; the job ignores SIGTERM, so SIGKILL must follow.
# Not shorter: a trigger that fires within seconds of the deferral can lose an
# Airflow scheduler race on a loaded machine (docs/reliability.md, note 5).
TIME_LIMIT_S = 8
with dag("e2e_timeout"):
    SSHAsyncJobOperator(
        task_id="job", ssh_conn_id=CONN, job_id=CONF_JOB, command=CONF_COMMAND,
        job_timeout=TIME_LIMIT_S, grace=1, poll_interval=1,
    )  # fmt: skip

# Scenario 9: the first try's job fails, the second try's succeeds.
with dag("e2e_retry", default_args={"retries": 1, "retry_delay": timedelta(seconds=1)}):
    SSHAsyncJobOperator(task_id="job", ssh_conn_id=CONN, job_id=CONF_JOB, command=CONF_COMMAND, poll_interval=1)

# Scenario 11: fire and forget in one run, the sensor in a later run.
with dag("e2e_launch_only"):
    SSHAsyncJobOperator(
        task_id="launch", ssh_conn_id=CONN, job_id=CONF_JOB, command=CONF_COMMAND, wait_for_completion=False
    )

with dag("e2e_sensor"):
    SSHAsyncJobSensor(
        task_id="watch", ssh_conn_id=CONN, job_id=CONF_JOB, poke_interval=1, timeout=300, start_from_trigger=True
    )

# Scenario 12: a DAG author's mistakes, one task each.
BAD_COMMAND = 'echo ran >> "$HOME/ran-$AIRFLOW_ASYNC_JOB_ID"; sleep 60'
with dag("e2e_bad_input", default_args=NO_QUICK_RETRY):
    SSHAsyncJobOperator(
        task_id="unknown_conn", ssh_conn_id="e2e_no_such_conn", job_id=CONF_JOB + "-unknown-conn",
        command=BAD_COMMAND,
    )  # fmt: skip
    SSHAsyncJobOperator(
        task_id="wrong_key", ssh_conn_id="e2e_wrong_key", job_id=CONF_JOB + "-wrong-key", command=BAD_COMMAND
    )
    SSHAsyncJobOperator(
        task_id="host_key_mismatch", ssh_conn_id="e2e_bad_host_key", job_id=CONF_JOB + "-host-key",
        command=BAD_COMMAND,
    )  # fmt: skip
    SSHAsyncJobOperator(
        task_id="missing_cwd", ssh_conn_id=CONN, job_id=CONF_JOB + "-cwd", command=BAD_COMMAND,
        cwd="/nonexistent/" + CONF_JOB,
    )  # fmt: skip
    SSHAsyncJobOperator(task_id="invalid_job_id", ssh_conn_id=CONN, job_id=CONF_JOB + "/../../etc", command=BAD_COMMAND)
