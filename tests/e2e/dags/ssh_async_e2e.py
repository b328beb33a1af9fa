"""DAGs of the e2e scenarios (tests/e2e/test_scenarios.py), run by a real Airflow.

Job ids and commands come from each run's conf, so every test has its own
job on the test sshd. Connections are the ``AIRFLOW_CONN_*`` variables the
session sshd fixture and tests/e2e/conftest.py put in the stack's environment.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.ssh.operators.ssh import SSHOperator
from airflow.sdk import DAG, task

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

# Secrets (issue 21): a connection password, a sensitive-named variable, a
# mask_secret value and a literal under a sensitive env name, each echoed by the
# job; SSHOperator with the same script and values is Airflow's own reference.
# The values come from the stack's environment (tests/e2e/conftest.py).
# The first sleep lets the scheduler take the deferring worker's exit before the
# trigger fires: a job that ends within a scheduler loop or two of its deferral
# meets Airflow's stale-executor-event race (docs/troubleshooting.md) under load.
SECRET_SCRIPT = """\
sleep 8
echo "dsn=postgres://app:$DB_PASSWORD@db/app"
echo "api=$API_VALUE ctx=$RUN_CONTEXT tok=$SERVICE_TOKEN"
echo "err $API_VALUE" >&2
echo "step $DB_PASSWORD" >> "${AIRFLOW_ASYNC_PROGRESS:-/dev/null}"
printf 'split=%s' "$(printf %s "$DB_PASSWORD" | cut -c1-7)"; sleep 2
printf '%s@db\\n' "$(printf %s "$DB_PASSWORD" | cut -c8-)"
printf '%8000s' '' | tr ' ' x; printf '%s\\n' "$DB_PASSWORD"
printf '%65530s' '' | tr ' ' y; printf '%s\\n' "$DB_PASSWORD"
echo done
"""
SECRET_ENV = {
    "DB_PASSWORD": "{{ conn.e2e_db.password }}",
    "API_VALUE": "{{ var.value.e2e_api_secret }}",
    "RUN_CONTEXT": "{{ issued_context() }}",
    "SERVICE_TOKEN": os.environ.get("E2E_SERVICE_TOKEN", "unset-service-token"),
}


def issued_context() -> str:
    """A value the DAG registers with mask_secret while rendering, in the task's own process."""
    from airflow.sdk.log import mask_secret

    value = os.environ.get("E2E_CONTEXT_SECRET", "unset-context-secret")
    mask_secret(value)
    return value


with dag("e2e_secrets", user_defined_macros={"issued_context": issued_context}):
    SSHAsyncJobOperator(
        task_id="ours", ssh_conn_id=CONN, job_id=CONF_JOB, command=SECRET_SCRIPT, environment=SECRET_ENV,
        poll_interval=1,
    )  # fmt: skip
    SSHAsyncJobOperator(
        task_id="ours_in_worker", ssh_conn_id=CONN, job_id=CONF_JOB + "-worker", command=SECRET_SCRIPT,
        environment=SECRET_ENV, poll_interval=1, deferrable=False,
    )  # fmt: skip
    SSHOperator(
        task_id="reference", ssh_conn_id=CONN, cmd_timeout=60,
        # The test sshd accepts no client environment: the same values, exported in the command.
        command="".join(f"export {k}='{v}'\n" for k, v in SECRET_ENV.items()) + SECRET_SCRIPT,
    )  # fmt: skip
    launched = SSHAsyncJobOperator(
        task_id="launch", ssh_conn_id=CONN, job_id=CONF_JOB + "-sensed", command=SECRET_SCRIPT,
        environment={k: SECRET_ENV[k] for k in ("DB_PASSWORD", "API_VALUE")}, wait_for_completion=False,
    )  # fmt: skip
    launched >> SSHAsyncJobSensor(
        task_id="watch", ssh_conn_id=CONN, job_id=CONF_JOB + "-sensed", poke_interval=1, timeout=300,
        start_from_trigger=True, secrets=["{{ conn.e2e_db.password }}", "{{ var.value.e2e_api_secret }}"],
    )  # fmt: skip
# The Remote jobs view masks a task's secrets in its job's output while the job runs and
# after it finished (issue 21): one job watched by the trigger, one no task waits for
# (wait_for_completion=False: no trigger ever holds its secrets). Both print the secrets,
# wait for a release file, then print them again.
# Its async_dir is new each test session (tests/e2e/conftest.py ui_secrets_dir).
UI_SECRETS_DIR = os.environ.get("E2E_UI_SECRETS_DIR", "~/.airflow_async_ui_secrets")
UI_SECRET_SCRIPT = """\
echo "dsn=postgres://app:$DB_PASSWORD@db/app"
echo "api=$API_VALUE ctx=$RUN_CONTEXT tok=$SERVICE_TOKEN"
echo "err $API_VALUE" >&2
echo "step $DB_PASSWORD" >> "$AIRFLOW_ASYNC_PROGRESS"
while [ ! -e "$HOME/release-$AIRFLOW_ASYNC_JOB_ID" ] && [ ! -e "$HOME/release-$RELEASE" ]; do sleep 0.2; done
echo "after=$DB_PASSWORD/$API_VALUE/$RUN_CONTEXT"
"""
with dag("e2e_ui_secrets", user_defined_macros={"issued_context": issued_context}):
    for task_id, suffix, wait in (("deferred", "", True), ("launched", "-bg", False)):
        SSHAsyncJobOperator(
            task_id=task_id, ssh_conn_id=CONN, job_id=CONF_JOB + suffix, command=UI_SECRET_SCRIPT,
            environment={**SECRET_ENV, "RELEASE": CONF_JOB}, async_dir=UI_SECRETS_DIR, poll_interval=1,
            wait_for_completion=wait,
        )  # fmt: skip

