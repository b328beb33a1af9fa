"""Which hosts to show, and which job a task instance has: read from Airflow's own records.

Sync functions (SQLAlchemy sessions): the routes run them in a thread, off
the API server's event loop.

* Hosts: the ``ssh_conn_id`` and ``async_dir`` of this provider's triggers
  (deferred tasks, sensors started in the triggerer) and of the rendered
  fields of the provider's recent task instances (``RECENT`` of them), only
  for DAGs the user may read. A connection typed in the page is added by
  the route.
* A task instance's job: its trigger's kwargs while it is deferred, else
  its rendered fields (connection, job id or the id derived from the task
  instance, async_dir).
* The user a job runs as (issue 19): ``become_user`` and ``become_method``
  of the same trigger kwargs and rendered fields, so a section (and a
  task's job) is read through the same elevation the task used.
* A task's secrets, to mask its job's output (issue 21): its trigger's
  kwargs while it is deferred, and the sealed copy the operator keeps in
  the task's ``task_state_store`` (:data:`SECRETS_KEY`) from its launch on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from airflow_ssh_async.become import validate_become
from airflow_ssh_async.job import DEFAULT_ASYNC_DIR, JOB_ID_RE, derive_job_id
from airflow_ssh_async.masking import SECRETS_KEY, unseal, unseal_for
from airflow_ssh_async.ui.records import Origin

TRIGGER_CLASSPATH = "airflow_ssh_async.triggers.SSHAsyncJobTrigger"
OPERATORS = ("SSHAsyncJobOperator", "SSHAsyncJobSensor")
RECENT = 500  # task instances looked at for connections, newest first


@dataclass(frozen=True)
class Section:
    """One host section: a connection, the user its jobs run as, and the async_dir they live in.

    ``become_user`` "" is the connection's own (its login, or its extra's
    ``become_user``); the async_dir's ``~`` is that user's home.
    """

    conn_id: str
    async_dir: str = DEFAULT_ASYNC_DIR
    become_user: str = ""
    become_method: str = ""


@dataclass(frozen=True)
class TaskJob:
    """Where a task instance's job lives, and how that was found."""

    conn_id: str
    job_id: str
    async_dir: str
    job_dir: str
    found_in: str  # "trigger" or "rendered fields"
    try_number: int | None = None
    become_user: str = ""
    become_method: str = ""


def _dir(value: object) -> str:
    return value if isinstance(value, str) and value else DEFAULT_ASYNC_DIR


def become_of(record: dict[str, Any] | None) -> tuple[str, str] | None:
    """(become_user, become_method) of trigger kwargs or rendered fields, "" where unset;
    None when they hold no valid pair (a typo the task itself failed on: nothing to ask)."""
    record = record or {}
    user, method = record.get("become_user"), record.get("become_method")
    if user in (None, "") and method in (None, ""):
        return "", ""
    try:
        name, how = validate_become(user, method)
    except ValueError:
        return None
    return (name or "", how if name or method not in (None, "") else "")


def _section(conn: str, record: dict[str, Any]) -> Section | None:
    become = become_of(record)
    return None if become is None else Section(conn, _dir(record.get("async_dir")), *become)


