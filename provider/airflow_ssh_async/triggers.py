"""SSHAsyncJobTrigger: watch a remote job from the triggerer, never blocking its loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_ssh_async.ansible import DEFAULT_ANSIBLE_ASYNC_DIR, SOURCE_AIRFLOW, SOURCE_ANSIBLE, validate_source
from airflow_ssh_async.errors import SSHAsyncJobError
from airflow_ssh_async.hooks import DEFAULT_GRACE, SSHAsyncJobHook, cancel_bound
from airflow_ssh_async.job import DEFAULT_ASYNC_DIR, TAIL_BYTES, JobRef, job_dir_in, log_key
from airflow_ssh_async.log_settle import LoggedBytes
from airflow_ssh_async.masking import Masker, airflow_min_length, seal, unseal
from airflow_ssh_async.watch import watch_job

# What a user's mark-failed or mark-success leaves the task in, and what
# Airflow 3.3's scheduler sets every unfinished task of a DAG run to when the
# run passes its dagrun_timeout (skipped; it then drops the trigger, which
# calls on_kill). After a clear the task has no state, or already the next try's.
USER_ENDED_STATES = frozenset({"failed", "success", "skipped"})
# How long on_kill waits for the task instance's state before treating it
# as unknown (and so honouring kill_on_cancel).
STATE_READ_TIMEOUT = 20.0
# Cancels started by on_kill, kept referenced until done (see on_kill).
_ON_KILL_WORK: set[asyncio.Task[None]] = set()


class SSHAsyncJobTrigger(BaseTrigger):
    """Fires one event when the job ends (or cannot be watched any more).

    :param ssh_conn_id: Airflow `ssh` connection of the host.
    :param job_id: the job to watch.
    :param job_dir: its absolute folder on the host; when empty, derived from
        ``async_dir`` and ``job_id`` (a sensor given only an id).
    :param poll_interval: seconds between polls; watchers of one host share
        each poll.
    :param kill_on_cancel: cancel the remote job when a user marks the
        deferred task failed or success. A clear leaves the job running:
        the cleared task's next try re-attaches to it.
    :param stream_output: log new stdout, stderr and progress lines as they come.
    :param tail_bytes: how much of stdout and stderr the result keeps.
    :param connection_patience: seconds of failed polls before giving up.
    :param grace: seconds between SIGTERM and SIGKILL on cancel.
    :param source: who started the job: ``"airflow-ssh-async"`` (default) or
        ``"ansible"`` (Ansible's ``async``/``poll: 0``; ``job_id`` is its jid
        and ``job_dir``, if given, the full path of its result file). See
        airflow_ssh_async.ansible for what Ansible's file can tell.
    :param ansible_async_dir: where Ansible keeps result files on the host;
        left at the default, the host's ``$ANSIBLE_ASYNC_DIR`` wins, as for
        Ansible itself. An Ansible job cannot be cancelled from here
        (Ansible has no kill mode): ``on_kill`` only logs that.
    :param secrets: values masked in every line logged and in the event:
        a list of plain values (encrypted by ``serialize()``), or the token
        ``serialize()`` made. Airflow 3.3 stores trigger kwargs as given, so
        they never reach the trigger table in clear. A token this
        triggerer cannot decrypt makes the trigger withhold all output.
    :param become_user: the user the job runs as (the operator's
        ``become_user``); every poll and the cancel run as that user too.
        "": the connection's ``become_user`` extra, if any.
    :param become_method: ``sudo`` or ``doas``; "": the connection's, else sudo.
    """

    def __init__(
        self,
        ssh_conn_id: str,
        job_id: str,
        job_dir: str = "",
        async_dir: str = DEFAULT_ASYNC_DIR,
        poll_interval: float = 10.0,
        kill_on_cancel: bool = True,
        stream_output: bool = True,
        tail_bytes: int = TAIL_BYTES,
        connection_patience: float = 300.0,
        grace: int = DEFAULT_GRACE,
        source: str = SOURCE_AIRFLOW,
        ansible_async_dir: str = DEFAULT_ANSIBLE_ASYNC_DIR,
        secrets: str | Sequence[str] = (),
        become_user: str = "",
        become_method: str = "",
    ) -> None:
        super().__init__()
        self.become_user = become_user or ""
        self.become_method = become_method or ""
        self.ssh_conn_id = ssh_conn_id
        self.job_id = job_id
        self.job_dir = job_dir
        self.async_dir = async_dir
        self.poll_interval = poll_interval
        self.kill_on_cancel = kill_on_cancel
        self.stream_output = stream_output
        self.tail_bytes = tail_bytes
        self.connection_patience = connection_patience
        self.grace = grace
        self.source = validate_source(source)
        self.ansible_async_dir = ansible_async_dir
        # Kept as given: a sensor started in the triggerer renders templates
        # here after __init__; run() reads them.
        self.secrets = secrets if isinstance(secrets, str) else list(secrets)
        self._fired = False
        self._job_hook: SSHAsyncJobHook | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "ssh_conn_id": self.ssh_conn_id,
                "job_id": self.job_id,
                "job_dir": self.job_dir,
                "async_dir": self.async_dir,
                "poll_interval": self.poll_interval,
                "kill_on_cancel": self.kill_on_cancel,
                "stream_output": self.stream_output,
                "tail_bytes": self.tail_bytes,
                "connection_patience": self.connection_patience,
                "grace": self.grace,
                "source": self.source,
                "ansible_async_dir": self.ansible_async_dir,
                "secrets": self._sealed(),
                "become_user": self.become_user,
                "become_method": self.become_method,
            },
        )

    def _sealed(self) -> str:
        if isinstance(self.secrets, str):
            return self.secrets
        token, encrypted = seal(self.secrets)
        if not encrypted:
            self.log.warning(
                "no [core] fernet_key: the %d secrets masked in job %s's output are stored unencrypted in "
                "the trigger table, as Airflow then stores connections and variables",
                len(self.secrets),
                self.job_id,
            )
        return token

    def _masker(self) -> tuple[Masker, bool]:
        """(masker, readable): a token this process cannot decrypt withholds all output."""
        if isinstance(self.secrets, str):
            try:
                values = unseal(self.secrets)
            except ValueError as exc:
                self.log.error(
                    "cannot read the secrets to mask in job %s's output (%s): the worker and this triggerer "
                    "must share [core] fernet_key. The job's output is not logged and the result keeps no "
                    "output tails.",
                    self.job_id,
                    exc,
                )
                return Masker(), False
        else:
            values = [str(v) for v in self.secrets if v]
        return Masker(values, airflow_min_length()), True

    def _hook(self) -> SSHAsyncJobHook:
        # One hook for run and on_kill: a cancel then needs no second
        # connection lookup through the triggerer's comms.
        if self._job_hook is None:
            self._job_hook = SSHAsyncJobHook(
                self.ssh_conn_id, self.async_dir, self.become_user or None, self.become_method or None
            )
        return self._job_hook

    def _ref(self) -> JobRef:
        """This provider's job (on_kill cancels no other). job_id may have been
        rendered in the triggerer (start_from_trigger)."""
        return JobRef(self.ssh_conn_id, self.job_id, self.job_dir or job_dir_in(self.async_dir, self.job_id))

    def _log_key(self) -> str:
        """This try's log, set by the triggerer: a restarted trigger of the
        same try continues it; a new try streams from the start."""
        ti = self.task_instance
        if ti is None:
            return ""
        return log_key(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        masker, readable = self._masker()
        log = LoggedBytes(self.log)
        event = await watch_job(
            self._hook(),
            JobRef(self.ssh_conn_id, self.job_id, self.job_dir),  # an empty job_dir: the source's default place
            log=log,
            poll_interval=self.poll_interval,
            log_key=self._log_key(),
            stream_output=self.stream_output and readable,
            tail_bytes=self.tail_bytes if readable else 0,
            masker=masker,
            connection_patience=self.connection_patience,
            source=self.source,
            ansible_async_dir=self.ansible_async_dir,
        )
        if not readable and event.get("result"):
            event["result"]["progress"] = ""
        self._fired = True
        # The last lines must reach the try's log before "finished" closes it
        # (log_settle.py): the more was logged lately, the longer the pause.
        await asyncio.sleep(log.settle_seconds())
        yield TriggerEvent(event)

    async def _task_state(self) -> tuple[bool, str | None]:
        """(known, state) of this trigger's task instance now, read through the triggerer.

        Blocking comms with the triggerer's supervisor: run in a thread, as
        Airflow's own triggers do.
        """
        ti = self.task_instance
        if ti is None:
            return False, None
        try:
            from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
            from asgiref.sync import sync_to_async

            states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
                dag_id=ti.dag_id, map_index=ti.map_index, task_ids=[ti.task_id], run_ids=[ti.run_id]
            )
        except Exception as exc:  # no comms (tests, dag.test()): the caller decides
            self.log.warning("cannot read the state of task %s (%s)", ti.task_id, exc)
            return False, None
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}_{ti.map_index}"
        return True, states.get(ti.run_id, {}).get(key)

    async def on_kill(self) -> None:
        """A user marked the task failed or success, or the DAG run timed out: stop the job.

        A clear also cancels this trigger, but the cleared task's next try
        re-attaches to the job (that is the point of a clear here), so the
        job is left running then. A clear leaves the task in no state (or
        already in the next try's); mark-failed/success leave it failed or
        success. When the state cannot be read (no comms, or no answer within
        STATE_READ_TIMEOUT), kill_on_cancel is honoured: the job is cancelled.
        The cancel is given cancel_bound(grace) (grace plus a margin), as
        signal.sh may wait out grace itself; a job still starting (no
        job.json yet) gets its cancel recorded and is stopped as it starts.
        A cancel that fails is logged with the command that does it by hand.
        """
        if self._fired:
            self.log.debug("Skipping on_kill since an event has already been fired.")
            return
        if not self.kill_on_cancel:
            self.log.info("kill_on_cancel is off: job %s keeps running on the host", self.job_id)
            return
        if self.source == SOURCE_ANSIBLE:
            self.log.warning(
                "job %s was started by Ansible, which has no way to cancel an async job: it keeps running "
                "on the host until it ends or reaches its async time limit",
                self.job_id,
            )
            return
        # Airflow 3.3 cancels a trigger again at its next sync while on_kill
        # still runs, which would cut a slow state read or SSH connect short
        # (seen under load). The work runs as a task of its own: a second
        # cancel ends only this wait, never the cancel of the job.
        work = asyncio.get_running_loop().create_task(self._cancel_unless_cleared())
        _ON_KILL_WORK.add(work)
        work.add_done_callback(_ON_KILL_WORK.discard)
        await asyncio.shield(work)

    async def _cancel_unless_cleared(self) -> None:
        try:
            known, state = await asyncio.wait_for(self._task_state(), timeout=STATE_READ_TIMEOUT)
        except asyncio.TimeoutError:
            self.log.warning(
                "the state of task %s did not arrive within %.0f s: treated as unknown, so kill_on_cancel is "
                "honoured and job %s is cancelled",
                self.task_instance.task_id if self.task_instance else "?",
                STATE_READ_TIMEOUT,
                self.job_id,
            )
            known, state = False, None
        if known and state not in USER_ENDED_STATES:
            self.log.info(
                "task was cleared (state %s), not marked failed or success: job %s keeps running for the "
                "next try to re-attach to",
                state,
                self.job_id,
            )
            return
        if state == "skipped":
            self.log.info("task was set skipped (the DAG run's dagrun_timeout passed): cancelling job %s", self.job_id)
        ref = self._ref()
        bound = cancel_bound(self.grace)
        try:
            outcome = await asyncio.wait_for(self._hook().acancel(ref.job_dir, grace=self.grace), timeout=bound)
        except (SSHAsyncJobError, asyncio.TimeoutError) as exc:
            self.log.error(
                "could not cancel job %s in %s (%s): it may still run; cancel it with `airflow-ssh-async kill %s %s`",
                self.job_id,
                ref.job_dir,
                exc or f"no answer within {bound:.0f} s",
                self.ssh_conn_id,
                self.job_id,
            )
            return
        if outcome == "pending":
            self.log.info(
                "cancel of job %s in %s: pending (its launch had not finished; the cancel is recorded and its "
                "supervisor stops the job as it starts)",
                self.job_id,
                ref.job_dir,
            )
            return
        self.log.info("cancel of job %s in %s: %s", self.job_id, ref.job_dir, outcome)

    async def cleanup(self) -> None:
        """Local resources only: a triggerer restart must leave the job running.

        The shared SSH connection is released when ``run`` exits; nothing here
        touches the remote host.
        """