# Retry after a worker kill: the task waits in the worker (not deferred), so killing
# the worker kills the task; the retry must re-attach to the job, not start it again,
# and give the running job its own try's execution_timeout (issue 22).
WORKER_KILL_EXEC_TIMEOUT_S = 270
with dag("e2e_worker_kill", default_args={"retries": 1, "retry_delay": timedelta(seconds=1)}):
    SSHAsyncJobOperator(
        task_id="job", ssh_conn_id=CONN, job_id=CONF_JOB, command=CONF_COMMAND, deferrable=False, poll_interval=1,
        execution_timeout=timedelta(seconds=WORKER_KILL_EXEC_TIMEOUT_S),
    )  # fmt: skip

# Mapped tasks over hosts, and the Celery load scenario: one mapped task per
# entry of conf["jobs"] ({"ssh_conn_id", "job_id", "command"}).
with dag("e2e_mapped", max_active_tasks=512):

    @task
    def jobs(**context) -> list[dict[str, str]]:
        return list(context["dag_run"].conf["jobs"])

    SSHAsyncJobOperator.partial(task_id="job", poll_interval=2, max_active_tis_per_dag=512).expand_kwargs(jobs())


# Issue 22: Airflow's execution_timeout ends the remote job, also while deferred.
EXEC_TIMEOUT_S = 8
EXEC_GRACE_S = 2
EXEC_CLEAR_TIMEOUT_S = 20
JOB_LIMIT_S = 4
# Long enough for the task to defer first on a loaded machine (a worker can take 15 s to start).
DAGRUN_TIMEOUT_S = 30


def note_failure(context: dict[str, Any]) -> None:
    """on_failure_callback: the exception's class, in the file the run's conf names."""
    marker = context["dag_run"].conf.get("marker")
    if marker:
        Path(marker).write_text(type(context.get("exception")).__name__)


EXEC = {"execution_timeout": timedelta(seconds=EXEC_TIMEOUT_S), "grace": EXEC_GRACE_S, "poll_interval": 1}
with dag(
    "e2e_exec_timeout",
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1), "on_failure_callback": note_failure},
):
    SSHAsyncJobOperator(task_id="job", ssh_conn_id=CONN, job_id=CONF_JOB, command=CONF_COMMAND, **EXEC)

with dag("e2e_exec_once"):
    SSHAsyncJobOperator(task_id="job", ssh_conn_id=CONN, job_id=CONF_JOB, command=CONF_COMMAND, **EXEC)

with dag("e2e_exec_job_limit"):
    SSHAsyncJobOperator(
        task_id="job", ssh_conn_id=CONN, job_id=CONF_JOB, command=CONF_COMMAND, job_timeout=JOB_LIMIT_S,
        # Far above job_timeout: a loaded worker can launch 10-25 s after the try's start,
        # and then what is left of an 8 s execution_timeout would rightly win.
        **{**EXEC, "execution_timeout": timedelta(seconds=JOB_LIMIT_S + 40)},
    )  # fmt: skip

with dag("e2e_exec_clear"):
    SSHAsyncJobOperator(
        task_id="job", ssh_conn_id=CONN, job_id=CONF_JOB, command=CONF_COMMAND, poll_interval=1, grace=EXEC_GRACE_S,
        execution_timeout=timedelta(seconds=EXEC_CLEAR_TIMEOUT_S),
    )  # fmt: skip

with dag("e2e_dagrun_timeout", dagrun_timeout=timedelta(seconds=DAGRUN_TIMEOUT_S)):
    SSHAsyncJobOperator(task_id="job", ssh_conn_id=CONN, job_id=CONF_JOB, command=CONF_COMMAND, poll_interval=1)

# The Remote jobs view (tests/e2e/test_ui*.py): an async_dir of its own, so that what the
# view lists is only these tests' jobs (the test users' homes are shared by every test).
UI_ASYNC_DIR = "~/.airflow_async_ui"
with dag("e2e_ui"):
    SSHAsyncJobOperator(
        task_id="job", ssh_conn_id=CONN, job_id=CONF_JOB, command=CONF_COMMAND, poll_interval=1,
        async_dir=UI_ASYNC_DIR,
    )  # fmt: skip

# A task's become_user (issue 19): the view lists, follows and kills its job as that user.
# The sudoers rule exists only while tests/e2e/test_ui.py's become test runs.
UI_BECOME_DIR = "~/.airflow_async_ui_become"
with dag("e2e_ui_become"):
    SSHAsyncJobOperator(
        task_id="job", ssh_conn_id=CONN, job_id=CONF_JOB, command=CONF_COMMAND, poll_interval=1,
        async_dir=UI_BECOME_DIR, become_user="asynctarget",
    )  # fmt: skip