def recorded_sections() -> list[tuple[str, Section]]:
    """(dag id, section) of every connection this provider's tasks use, per Airflow's records."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import select

    found: list[tuple[str, Section]] = []
    with create_session() as session:
        rows = session.execute(
            select(Trigger, TI.dag_id)
            .join(TI, TI.trigger_id == Trigger.id)
            .where(Trigger.classpath == TRIGGER_CLASSPATH)
        ).all()
        for trigger, dag_id in rows:
            try:
                kwargs = trigger.kwargs
            except Exception:  # kwargs this server cannot decrypt: nothing to show from it
                continue
            conn = kwargs.get("ssh_conn_id")
            ours = isinstance(conn, str) and conn and kwargs.get("source", "airflow-ssh-async") != "ansible"
            if ours and (section := _section(str(conn), kwargs)) is not None:
                found.append((dag_id, section))
        recent = session.execute(
            select(RTIF.dag_id, RTIF.rendered_fields)
            .join(
                TI,
                (TI.dag_id == RTIF.dag_id)
                & (TI.task_id == RTIF.task_id)
                & (TI.run_id == RTIF.run_id)
                & (TI.map_index == RTIF.map_index),
            )
            .where(TI.operator.in_(OPERATORS))
            .order_by(TI.start_date.desc())
            .limit(RECENT)
        ).all()
        for dag_id, fields in recent:
            conn = (fields or {}).get("ssh_conn_id")
            if isinstance(conn, str) and conn and (section := _section(conn, fields)) is not None:
                found.append((dag_id, section))
    return sorted(set(found), key=lambda x: (x[1].conn_id, x[1].become_user, x[1].async_dir, x[0]))


def task_job(dag_id: str, run_id: str, task_id: str, map_index: int) -> tuple[TaskJob | None, str]:
    """The job of a task instance of this provider, or None and why not."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalar(
            select(TI).where(TI.dag_id == dag_id, TI.run_id == run_id, TI.task_id == task_id, TI.map_index == map_index)
        )
        if ti is None:
            return None, f"no task instance {dag_id}/{run_id}/{task_id} (map index {map_index})"
        if ti.operator not in OPERATORS:
            return None, f"task {task_id} is a {ti.operator}, not a task of airflow-provider-ssh-async"
        if ti.trigger_id is not None:
            trigger = session.get(Trigger, ti.trigger_id)
            if trigger is not None and trigger.classpath == TRIGGER_CLASSPATH:
                job = _from_kwargs(_safe_kwargs(trigger), ti.try_number)
                if job is not None:
                    return job, ""
        fields = session.scalar(
            select(RTIF.rendered_fields).where(
                RTIF.dag_id == dag_id, RTIF.run_id == run_id, RTIF.task_id == task_id, RTIF.map_index == map_index
            )
        )
        conn = (fields or {}).get("ssh_conn_id")
        if not isinstance(conn, str) or not conn:
            return None, (
                f"no job recorded for {task_id} yet: the task has not run (or not deferred), so Airflow "
                "holds neither its trigger nor its rendered fields"
            )
        job_id = (fields or {}).get("job_id")
        if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
            job_id = derive_job_id(dag_id, task_id, run_id, map_index)
        async_dir = _dir((fields or {}).get("async_dir"))
        job_dir = f"{async_dir.rstrip('/')}/{job_id}"
        user, method = become_of(fields) or ("", "")
        return TaskJob(conn, job_id, async_dir, job_dir, "rendered fields", ti.try_number, user, method), ""


def _safe_kwargs(trigger: Any) -> dict[str, Any]:
    try:
        return dict(trigger.kwargs)
    except Exception:
        return {}


def _from_kwargs(kwargs: dict[str, Any], try_number: int | None) -> TaskJob | None:
    conn, job_id = kwargs.get("ssh_conn_id"), kwargs.get("job_id")
    if not isinstance(conn, str) or not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
        return None
    if kwargs.get("source", "airflow-ssh-async") == "ansible":
        return None
    async_dir = _dir(kwargs.get("async_dir"))
    job_dir = kwargs.get("job_dir") or f"{async_dir.rstrip('/')}/{job_id}"
    user, method = become_of(kwargs) or ("", "")
    return TaskJob(conn, job_id, async_dir, str(job_dir), "trigger", try_number, user, method)


def rendered_command(dag_id: str, run_id: str, task_id: str, map_index: int) -> str | None:
    """The first line of the command the launching task rendered, as Airflow stored it
    (its rendered fields, masked by Airflow), or None when Airflow no longer has it.

    Taken from Airflow rather than from the job's folder on the host: a secret
    templated into the command is masked there, and would not be in the file.
    """
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        fields = session.scalar(
            select(RTIF.rendered_fields).where(
                RTIF.dag_id == dag_id, RTIF.run_id == run_id, RTIF.task_id == task_id, RTIF.map_index == map_index
            )
        )
    command = (fields or {}).get("command")
    if not isinstance(command, str):
        return None
    lines = [line for line in command.splitlines() if line.strip()]
    return (lines[0][:300] + (" …" if len(lines) > 1 or len(lines[0]) > 300 else "")) if lines else ""


def _unsealed(token: object) -> set[str]:
    if isinstance(token, list):  # kwargs of a trigger made without sealing (a test's)
        return {v for v in token if isinstance(v, str)}
    if not isinstance(token, str):
        return set()
    try:
        return set(unseal(token))
    except ValueError:  # sealed with a Fernet key this server does not hold: nothing to mask with
        return set()


@dataclass(frozen=True)
class TaskSecrets:
    """What Airflow holds of a task instance's secrets, for masking its job's output."""

    values: tuple[str, ...] = ()
    from_trigger: bool = False  # its trigger (the task is deferred) carries them
    kept: bool = False  # the operator's sealed entry in its task_state_store is there and is its own
    launcher: bool = False  # the task instance exists and is an SSHAsyncJobOperator


