"""DAGs the integration tests run with dag.test(), one per behaviour under test.

Commands and job ids come from the run's conf where a test needs its own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_ssh_async import SSHAsyncJobOperator, SSHAsyncJobSensor

START = pendulum.datetime(2026, 1, 1, tz="UTC")
CONF_JOB = "{{ dag_run.conf['job_id'] }}"
CONF_COMMAND = "{{ dag_run.conf['command'] }}"


class CrashOnFirstResult(SSHAsyncJobOperator):
    """Stands for a worker that died after the job ended but before the task finished."""

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if context["ti"].try_number == 1:
            raise RuntimeError("simulated worker loss before the result was taken")
        return super().execute_complete(context, event)


def dag(dag_id: str, **kwargs: Any) -> DAG:
    return DAG(dag_id, schedule=None, start_date=START, catchup=False, **kwargs)


with dag("ssh_async_stream"):
    SSHAsyncJobOperator(
        task_id="job",
        ssh_conn_id="test_asyncdash",
        command="echo start; for i in 1 2 3; do sleep 1; echo line $i; done",
        poll_interval=0.5,
    )

with dag("ssh_async_generic"):
    SSHAsyncJobOperator(
        task_id="job",
        ssh_conn_id="test_asyncdash",
        job_id=CONF_JOB,
        command=CONF_COMMAND,
        environment={"GREETING": "{{ dag_run.conf.get('greeting', 'hi') }}"},
        poll_interval=0.5,
        skip_on_exit_code=[99],
    )

# output_limit (issue 20): a small cap, so a test's writer passes it quickly.
with dag("ssh_async_output_limit"):
    SSHAsyncJobOperator(
        task_id="job",
        ssh_conn_id="test_asyncdash",
        job_id=CONF_JOB,
        command=CONF_COMMAND,
        poll_interval=0.5,
        output_limit=65536,
        # A re-attaching try moves the job's deadline file: the test's sign that the retry is on.
        execution_timeout=timedelta(minutes=10),
    )

# A second try re-attaches: it moves the job's deadline file (execution_timeout), the test's
# sign that the try is on, so the first try's job runs exactly until then.
with dag("ssh_async_reattach"):
    SSHAsyncJobOperator(
        task_id="job",
        ssh_conn_id="test_asyncdash",
        job_id=CONF_JOB,
        command=CONF_COMMAND,
        poll_interval=0.5,
        execution_timeout=timedelta(minutes=10),
    )

with dag("ssh_async_in_worker"):
    SSHAsyncJobOperator(
        task_id="job",
        ssh_conn_id="test_asyncbash",
        job_id=CONF_JOB,
        command=CONF_COMMAND,
        poll_interval=0.5,
        deferrable=False,
    )

# execution_timeout, deferred: Airflow does not time a deferred task; the host ends the job.
with dag("ssh_async_exec_timeout"):
    SSHAsyncJobOperator(
        task_id="job",
        ssh_conn_id="test_asyncdash",
        job_id=CONF_JOB,
        command="echo waiting; sleep 60",
        execution_timeout=timedelta(seconds=3),
        job_timeout=600,
        grace=1,
        poll_interval=0.5,
    )

with dag("ssh_async_timeout"):
    SSHAsyncJobOperator(
        task_id="job",
        ssh_conn_id="test_asyncdash",
        job_id=CONF_JOB,
        command="trap '' TERM; echo waiting; sleep 60",
        job_timeout=1,
        grace=1,
        poll_interval=0.5,
    )

with dag("ssh_async_rerun"):
    SSHAsyncJobOperator(
        task_id="job", ssh_conn_id="test_asyncdash", job_id=CONF_JOB, command=CONF_COMMAND,
        on_existing="rerun", poll_interval=0.5,
    )  # fmt: skip

with dag("ssh_async_fail_existing"):
    SSHAsyncJobOperator(
        task_id="job", ssh_conn_id="test_asyncdash", job_id=CONF_JOB, command=CONF_COMMAND,
        on_existing="fail", poll_interval=0.5,
    )  # fmt: skip

with dag("ssh_async_take_result", default_args={"retries": 1, "retry_delay": timedelta(seconds=0)}):
    CrashOnFirstResult(
        task_id="job",
        ssh_conn_id="test_asyncdash",
        job_id=CONF_JOB,
        command=CONF_COMMAND,
        poll_interval=0.5,
    )

with dag("ssh_async_launch_only"):
    SSHAsyncJobOperator(
        task_id="job",
        ssh_conn_id="test_asyncdash",
        job_id=CONF_JOB,
        command=CONF_COMMAND,
        wait_for_completion=False,
    )

with dag("ssh_async_sensor"):
    SSHAsyncJobSensor(task_id="watch", ssh_conn_id="test_asyncdash", job_id=CONF_JOB, poke_interval=0.5, timeout=60)

with dag("ssh_async_sensor_from_trigger"):
    SSHAsyncJobSensor(
        task_id="watch",
        ssh_conn_id="test_asyncdash",
        job_id=CONF_JOB,
        poke_interval=0.5,
        timeout=60,
        start_from_trigger=True,
    )

with dag("ssh_async_templated_conn"):
    SSHAsyncJobOperator(
        task_id="job",
        ssh_conn_id="{{ dag_run.conf['conn'] }}",
        job_id=CONF_JOB,
        command='echo "as $(id -un)"',
        poll_interval=0.5,
    )

with dag("ssh_async_cleanup_always"):
    SSHAsyncJobOperator(
        task_id="job",
        ssh_conn_id="test_asyncdash",
        job_id=CONF_JOB,
        command=CONF_COMMAND,
        cleanup="always",
        poll_interval=0.5,
    )

# become_user from the run's conf (templated): the job runs as that user
# through sudo -n (tests/integration/test_become.py makes the sudoers rule).
with dag("ssh_async_become"):
    SSHAsyncJobOperator(
        task_id="job",
        ssh_conn_id="test_asyncdash",
        job_id=CONF_JOB,
        command=CONF_COMMAND,
        become_user="{{ dag_run.conf['become_user'] }}",
        poll_interval=0.5,
        grace=1,
        # A re-attaching try moves the job's deadline file: the test's sign that the retry is on.
        execution_timeout=timedelta(minutes=10),
    )
