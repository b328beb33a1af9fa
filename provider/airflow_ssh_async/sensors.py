"""SSHAsyncJobSensor: Ansible's ``async_status`` for Airflow."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowException
from airflow.triggers.base import StartTriggerArgs

from airflow_ssh_async.ansible import DEFAULT_ANSIBLE_ASYNC_DIR, SOURCE_AIRFLOW, SOURCE_ANSIBLE, validate_source
from airflow_ssh_async.client import RemoteHost
from airflow_ssh_async.hooks import SSHAsyncJobHook
from airflow_ssh_async.job import DEFAULT_ASYNC_DIR, JobRef
from airflow_ssh_async.masking import Masker, airflow_min_length, task_secrets
from airflow_ssh_async.outcome import exit_codes, settle
from airflow_ssh_async.triggers import SSHAsyncJobTrigger
from airflow_ssh_async.watch import Watch, new_watch


class SSHAsyncJobSensor(BaseSensorOperator):
    """Wait for a job launched earlier (by id: from XCom, or typed days later).

    Succeeds with the job's result dict when it succeeded; fails (or skips,
    per ``skip_on_exit_code``) when it did not; a job that does not exist
    fails at once with the host and folder it looked in.

    Each poke is one check of the trigger's watch (watch.py). A poke that
    finds the job ended logs the last ``tail_bytes`` of its stdout and stderr
    (stderr as warnings, as the trigger does); while it runs, a sensor that
    pokes in its worker (``mode="poke"``) logs each new line from its first
    poke on, and a deferred one leaves the log to the trigger, which logs
    the output from its first byte.

    :param ssh_conn_id: Airflow `ssh` connection of the host.
    :param job_id: the job to watch. Templated.
    :param async_dir: where it was launched (as given at launch; ``~`` is
        resolved on the host the same way). Templated.
    :param job_dir: its absolute folder, overriding async_dir/job_id. Templated.
    :param deferrable: wait in the triggerer (default) instead of a worker.
    :param start_from_trigger: with ``deferrable``, start straight in the
        triggerer: the task never takes a worker slot.
    :param kill_on_cancel: cancel the job when this sensor is marked
        failed or success (not on a clear). Off by default: the sensor only watches.
    :param stream_output: stream the job's output into this task's log.
    :param skip_on_exit_code: exit codes that skip instead of fail.
    :param source: ``"airflow-ssh-async"`` (default): a job this provider
        launched; ``"ansible"``: a job Ansible launched with ``async``/
        ``poll: 0``, ``job_id`` being its jid (``ansible_job_id``) and
        ``job_dir``, if given, the full path of its result file. The result
        dict has the same keys; output comes at the end, from Ansible's result.
        See airflow_ssh_async.ansible for what liveness Ansible's file allows.
    :param ansible_async_dir: where Ansible keeps its result files; left at
        the default, the host's ``$ANSIBLE_ASYNC_DIR`` wins, as for Ansible. Templated.
    :param secrets: values to mask in this sensor's log and result, e.g. the
        ``"{{ conn.db.password }}"`` the job's environment held: a sensor
        cannot know what another task passed to the job. Templated (with
        ``start_from_trigger``, rendered in the triggerer and kept nowhere).
        Everything Airflow masks in this task's log is masked too.
    :param become_user: the user the job was launched as (the operator's
        ``become_user``): status reads, output and the cancel run as that
        user. Default: the connection's ``become_user`` extra. Templated.
    :param become_method: ``sudo`` (default) or ``doas``. Templated.
    """

    template_fields = (
        "job_id",
        "async_dir",
        "job_dir",
        "ansible_async_dir",
        "secrets",
        "become_user",
        "become_method",
    )
    ui_color = "#e3f1f8"
    start_trigger_args = StartTriggerArgs(
        trigger_cls="airflow_ssh_async.triggers.SSHAsyncJobTrigger",
        trigger_kwargs={},
        next_method="execute_complete",
        next_kwargs=None,
        timeout=None,
    )
    start_from_trigger = False

    def __init__(
        self,
        *,
        ssh_conn_id: str,
        job_id: str,
        async_dir: str = DEFAULT_ASYNC_DIR,
        job_dir: str = "",
        deferrable: bool = True,
        start_from_trigger: bool = False,
        kill_on_cancel: bool = False,
        stream_output: bool = True,
        skip_on_exit_code: int | Iterable[int] | None = None,
        source: str = SOURCE_AIRFLOW,
        ansible_async_dir: str = DEFAULT_ANSIBLE_ASYNC_DIR,
        secrets: str | list[str] | None = None,
        become_user: str | None = None,
        become_method: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.become_user = become_user
        self.become_method = become_method
        self.source = validate_source(source)
        self.ansible_async_dir = ansible_async_dir
        if source == SOURCE_ANSIBLE and kill_on_cancel:
            raise ValueError(
                f"{self.task_id}: kill_on_cancel cannot be used with source='ansible': Ansible has no way "
                "to cancel an async job"
            )
        self.ssh_conn_id = ssh_conn_id
        self.job_id = job_id
        self.async_dir = async_dir
        self.job_dir = job_dir
        self.secrets = [secrets] if isinstance(secrets, str) else list(secrets or [])
        self._masker: Masker | None = None
        self._watch: Watch | None = None  # kept from poke to poke (mode="poke")
        self._job_hook: SSHAsyncJobHook | None = None
        self.deferrable = deferrable
        self.kill_on_cancel = kill_on_cancel
        self.stream_output = stream_output
        self.skip_on_exit_code = exit_codes(skip_on_exit_code)
        if deferrable and start_from_trigger:
            self.start_from_trigger = True
            # Replaced rather than mutated: start_trigger_args is a class attribute.
            self.start_trigger_args = dataclasses.replace(
                self.start_trigger_args,
                trigger_kwargs=self._trigger_kwargs(),
                timeout=timedelta(seconds=self.timeout) if self.timeout else None,
            )

    def _trigger_kwargs(self) -> dict[str, Any]:
        return {
            "ssh_conn_id": self.ssh_conn_id,
            "job_id": self.job_id,
            "job_dir": self.job_dir,
            "async_dir": self.async_dir,
            "poll_interval": float(self.poke_interval),
            "kill_on_cancel": self.kill_on_cancel,
            "stream_output": self.stream_output,
            "source": self.source,
            "ansible_async_dir": self.ansible_async_dir,
            "secrets": self.secrets,
            "become_user": self.become_user or "",
            "become_method": self.become_method or "",
        }

    def _task_masker(self) -> Masker:
        """In the worker, after rendering: SECRETS and what Airflow masks in this task's log."""
        if self._masker is None:
            self._masker = Masker(task_secrets(extra=self.secrets), airflow_min_length())
        return self._masker

    def _hook(self) -> SSHAsyncJobHook:
        if self._job_hook is None:
            self._job_hook = SSHAsyncJobHook(self.ssh_conn_id, self.async_dir, self.become_user, self.become_method)
        return self._job_hook

    def _new_watch(self) -> Watch:
        return new_watch(
            self._hook(),
            JobRef(self.ssh_conn_id, self.job_id, self.job_dir),
            log=self.log,
            source=self.source,
            ansible_async_dir=self.ansible_async_dir,
            stream_output=self.stream_output,
            masker=self._task_masker(),
            from_tail=True,
        )

    def poke(self, context: Context) -> PokeReturnValue:
        """One check of the watch: done with the result, or not yet."""
        watch = self._watch = self._watch or self._new_watch()

        async def check(host: RemoteHost) -> dict[str, Any] | None:
            async with watch.attached(host):
                return await watch.check()

        event = self._hook().run_sync(check)
        if event is None:
            self.log.info("%s", watch.describe())
            return PokeReturnValue(is_done=False)
        event = self._task_masker().redact(event)
        if event["status"] != "finished":
            raise AirflowException(f"{self.task_id}: {event['message']}")
        return PokeReturnValue(is_done=True, xcom_value=settle(event, self.skip_on_exit_code))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        # Poke once: a job that already ended needs no trigger.
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        kwargs = {**self._trigger_kwargs(), "secrets": list(self._task_masker().secrets)}
        self.defer(
            trigger=SSHAsyncJobTrigger(**kwargs),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        return settle(event, self.skip_on_exit_code)
