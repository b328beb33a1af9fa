"""SSHAsyncJobSensor: Ansible's ``async_status`` for Airflow."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowException
from airflow.triggers.base import StartTriggerArgs

from airflow_ssh_async.ansible import (
    DEFAULT_ANSIBLE_ASYNC_DIR,
    SOURCE_AIRFLOW,
    SOURCE_ANSIBLE,
    aansible_status,
    ansible_file,
    ansible_output,
    ansible_request,
    classify_ansible,
    load_ansible_result,
    validate_source,
)
from airflow_ssh_async.client import RemoteHost
from airflow_ssh_async.hooks import SSHAsyncJobHook
from airflow_ssh_async.job import (
    DEFAULT_ASYNC_DIR,
    JobRef,
    JobState,
    JobStatus,
    ProtocolError,
    build_result,
    job_dir,
    job_event,
)
from airflow_ssh_async.masking import Masker, airflow_min_length, task_secrets
from airflow_ssh_async.outcome import settle
from airflow_ssh_async.triggers import SSHAsyncJobTrigger
from airflow_ssh_async.watch import OutputFollower


class SSHAsyncJobSensor(BaseSensorOperator):
    """Wait for a job launched earlier (by id: from XCom, or typed days later).

    Succeeds with the job's result dict when it succeeded; fails (or skips,
    per ``skip_on_exit_code``) when it did not; a job that does not exist
    fails at once with the host and folder it looked in.

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
    """

    template_fields = ("job_id", "async_dir", "job_dir", "ansible_async_dir", "secrets")
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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
        self.deferrable = deferrable
        self.kill_on_cancel = kill_on_cancel
        self.stream_output = stream_output
        if isinstance(skip_on_exit_code, int):
            skip_on_exit_code = [skip_on_exit_code]
        self.skip_on_exit_code = list(skip_on_exit_code or [])
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
        }

    def _task_masker(self) -> Masker:
        """In the worker, after rendering: SECRETS and what Airflow masks in this task's log."""
        if self._masker is None:
            self._masker = Masker(task_secrets(extra=self.secrets), airflow_min_length())
        return self._masker

    def _ref(self) -> JobRef:
        return JobRef(self.ssh_conn_id, self.job_id, self.job_dir or job_dir(self.async_dir, self.job_id))

    def poke(self, context: Context) -> PokeReturnValue:
        """One status read: done with the result, or not yet."""
        if self.source == SOURCE_ANSIBLE:
            return self._poke_ansible()
        hook = SSHAsyncJobHook(self.ssh_conn_id, self.async_dir)
        ref = self._ref()
        masker = self._task_masker()

        async def look(host: RemoteHost) -> tuple[JobRef, JobStatus, dict[str, Any] | None]:
            status, facts = (await hook.astatus([ref.job_dir], host=host))[ref.job_dir]
            found = dataclasses.replace(ref, job_dir=facts.path or ref.job_dir, host=host.options.address)
            if not status.state.finished or status.state is JobState.MISSING:
                return found, status, None
            return found, status, await hook.afinished_result(found, status, host=host, masker=masker)

        ref, status, result = hook.run_sync(look)
        if status.state is JobState.MISSING:
            raise AirflowException(
                f"{self.task_id}: job {ref.job_id!r} has no folder {ref.job_dir} on {ref.host}: it was never "
                "launched there or was removed. Check job_id, the connection and async_dir."
            )
        if not status.state.finished:
            self.log.info("job %s on %s is %s", ref.job_id, ref.host, status.state.value)
            return PokeReturnValue(is_done=False)
        if self.stream_output and result is not None:
            for line in result["stdout_tail"].splitlines():
                self.log.info("%s", line)
        return PokeReturnValue(
            is_done=True, xcom_value=settle(job_event("finished", "", ref, result), self.skip_on_exit_code)
        )

    def _poke_ansible(self) -> PokeReturnValue:
        """One read of Ansible's result file (see airflow_ssh_async.ansible)."""
        hook = SSHAsyncJobHook(self.ssh_conn_id)
        request = ansible_request(self.ansible_async_dir, self.job_id, self.job_dir)
        [facts] = hook.run_sync(lambda h: aansible_status(h, [request]))
        ref = JobRef(
            self.ssh_conn_id,
            self.job_id,
            facts.path or ansible_file(self.ansible_async_dir, self.job_id, self.job_dir),
            hook.get_options().address,
        )
        try:
            status = classify_ansible(facts)
            data = load_ansible_result(facts) if facts.exists else {}
        except ProtocolError as exc:
            raise AirflowException(
                f"{self.task_id}: cannot read Ansible job {ref.job_id!r} on {ref.host}: {exc}"
            ) from None
        if status.state is JobState.MISSING:
            raise AirflowException(
                f"{self.task_id}: Ansible job {ref.job_id!r} has no result file {ref.job_dir} on {ref.host}: "
                "Ansible never started it there or its file was removed. Check job_id, the connection and "
                "ansible_async_dir."
            )
        if not status.state.finished:
            self.log.info("Ansible job %s on %s is %s: %s", ref.job_id, ref.host, status.state.value, status.reason)
            return PokeReturnValue(is_done=False)
        # The same delivery as the trigger's: lines to the log, tails kept.
        follower = OutputFollower(ref.job_dir, self.log, 4096, self.stream_output, self._task_masker())
        for stream, raw in zip(("stdout", "stderr"), ansible_output(data), strict=True):
            follower.deliver(stream, raw)
        follower.finish()
        tails = {s: follower.tails[s].text() for s in ("stdout", "stderr")}
        result = self._task_masker().redact(
            build_result(ref, status, stdout_tail=tails["stdout"], stderr_tail=tails["stderr"])
        )
        return PokeReturnValue(
            is_done=True, xcom_value=settle(job_event("finished", "", ref, result), self.skip_on_exit_code)
        )

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
