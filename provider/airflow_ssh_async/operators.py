"""SSHAsyncJobOperator: launch a detached remote job, then wait for it without a worker.

Its parts: the checks at DAG parse time (operator_checks.py), the launch or
re-attach and its limits (operator_launch.py, LaunchingOperator); here the
parameters, the wait (deferred or in the worker) and the settling of the
result (XCom, the delivered marker, cleanup).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from airflow.sdk import Context
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowTaskTimeout

from airflow_ssh_async.errors import JobRunningError, SSHAsyncJobError
from airflow_ssh_async.hooks import DEFAULT_GRACE, SSHAsyncJobHook, cancel_bound
from airflow_ssh_async.job import (
    DEFAULT_ASYNC_DIR,
    DEFAULT_OUTPUT_LIMIT,
    TAIL_BYTES,
    JobRef,
    JobState,
    delivery_marker,
    job_event,
)
from airflow_ssh_async.limits import deferral_timeout
from airflow_ssh_async.masking import SECRETS_KEY, Masker, airflow_min_length, seal_for, task_secrets, unseal_for
from airflow_ssh_async.operator_checks import check_arguments, check_become, check_output_limit
from airflow_ssh_async.operator_launch import LaunchingOperator
from airflow_ssh_async.outcome import exit_codes, settle
from airflow_ssh_async.triggers import SSHAsyncJobTrigger
from airflow_ssh_async.watch import watch_job

# The deferral timeout is the remote limit plus this much, so the remote
# limit fires first and the task reports timed_out with the job stopped.
DEFERRAL_MARGIN = 120


class SSHAsyncJobOperator(LaunchingOperator):
    """Run COMMAND on a host as a detached job, like Ansible's ``async``.

    The job outlives the SSH session and the worker. With
    ``deferrable=True`` (default) the worker slot is freed at once and a
    trigger watches the job; a retry or a clear of the task finds the same
    job id (derived from dag, task, run and map index) and follows
    ``on_existing``.

    :param command: shell text run with ``/bin/sh`` on the host, verbatim
        (multi-line scripts, heredocs, ``exit N`` all work). Templated. A
        value ending in ``.sh`` is a command, not a template file.
    :param ssh_conn_id: Airflow connection of type ``ssh``. Templated.
    :param environment: variables for the job; sent on stdin, never in argv,
        so secrets do not show in ``ps``. Templated. Values whose names
        Airflow deems sensitive are masked in the log and the result, as
        is everything Airflow masks in this task's log (see "Secrets" in
        docs/reference.md).
    :param cwd: working directory on the host (default: the SSH user's home). Templated.
    :param job_id: the job's name on the host (default: derived). Templated.
    :param job_timeout: remote time limit in seconds (Ansible's ``async``):
        SIGTERM to the job's process group, SIGKILL ``grace`` s later.
        Airflow's ``execution_timeout`` also ends the job, counted from the
        try's start, deferred or not: the host enforces the sooner of the two
        and the task fails with ``AirflowTaskTimeout`` naming the limit.
    :param wait_for_completion: False is Ansible's ``poll: 0``: launch, return
        the job reference (XCom) and succeed.
    :param poll_interval: seconds between status checks.
    :param deferrable: wait in the triggerer (True) or in the worker (False).
    :param on_existing: ``reattach`` (default), ``rerun`` or ``fail``; see docs/reference.md "on_existing".
    :param kill_on_cancel: cancel the remote job when the task is marked
        failed or success while waiting. A clear does not cancel: the next
        try re-attaches to the running job.
    :param async_dir: where job folders live on the host. Templated.
    :param cleanup: ``never`` (default), ``on_success`` or ``always``: remove
        the job folder once the result is taken.
    :param skip_on_exit_code: exit codes that skip the task instead of failing it.
    :param tail_bytes: bytes of stdout and stderr kept in the result.
    :param connection_patience: seconds of failed polls before giving up.
    :param grace: seconds between SIGTERM and SIGKILL.
    :param stream_output: log the job's new stdout, stderr and progress
        lines while it runs (the result keeps the tails either way).
    :param become_user: run the job (its supervisor, its files, every later
        status read and cancel) as this user on the host, like Ansible's
        ``become_user``, through ``sudo -n`` (or ``doas -n``): the host needs
        a rule letting the SSH user run ``/bin/sh`` as it without a password
        (see "Running as another user" in docs/reference.md). ``~``, the
        default ``cwd`` and ``async_dir`` are then that user's. Default: the
        connection's ``become_user`` extra, else none. Templated.
    :param become_method: ``sudo`` (default) or ``doas``. Templated.
    :param output_limit: bytes each of stdout and stderr may store on the
        host (default 1 GiB; 0: no cap). Past it the job runs on, its further
        output is counted, not stored; the log and the result say how much
        was dropped.
    """

    template_fields = (
        "command",
        "ssh_conn_id",
        "environment",
        "cwd",
        "job_id",
        "async_dir",
        "become_user",
        "become_method",
    )
    template_fields_renderers = {"command": "bash", "environment": "json"}
    template_ext = ()  # a command ending in .sh is run, not loaded as a template
    ui_color = "#e3f1f8"

    def __init__(
        self,
        *,
        command: str,
        ssh_conn_id: str = "ssh_default",
        environment: dict[str, str] | None = None,
        cwd: str | None = None,
        job_id: str | None = None,
        job_timeout: int | timedelta | None = None,
        wait_for_completion: bool = True,
        poll_interval: float = 10.0,
        deferrable: bool = True,
        on_existing: str = "reattach",
        kill_on_cancel: bool = True,
        async_dir: str = DEFAULT_ASYNC_DIR,
        cleanup: str = "never",
        skip_on_exit_code: int | Iterable[int] | None = None,
        tail_bytes: int = TAIL_BYTES,
        connection_patience: float = 300.0,
        grace: int = DEFAULT_GRACE,
        stream_output: bool = True,
        become_user: str | None = None,
        become_method: str | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.output_limit = check_output_limit(self.task_id, output_limit)
        self.on_existing = check_arguments(self.task_id, command, environment, job_id, cleanup, on_existing)
        check_become(self.task_id, become_user, become_method)
        self.become_user = become_user
        self.become_method = become_method
        self.command = command
        self.ssh_conn_id = ssh_conn_id
        self.environment = environment
        self.cwd = cwd
        self.job_id = job_id
        self.job_timeout = int(job_timeout.total_seconds()) if isinstance(job_timeout, timedelta) else job_timeout
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.deferrable = deferrable
        self.kill_on_cancel = kill_on_cancel
        self.async_dir = async_dir
        self.cleanup = cleanup
        self.skip_on_exit_code = exit_codes(skip_on_exit_code)
        self.tail_bytes = tail_bytes
        self.connection_patience = connection_patience
        self.grace = grace
        self.stream_output = stream_output
        self._watching: JobRef | None = None
        self._secrets: list[str] = []
        self._masker = Masker()
        self._limit = None  # the limit that ends the watched job first, as of its launch or attach
        self._try_start = None

    def _keep_secrets(self, context: Context) -> None:
        """This task's secrets, sealed with Airflow's Fernet key together with the task
        instance they belong to, in its task_state_store (``ssh_async_secrets``), before
        the job starts.

        The Remote jobs view masks the job's output with them (ui/sources.py)
        for as long as Airflow keeps the run, also once the task has ended
        and its trigger (which carries them while it waits) is gone. Every
        try adds its secrets to the earlier tries' (a rotated password stays
        masked in an older attempt's output). Never stored in clear: without
        a ``[core] fernet_key`` nothing is kept, and the view can then mask
        the output only while the task is deferred.
        """
        store = context.get("task_state_store")
        if store is None or not self._secrets:
            return
        owner = self._origin(context)
        old = store.get(SECRETS_KEY)
        try:
            kept = set(unseal_for(owner, old)) if old else set()
        except ValueError:  # sealed under a Fernet key since rotated away, or not ours: replaced
            kept = set()
        if old and kept >= set(self._secrets):
            return
        token = seal_for(owner, sorted(kept | set(self._secrets)))
        if token is None:
            self.log.info(
                "no [core] fernet_key: the secrets of task %s are not kept for the Remote jobs view, which "
                "masks its job's output only while the task waits in the triggerer",
                self.task_id,
            )
            return
        from airflow.sdk.execution_time.context import NEVER_EXPIRE

        store.set(SECRETS_KEY, token, retention=NEVER_EXPIRE)

    def execute(self, context: Context) -> Any:
        if not str(self.command).strip():
            raise AirflowFailException(f"{self.task_id}: the command rendered empty: nothing to run")
        job_id = self._resolve_job_id(context)
        # After rendering: what Airflow masks in this task's log, wherever the output is written.
        self._secrets = task_secrets(self.environment)
        self._masker = Masker(self._secrets, airflow_min_length())
        self._keep_secrets(context)
        hook = self._hook()
        try:
            ref, taken = hook.run_sync(lambda host: self._start_or_attach(hook, host, job_id, context))
        except SSHAsyncJobError as exc:
            if exc.permanent:
                raise AirflowFailException(f"{self.task_id}: {exc}") from None
            raise
        if taken is not None:
            return self._settle(context, job_event("finished", "result taken", ref, taken))
        if not self.wait_for_completion:
            self.log.info("wait_for_completion=False: job %s runs on; watch it with SSHAsyncJobSensor", job_id)
            return ref.to_dict()
        self._watching = ref
        if self.deferrable:
            self.defer(trigger=self._trigger(ref), method_name="execute_complete", timeout=self._deferral_timeout())
        return self._settle(context, asyncio.run(self._watch_here(hook, ref, self.poll_interval)))

    async def _watch_here(self, hook: SSHAsyncJobHook, ref: JobRef, poll_interval: float) -> dict[str, Any]:
        """Wait for the job in this process (the worker), as the trigger would in the triggerer."""
        return await watch_job(
            hook,
            ref,
            log=self.log,
            poll_interval=poll_interval,
            tail_bytes=self.tail_bytes,
            connection_patience=self.connection_patience,
            stream_output=self.stream_output,
            masker=self._masker,
        )

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """The deferral's backstop timeout ends the task as the host's limit would, not as TaskDeferralTimeout.

        It fires only when no triggerer reported the job's end in time (the
        host's limit + grace + margin). The host has enforced the limit on its
        own, so the worker asks it once: an ended job settles exactly as the
        trigger's event would (a limit fails with ``AirflowTaskTimeout`` and the
        result in XCom); a job still running after ``grace`` and 25 s more is
        cancelled, and the task fails as timed out all the same.
        """
        if next_method != TRIGGER_FAIL_REPR or (next_kwargs or {}).get("error") != TriggerFailureReason.TRIGGER_TIMEOUT:
            return super().resume_execution(next_method, next_kwargs, context)
        job_id = self._resolve_job_id(context)
        self._secrets = task_secrets(self.environment)
        self._masker = Masker(self._secrets, airflow_min_length())
        hook = self._hook()
        ref = JobRef(self.ssh_conn_id, job_id, hook.job_dir(job_id))
        self.log.warning(
            "No triggerer reported job %s's end before the deferral's timeout (is a triggerer running? "
            "`airflow jobs check --job-type TriggererJob`): asking %s for the job's end from the worker",
            job_id, self.ssh_conn_id,
        )  # fmt: skip
        try:
            event = asyncio.run(asyncio.wait_for(self._watch_here(hook, ref, 1.0), cancel_bound(self.grace)))
        except (TimeoutError, SSHAsyncJobError) as exc:
            state = "still runs" if isinstance(exc, TimeoutError) else f"could not be read ({exc})"
            try:
                hook.cancel(ref.job_dir, grace=self.grace)
            except SSHAsyncJobError as cancel_exc:
                state += f"; the cancel failed too ({cancel_exc}): kill it with `airflow-ssh-async kill {job_id}`"
            raise AirflowTaskTimeout(
                f"job {job_id!r} on {self.ssh_conn_id}: the deferral's timeout passed and the job {state}"
            ) from None
        return self._settle(context, event)

    def _trigger(self, ref: JobRef) -> SSHAsyncJobTrigger:
        return SSHAsyncJobTrigger(
            ssh_conn_id=self.ssh_conn_id,
            job_id=ref.job_id,
            job_dir=ref.job_dir,
            async_dir=self.async_dir,
            poll_interval=self.poll_interval,
            kill_on_cancel=self.kill_on_cancel,
            tail_bytes=self.tail_bytes,
            connection_patience=self.connection_patience,
            grace=self.grace,
            stream_output=self.stream_output,
            secrets=self._secrets,
            become_user=self.become_user or "",
            become_method=self.become_method or "",
        )

    def _deferral_timeout(self) -> timedelta | None:
        return deferral_timeout(self._limit, self.grace, max(DEFERRAL_MARGIN, 3 * self.poll_interval))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        return self._settle(context, event)

    def _settle(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        result = event.get("result")
        if result is not None:
            context["ti"].xcom_push(key="result", value=result)
        try:
            result = settle(event, self.skip_on_exit_code)
        except (AirflowException, AirflowTaskTimeout):
            self._cleanup(result, succeeded=False)
            raise
        store = context.get("task_state_store")
        if store is not None:
            from airflow.sdk.execution_time.context import NEVER_EXPIRE

            marker = delivery_marker(result["pid"], result["start_time"])
            store.set(self._delivered_key(result["job_id"]), marker, retention=NEVER_EXPIRE)
        self._cleanup(result, succeeded=True)
        return result

    def _cleanup(self, result: dict[str, Any] | None, *, succeeded: bool) -> None:
        if result is None or self.cleanup == "never" or (self.cleanup == "on_success" and not succeeded):
            return
        if JobState(result["state"]) in (JobState.RUNNING, JobState.STARTING):
            return
        try:
            # archive.sh refuses a folder while any process of the job's
            # group runs (a lost job outliving its supervisor): never deleted.
            self._hook().archive(result["job_dir"], remove=True)
            self.log.info("cleanup=%s: removed %s", self.cleanup, result["job_dir"])
        except JobRunningError as exc:
            self.log.warning("cleanup=%s: left %s in place: %s", self.cleanup, result["job_dir"], exc)
        except SSHAsyncJobError as exc:
            self.log.warning("cleanup=%s: could not remove %s: %s", self.cleanup, result["job_dir"], exc)

    def on_kill(self) -> None:
        """The task was killed while waiting in the worker: cancel the remote job too."""
        ref = self._watching
        if ref is None or not self.kill_on_cancel:
            return
        # on_kill runs while asyncio.run() owns this thread: cancel from another.
        worker = threading.Thread(target=lambda: self._hook().cancel(ref.job_dir, grace=self.grace), daemon=True)
        worker.start()
        worker.join(cancel_bound(self.grace))
