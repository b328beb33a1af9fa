"""The operator's first half: launch the job, or act on the one that exists (on_existing), and its time limits.

One SSH connection for the whole decision; the rules themselves are pure
(on_existing.py, limits.py). SSHAsyncJobOperator (operators.py) builds on
this class and adds the wait and the settling of the result.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_ssh_async.client import RemoteHost
from airflow_ssh_async.errors import JobExistsError
from airflow_ssh_async.hooks import SSHAsyncJobHook
from airflow_ssh_async.job_ids import JobIdError, JobRef, derive_job_id, validate_job_id
from airflow_ssh_async.limits import Limit, effective_limit, execution_left, host_seconds, seconds
from airflow_ssh_async.masking import Masker
from airflow_ssh_async.on_existing import ExistingAction, OnExisting, decide_existing
from airflow_ssh_async.results import delivery_marker, iso_time


class LaunchingOperator(BaseOperator):
    """Launch or re-attach; the attributes below are set by SSHAsyncJobOperator.__init__."""

    command: str
    ssh_conn_id: str
    environment: dict[str, str] | None
    cwd: str | None
    job_id: str | None
    job_timeout: int | None
    async_dir: str
    on_existing: OnExisting
    grace: int
    tail_bytes: int
    output_limit: int
    become_user: str | None
    become_method: str | None
    _masker: Masker
    _limit: Limit | None  # the limit that ends the watched job first, as of its launch or attach
    _try_start: datetime | None

    def _hook(self) -> SSHAsyncJobHook:
        return SSHAsyncJobHook(self.ssh_conn_id, self.async_dir, self.become_user, self.become_method)

    def _resolve_job_id(self, context: Context) -> str:
        if self.job_id:
            job_id = str(self.job_id)
        else:
            ti = context["ti"]
            job_id = derive_job_id(ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1))
        try:
            return validate_job_id(job_id)
        except JobIdError as exc:
            raise AirflowFailException(f"{self.task_id}: {exc}") from None

    @staticmethod
    def _delivered_key(job_id: str) -> str:
        return f"ssh_async_delivered/{job_id}"

    @staticmethod
    def _origin(context: Context) -> str:
        """The task instance that launches: every try of it has the same origin."""
        ti = context["ti"]
        return f"{ti.dag_id}/{ti.task_id}/{ti.run_id}/{getattr(ti, 'map_index', -1)}"

    async def _start_or_attach(
        self, hook: SSHAsyncJobHook, host: RemoteHost, job_id: str, context: Context
    ) -> tuple[JobRef, dict[str, Any] | None]:
        """Launch, or act on the existing job per ``on_existing``; one SSH connection.

        Returns the job and, when Airflow never took a succeeded job's
        result, that result.
        """
        store = context.get("task_state_store")
        origin = self._origin(context)
        exec_left = self._execution_left(context)
        for _ in range(3):
            try:
                launched = await hook.alaunch(
                    job_id,
                    self.command,
                    environment=self.environment,
                    cwd=self.cwd,
                    timeout=self.job_timeout or 0,
                    grace=self.grace,
                    origin=origin,
                    execution_left=host_seconds(exec_left) if exec_left is not None else 0,
                    output_limit=self.output_limit,
                    host=host,
                )
            except JobExistsError:
                pass
            else:
                self._limit = effective_limit(seconds(self.job_timeout), exec_left)
                self.log.info(
                    "Started job %s on %s in %s, pid %s%s",
                    job_id, host.options.address, launched.job_dir, launched.pid, self._limit_words(),
                )  # fmt: skip
                return JobRef(self.ssh_conn_id, job_id, launched.job_dir, host.options.address), None
            target = hook.job_dir(job_id)
            status, facts = (await hook.astatus([target], host=host))[target]
            info = facts.job_json or {}
            ref = JobRef(self.ssh_conn_id, job_id, info.get("job_dir", target), host.options.address)
            marker = delivery_marker(status.pid, iso_time(status.start_time))
            delivered = store is not None and store.get(self._delivered_key(job_id)) == marker
            action = decide_existing(self.on_existing, status.state, delivered, info.get("origin") == origin)
            if action is ExistingAction.WATCH:
                self.log.info(
                    "Job %s is already %s on %s (pid %s, started %s): re-attaching instead of starting it again",
                    job_id, status.state.value, ref.host, status.pid, iso_time(status.start_time),
                )  # fmt: skip
                await self._move_deadline(hook, host, ref, status.start_time, exec_left)
                return ref, None
            if action is ExistingAction.TAKE_RESULT:
                self.log.info(
                    "Job %s succeeded on %s but no earlier try took its result: taking it without running again",
                    job_id, ref.host,
                )  # fmt: skip
                return ref, await hook.afinished_result(
                    ref, status, tail_bytes=self.tail_bytes, host=host, masker=self._masker
                )
            if action is ExistingAction.REFUSE:
                raise AirflowFailException(
                    f"job {job_id!r} exists on {ref.host} ({ref.job_dir}, {status.state.value}) and "
                    f"on_existing={self.on_existing.value!r} refuses to "
                    + ("start it again while it runs" if not status.state.finished else "replace it")
                    + ". Cancel it (`airflow-ssh-async kill`), wait for it, or use another job_id/on_existing."
                )
            if action is ExistingAction.ARCHIVE_AND_START:
                moved = await hook.aarchive(ref.job_dir, host=host)
                self.log.info("Job %s had ended %s; archived its folder to %s and starting a new attempt",
                              job_id, status.state.value, moved)  # fmt: skip
        raise AirflowException(f"job {job_id!r}: could not launch or attach after 3 attempts (concurrent launches?)")

    # Time limits (limits.py).

    def _execution_left(self, context: Context) -> float | None:
        """Seconds left of this try's execution_timeout, counted from its start as Airflow counts it.

        ``ti.start_date`` is the try's first start, which Airflow keeps
        across the deferral (the task SDK sets it when the worker is told
        to run, and again only for a new try).
        """
        self._try_start = getattr(context["ti"], "start_date", None)
        return execution_left(self.execution_timeout, self._try_start, datetime.now(tz=timezone.utc))

    def _limit_words(self) -> str:
        if self._limit is None:
            return ""
        words = f"; the host ends it in {self._limit.left:.0f} s at the latest ({self._limit.name}"
        if self.execution_timeout and self._try_start is not None:
            words += f"; execution_timeout counts from the try's start at {self._try_start.isoformat()}"
        return words + ")"

    async def _move_deadline(
        self, hook: SSHAsyncJobHook, host: RemoteHost, ref: JobRef, job_start: int | None, exec_left: float | None
    ) -> None:
        """A retry re-attaches: the running job gets this try's execution_timeout (job_timeout still caps it)."""
        job_left = seconds(self.job_timeout)
        if job_left is not None and job_start is not None:  # the worker's clock: for the deferral's backstop only
            job_left = max(job_left - (time.time() - job_start), 0.0)
        self._limit = effective_limit(job_left, exec_left)
        if exec_left is None:
            return
        outcome = await hook.amove_deadline(ref.job_dir, host_seconds(exec_left), host=host)
        if outcome == "unsupported":
            self.log.warning(
                "job %s on %s runs under a supervisor older than execution_timeout deadlines: it keeps the "
                "limits it started with (job_timeout %s); this try's execution_timeout ends only the wait",
                ref.job_id, ref.host, self.job_timeout,
            )  # fmt: skip
        else:
            self.log.info("execution_timeout of this try: job %s's deadline %s%s", ref.job_id, outcome,
                          self._limit_words())  # fmt: skip