def task_secrets(keys: list[tuple[str, str, str, int]]) -> dict[tuple[str, str, str, int], TaskSecrets]:
    """The secrets of each task instance (dag_id, run_id, task_id, map_index) of KEYS.

    Both places the worker left them, sealed with Airflow's Fernet key:
    the trigger's kwargs while the task is deferred (masking.seal), and the
    operator's ``task_state_store`` entry :data:`SECRETS_KEY` (masking.seal_for),
    written at launch and kept as long as Airflow keeps the run; an entry
    not sealed for this very task instance (copied from another, or written
    by hand: editors of task instances may write the store) counts for
    nothing. Three queries for any number of task instances.
    """
    from airflow.models.task_state_store import TaskStateStoreModel as TSS
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import select

    wanted = set(keys)
    if not wanted:
        return {}
    dags, runs = {k[0] for k in wanted}, {k[1] for k in wanted}
    values: dict[tuple[str, str, str, int], set[str]] = {k: set() for k in wanted}
    from_trigger: set[tuple[str, str, str, int]] = set()
    kept: set[tuple[str, str, str, int]] = set()
    with create_session() as session:
        launchers = {
            (d, r, t, m)
            for d, r, t, m in session.execute(
                select(TI.dag_id, TI.run_id, TI.task_id, TI.map_index).where(
                    TI.dag_id.in_(dags), TI.run_id.in_(runs), TI.operator == "SSHAsyncJobOperator"
                )
            ).all()
        }
        triggers = session.execute(
            select(Trigger, TI.dag_id, TI.run_id, TI.task_id, TI.map_index)
            .join(TI, TI.trigger_id == Trigger.id)
            .where(Trigger.classpath == TRIGGER_CLASSPATH, TI.dag_id.in_(dags), TI.run_id.in_(runs))
        ).all()
        for trigger, d, r, t, m in triggers:
            key = (d, r, t, m)
            if key in wanted:
                found = _unsealed(_safe_kwargs(trigger).get("secrets"))
                values[key] |= found
                from_trigger.add(key)
        rows = session.execute(
            select(TSS.dag_id, TSS.run_id, TSS.task_id, TSS.map_index, TSS.value).where(
                TSS.key == SECRETS_KEY, TSS.dag_id.in_(dags), TSS.run_id.in_(runs)
            )
        ).all()
        for d, r, t, m, value in rows:
            key = (d, r, t, m)
            if key not in wanted:
                continue
            try:
                values[key] |= set(unseal_for(f"{d}/{t}/{r}/{m}", json.loads(value)))
            except ValueError:  # not sealed for this task instance, or not with this server's key
                continue
            kept.add(key)
    return {k: TaskSecrets(tuple(sorted(values[k])), k in from_trigger, k in kept, k in launchers) for k in wanted}


# A try starts (start_date) a little before it launches its job (start_time on the host).
TRY_SLACK = 5


def launching_tries(jobs: list[tuple[Origin, int | None]]) -> dict[tuple[str, str, str, int], int]:
    """For (origin, job start) pairs: the try of the origin task instance that launched the job.

    The latest try that started before the job did (TaskInstanceHistory holds
    the earlier tries, TaskInstance the current one); the current try when
    the job's start is unknown.
    """
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.models.taskinstancehistory import TaskInstanceHistory as TIH
    from airflow.utils.session import create_session
    from sqlalchemy import select

    if not jobs:
        return {}
    dags = {o.dag_id for o, _ in jobs}
    runs = {o.run_id for o, _ in jobs}
    tries: dict[tuple[str, str, str, int], list[tuple[int, float | None]]] = {}
    current: dict[tuple[str, str, str, int], int] = {}
    with create_session() as session:
        for model in (TI, TIH):
            rows = session.execute(
                select(
                    model.dag_id, model.run_id, model.task_id, model.map_index, model.try_number, model.start_date
                ).where(model.dag_id.in_(dags), model.run_id.in_(runs))
            ).all()
            for dag_id, run_id, task_id, map_index, try_number, start in rows:
                key = (dag_id, run_id, task_id, map_index)
                tries.setdefault(key, []).append((try_number, start.timestamp() if start else None))
                if model is TI:
                    current[key] = try_number
    found: dict[tuple[str, str, str, int], int] = {}
    for o, job_start in jobs:
        key = (o.dag_id, o.run_id, o.task_id, o.map_index)
        started = [
            t for t, s in tries.get(key, []) if s is not None and job_start is not None and s <= job_start + TRY_SLACK
        ]
        if started:
            found[key] = max(started)
        elif key in current:
            found[key] = current[key]
    return found
