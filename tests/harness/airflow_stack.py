"""A real Airflow 3.3 for end-to-end tests: every component is its own OS process.

``AirflowStack`` builds a throwaway AIRFLOW_HOME, runs ``airflow db migrate`` and
starts ``api-server``, ``scheduler``, ``dag-processor`` and the triggerers as
separate process groups, then drives Airflow through the public REST API
(``/api/v2``) the way the UI does. Two configurations (``kind``):

* ``"sqlite"``: SQLite + LocalExecutor, one triggerer (the development setup).
* ``"celery"``: the production topology. PostgreSQL and Redis of its own
  (tests/harness/services.py), the CeleryExecutor, one ``airflow celery worker``
  and two triggerers. The worker runs with its own AIRFLOW_HOME and an
  environment built from scratch, as on another machine: it shares only the
  database, the broker, the deployed DAG files, the shared secrets and the task
  log volume with the rest. Connections live in the database (imported after migrating), not in
  any component's environment, so the worker and the triggerers read them the
  way a deployment does.

Startup failures raise with the tail of the guilty component's log: the e2e
suite fails, it never skips.

Findings about Airflow 3.3.2 this harness relies on (read from its code):

* SQLite + LocalExecutor is allowed. The Airflow 2 check refusing it is gone
  (``configuration.py`` even rewrites ``SequentialExecutor`` to ``LocalExecutor``,
  and ``airflow standalone`` forces exactly this pair). The path must be absolute
  (``settings.py``). We switch the DB to WAL journaling after migrating so that
  readers (API server) do not block the scheduler's writes.
* Auth: the default SimpleAuthManager reads users from
  ``[core] simple_auth_manager_users`` ("name:ROLE") and their passwords from a
  JSON file (``[core] simple_auth_manager_passwords_file``); it only generates
  passwords for users missing from that file. We pre-write the file, so the
  password is known, then ``POST /auth/token {"username", "password"}`` returns
  ``{"access_token": ...}`` (HTTP 201), sent as ``Authorization: Bearer``.
  (``simple_auth_manager_all_admins=True`` would skip auth entirely through a
  middleware; we keep real auth so the API is exercised as deployed.)
* Workers reach the Execution API at ``[api] base_url`` + ``/execution/``
  (default ``http://localhost:8080``), so ``base_url`` must name our port, and
  every component must share ``[api_auth] jwt_secret`` to trust task tokens.
* The task log endpoint returns JSON ``{"content": [{"event": ..., "timestamp":
  ..., "level": ..., ...}], "continuation_token": ...}``; see ``task_log``.
* Process groups: the task-sdk supervisor puts every task runner into its own
  process group, so ``killpg`` of the scheduler does not reach it, and
  BashOperator runs its shell under ``setsid``. Teardown therefore kills, after
  the component groups, every process that is in a component's session, descends
  from a component, or carries our marker variable in /proc/PID/environ (see
  ``stack_processes``). The marker alone is not enough: ``setproctitle``, which
  every Airflow process calls, overwrites the memory behind /proc/PID/environ.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx

from tests.harness.procs import descendants_in
from tests.harness.services import Postgres, Redis

AIRFLOW = str(Path(sys.executable).with_name("airflow"))  # the venv running the tests
API = "/api/v2"
STACK_ID_VAR = "AIRFLOW_STACK_ID"  # env marker inherited by every process we start
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
TERMINAL_TI_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
WORKER_TITLE = "airflow worker -- "
KINDS = ("sqlite", "celery")
# What the worker of the Celery stack inherits from the test process: the basics of
# a login environment, nothing of Airflow's (its own settings are set one by one).
WORKER_INHERITS = ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "PYTHONPATH")

T = TypeVar("T")


class AirflowStackError(RuntimeError):
    """The Airflow stack failed to start, crashed, or a wait timed out."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 60) -> str:
    """Last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.5,
    check: Callable[[], None] | None = None,
) -> T:
    """Poll ``probe`` until it returns a truthy value; raise after ``timeout`` seconds.

    ``check`` runs on every round to fail fast (e.g. a component died) instead of
    waiting for the whole timeout.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        if check:
            check()
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AirflowStackError(f"timed out after {timeout:.0f}s waiting for {what} (last seen: {last!r})")
        time.sleep(interval)


@dataclass
class Component:
    """One Airflow CLI process (a session and process group leader) and its log file."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    job_id: int | None = None  # TriggererJob id, for triggerers
    expected_dead: bool = False  # killed on purpose: not a crash
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own session and group: killpg reaches its children
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> bool:
        """Reap the main process; True if it exited within ``timeout``."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        if self._log:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)


@dataclass(frozen=True)
class WorkerProcess:
    """A LocalExecutor worker or task runner process, as seen in /proc."""

    pid: int
    title: str
    ti_id: str | None  # task instance UUID, None for an idle pool worker


@dataclass(frozen=True)
class ProcStat:
    """The parts of /proc/PID/stat and /proc/PID/environ we track processes by."""

    pid: int
    ppid: int
    sid: int
    environ: frozenset[bytes]


def _read_proc(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = frozenset(f.read().split(b"\0"))
    except OSError:  # gone meanwhile
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session
    if fields[0] == b"Z":  # a zombie holds nothing; whoever adopted it reaps it
        return None
    return ProcStat(pid=pid, ppid=int(fields[1]), sid=int(fields[3]), environ=environ)


def _process_table() -> list[ProcStat]:
    """Live, non-zombie processes."""
    return [p for pid in _all_pids() if (p := _read_proc(pid)) is not None]


def _proc_title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _sessions_of(pids: Iterable[int]) -> set[int]:
    return {p.sid for pid in pids if (p := _read_proc(pid)) is not None}


def _tcp_connections_to(address: str, port: int) -> set[int]:
    """Socket inodes of established IPv4 TCP connections whose peer is ``address:port``."""
    a, b, c, d = (int(x) for x in address.split("."))
    peer = f"{d:02X}{c:02X}{b:02X}{a:02X}:{port:04X}"  # /proc/net/tcp: little-endian hex address
    found = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[2] == peer and fields[3] == "01":  # 01: ESTABLISHED
                found.add(int(fields[9]))
    return found


def _socket_inodes(pid: int) -> set[int]:
    found = set()
    with suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    found.add(int(target[8:-1]))
    return found


def _is_secret_var(name: str) -> bool:
    """Connections and variables: what a deployment keeps in its database or secrets backend."""
    return name.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))


def _conn_for_import(value: str) -> dict[str, Any] | str:
    """An ``AIRFLOW_CONN_*`` value (JSON or URI) as ``airflow connections import`` reads it."""
    if not value.lstrip().startswith("{"):
        return value  # a URI
    conn = json.loads(value)
    if isinstance(conn.get("extra"), dict):
        conn["extra"] = json.dumps(conn["extra"])
    return conn


def _parse_worker_title(title: str) -> str | None:
    """Task instance id from a worker title, None if idle. See worker_processes()."""
    rest = title[len(WORKER_TITLE) :].strip()
    if rest.startswith("LocalExecutor"):
        rest = rest.split(":", 1)[1].strip() if ":" in rest else ""
    return None if not rest or rest == "<idle>" else rest.split()[0]


class AirflowStack:
    """A real Airflow (API server, scheduler, DAG processor, triggerers) on 127.0.0.1.

    Usage::

        with AirflowStack(dags_folder, env={"AIRFLOW_CONN_X": uri}, dag_ids=["my_dag"]) as af:
            af.unpause_dag("my_dag")
            run_id = af.trigger_dag("my_dag", conf={"n": 1})
            assert af.wait_for_dag_run("my_dag", run_id) == "success"

    ``env`` is added to every component's environment (connections, variables,
    ``AIRFLOW__SECTION__KEY`` overrides). The harness drops inherited
    ``AIRFLOW_HOME``/``AIRFLOW_CONFIG``/``AIRFLOW__*`` to stay isolated but keeps
    inherited ``AIRFLOW_CONN_*``/``AIRFLOW_VAR_*`` (e.g. from the sshd fixture).
    """

    def __init__(
        self,
        dags_folder: str | Path,
        *,
        env: Mapping[str, str] | None = None,
        dag_ids: Sequence[str] = (),
        parallelism: int = 4,
        startup_timeout: float | None = None,
        keep_home: bool | None = None,
        kind: str = "sqlite",
        triggerers: int | None = None,
        worker_concurrency: int = 16,
    ) -> None:
        self.dags_folder = Path(dags_folder).resolve()
        if not self.dags_folder.is_dir():
            raise AirflowStackError(f"dags folder {self.dags_folder} does not exist")
        if kind not in KINDS:
            raise AirflowStackError(f"unknown stack kind {kind!r}: one of {', '.join(KINDS)}")
        self.kind = kind
        self.initial_triggerers = triggerers if triggerers is not None else (2 if kind == "celery" else 1)
        self.worker_concurrency = worker_concurrency
        self.postgres: Postgres | None = None
        self.redis: Redis | None = None
        self.extra_env = dict(env or {})
        self.dag_ids = list(dag_ids)
        self.parallelism = parallelism
        # The Celery stack also starts PostgreSQL, Redis, a second triggerer and the worker.
        # A bound on a start that hangs (tests/e2e/conftest.py STARTUP_LIMIT), not a speed target:
        # dev/test.sh starts both stacks at once beside the integration tests, on 2 cores.
        self.startup_timeout = startup_timeout or (400.0 if kind == "celery" else 240.0)
        # Keep AIRFLOW_HOME (logs, DB) after stop: for debugging, set AIRFLOW_STACK_KEEP_HOME=1.
        self.keep_home = keep_home if keep_home is not None else bool(os.environ.get("AIRFLOW_STACK_KEEP_HOME"))
        self.home = Path(tempfile.mkdtemp(prefix="airflow-stack-"))
        self.worker_home = self.home / "worker-machine"  # the Celery worker's AIRFLOW_HOME
        self.worker_env: dict[str, str] = {}
        self._shared_secrets = {
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),  # also signs the log servers' requests
            # As in a real deployment: what Airflow encrypts (connections, variables, our trigger secrets) is;
            # the worker encrypts the trigger's secrets, the triggerers decrypt them.
            "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }
        self._worker_count = 0
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.username = "admin"
        self.password = secrets.token_urlsafe(16)
        # A second, read-only user (SimpleAuthManager's VIEWER role): for permission tests.
        self.viewer_username = "viewer"
        self.viewer_password = secrets.token_urlsafe(16)
        self.env: dict[str, str] = {}
        self.components: dict[str, Component] = {}
        self._client: httpx.Client | None = None
        self._triggerer_count = 0
        self._retired_job_ids: set[int] = set()  # TriggererJobs of triggerers that ``revive`` replaced
        self.startup_seconds: float | None = None
        self.stack_id = secrets.token_hex(8)
        self._marker = f"{STACK_ID_VAR}={self.stack_id}".encode()
        self._startup_deadline = 0.0

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop(remove_home=exc is None and not self.keep_home)
        if exc is not None:
            print(f"AirflowStack: logs kept in {self.home}", file=sys.stderr)

    def start(self) -> AirflowStack:
        """Configure, migrate, start all components, wait until ready; stop everything on failure."""
        if not os.access(AIRFLOW, os.X_OK):
            raise AirflowStackError(f"{AIRFLOW} not found: run the tests with the venv's python")
        started = time.monotonic()
        self._startup_deadline = started + self.startup_timeout
        try:
            self._start_services()
            self._write_config()
            self._migrate()
            for name in ("api-server", "scheduler", "dag-processor"):
                self._start_component(name, [name])
            for _ in range(self.initial_triggerers):
                self.start_triggerer()  # waits for the API, then for the triggerer's job
            if self.kind == "celery":
                self.start_worker()
            self._wait_ready()
        except AirflowStackError as e:
            context = self.diagnostics(lines=25)
            self.stop(remove_home=False)
            raise AirflowStackError(f"Airflow failed to start (home {self.home}): {e}\n\n{context}") from e
        except BaseException:
            self.stop(remove_home=False)
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self, remove_home: bool | None = None, grace: float = 5.0) -> None:
        """Kill every process this stack started (SIGTERM, then SIGKILL); raise if any survive.

        Idempotent. AIRFLOW_HOME is removed unless ``remove_home`` is False or the
        stack was created with ``keep_home``.
        """
        if remove_home is None:
            remove_home = not self.keep_home
        if self._client:
            self._client.close()
            self._client = None
        alive = [c for c in self.components.values() if c.alive()]
        for c in alive:
            c.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c in alive:
            c.wait(max(0.1, deadline - time.monotonic()))
        for c in self.components.values():
            c.signal_group(signal.SIGKILL)
            c.wait(5)
            c.close()
        survivors = self._kill_marked_processes()
        for service in (self.redis, self.postgres):
            if service is not None:
                service.stop()
        if remove_home and not survivors:
            shutil.rmtree(self.home, ignore_errors=True)
        if survivors:
            raise AirflowStackError(f"processes survived SIGKILL: {survivors} (AIRFLOW_HOME {self.home})")

    def stack_processes(self) -> list[int]:
        """PIDs of every live process started by this stack, descendants and orphans included.

        A process is ours if any holds: it is in the session of a component (each is
        started as a session leader; task runners change process group, not
        session); it descends from a component (catches ``setsid`` children such as
        BashOperator's shell); or its environment carries our marker (catches
        orphans of those, unless they called setproctitle, which overwrites the
        memory behind /proc/PID/environ).
        """
        sessions = {c.pid for c in self.components.values() if c.proc is not None}
        alive = {c.pid for c in self.components.values() if c.alive()}
        table = _process_table()
        ours = {p.pid for p in table if p.sid in sessions or self._marker in p.environ}
        ours |= descendants_in(alive | ours, table)
        return sorted((ours | alive) & {p.pid for p in table})

    def _kill_marked_processes(self, timeout: float = 10) -> list[int]:
        """SIGKILL stragglers that left our process groups (task runners, orphans)."""
        deadline = time.monotonic() + timeout
        while pids := self.stack_processes():
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                return pids
            time.sleep(0.2)
        return []

    # -------------------------------------------------------------------- config

    def _start_services(self) -> None:
        """The Celery stack's own PostgreSQL and Redis (marked as ours, stopped in ``stop``)."""
        if self.kind != "celery":
            return
        self.postgres = Postgres().start()
        self.postgres.create_database()
        self.redis = Redis().start(env={**os.environ, STACK_ID_VAR: self.stack_id})

    def _write_config(self) -> None:
        """Passwords file for SimpleAuthManager, plus the env every component shares."""
        passwords = self.home / "simple_auth_manager_passwords.json"
        passwords.write_text(json.dumps({self.username: self.password, self.viewer_username: self.viewer_password}))
        self.env = self._base_env(passwords)
        if self.kind == "celery":
            self.worker_env = self._worker_env()

    def _db_settings(self) -> dict[str, str]:
        """Database and executor settings: what every component, the worker included, must agree on."""
        if self.kind == "sqlite":
            return {
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home}/airflow.db",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            }
        assert self.postgres is not None and self.redis is not None
        return {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres.url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            # Queue a burst of mapped tasks (the load scenario) in fewer scheduler loops.
            "AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY": "64",
        }

    @property
    def db_url(self) -> str:
        """The metadata database's SQLAlchemy URL, for tests that read what Airflow stored."""
        return self._db_settings()["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]

    def _shared_settings(self) -> dict[str, str]:
        """Settings a deployment copies to every machine: DAG files, API address, shared secrets."""
        return {
            STACK_ID_VAR: self.stack_id,
            **self._db_settings(),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__API__BASE_URL": f"{self.base_url}/",  # workers find the Execution API here
            **self._shared_secrets,
        }

    def _worker_env(self) -> dict[str, str]:
        """The Celery worker's environment, built from scratch as on another machine.

        No connection, variable or JWT secret: it gets those through the Execution
        API like any Airflow 3 worker. Only ``env`` entries that are not connections
        or variables (deployment settings) are added, as to every component.
        """
        self.worker_home.mkdir(parents=True, exist_ok=True)
        base = {k: os.environ[k] for k in WORKER_INHERITS if k in os.environ}
        extra = {k: v for k, v in self.extra_env.items() if not _is_secret_var(k)}
        return {
            **base,
            "AIRFLOW_HOME": str(self.worker_home),
            **self._shared_settings(),
            # Task logs on a volume all machines mount (or remote logging), as deployments do:
            # the API server reads a try's log from one place only once any part of it is
            # local (the triggerers' part is), so a worker-only log folder would hide the
            # worker's lines (Airflow 3.3 FileTaskHandler._read).
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            **extra,
        }

    def _base_env(self, passwords: Path) -> dict[str, str]:
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not (k.startswith("AIRFLOW__") or k in ("AIRFLOW_HOME", "AIRFLOW_CONFIG"))
            and not (self.kind == "celery" and _is_secret_var(k))  # those live in the DB there
        }
        extra = {k: v for k, v in self.extra_env.items() if not (self.kind == "celery" and _is_secret_var(k))}
        cfg = {
            "AIRFLOW_HOME": str(self.home),
            **self._shared_settings(),
            # LocalExecutor pre-forks this many workers; tasks here mostly wait on SSH.
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:ADMIN,{self.viewer_username}:VIEWER",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # Pick up new/changed DAG files within seconds, parse with one process (2 cores).
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            # Fast failover when a test kills a triggerer.
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            # A killed worker's task is failed (and retried) within seconds, not Airflow's 5 min.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        }
        return {**inherited, **cfg, **extra}

    def _migrate(self) -> None:
        log = self.home / "db-migrate.log"
        with open(log, "wb") as out:
            result = subprocess.run(
                [AIRFLOW, "db", "migrate"], env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=180
            )
        if result.returncode != 0:
            raise AirflowStackError(f"airflow db migrate failed ({result.returncode}):\n{tail(log)}")
        if self.kind == "sqlite":
            with closing(sqlite3.connect(self.home / "airflow.db")) as db:  # persists: readers stop blocking writers
                db.execute("PRAGMA journal_mode=WAL")
        else:
            self._import_connections()

    def _import_connections(self) -> None:
        """Put the ``AIRFLOW_CONN_*`` of the test process and of ``env`` into the database.

        In the Celery stack no component has them in its environment: the
        triggerers and the worker must get them from Airflow, as in a deployment.
        """
        conns = {
            k[len("AIRFLOW_CONN_") :].lower(): _conn_for_import(v)
            for k, v in {**os.environ, **self.extra_env}.items()
            if k.startswith("AIRFLOW_CONN_")
        }
        variables = {
            k[len("AIRFLOW_VAR_") :].lower(): v
            for k, v in {**os.environ, **self.extra_env}.items()
            if k.startswith("AIRFLOW_VAR_")
        }
        for what, items in (("connections", conns), ("variables", variables)):
            if not items:
                continue
            path = self.home / f"{what}.json"
            path.write_text(json.dumps(items))
            path.chmod(0o600)
            done = subprocess.run(
                [AIRFLOW, what, "import", str(path)], env=self.env, capture_output=True, text=True, timeout=180
            )
            if done.returncode != 0:
                raise AirflowStackError(f"airflow {what} import failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")

    # ---------------------------------------------------------------- components

    def _start_component(
        self,
        name: str,
        args: list[str],
        env: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> Component:
        home = Path((base_env or self.env)["AIRFLOW_HOME"])
        comp = Component(
            name=name,
            argv=[AIRFLOW, *args],
            log_path=home / f"{name}.log",
            env={**(base_env or self.env), **(env or {})},
        )
        self.components[name] = comp
        comp.start()
        return comp

    def check_alive(self) -> None:
        """Raise with its log tail if a component died without being killed on purpose."""
        for c in self.components.values():
            if not c.expected_dead and not c.alive():
                code = c.proc.returncode if c.proc else None
                raise AirflowStackError(
                    f"airflow {c.name} exited with code {code}; tail of {c.log_path}:\n{c.log_tail()}"
                )

    def component_log(self, name: str) -> str:
        return self.components[name].log_path.read_text(errors="replace")

    def diagnostics(self, lines: int = 40) -> str:
        """Tails of all component logs, to attach to a failing assertion."""
        return "\n".join(
            f"===== {c.name} (alive={c.alive()}) {c.log_path}\n{c.log_tail(lines)}" for c in self.components.values()
        )

    @property
    def triggerers(self) -> list[Component]:
        """Triggerer components still running, oldest first."""
        return [c for n, c in self.components.items() if n.startswith("triggerer-") and c.alive()]

    def start_triggerer(self, timeout: float | None = None) -> Component:
        """Start one more triggerer (its own log-server port); wait until its job heartbeats.

        Named ``triggerer-1``, ``triggerer-2``, ...; ``Component.job_id`` is its
        TriggererJob id, which is what ``trigger.triggerer_id`` points at.
        """
        timeout = timeout or self._component_budget()
        self._wait_api(timeout)
        known = {j["id"] for j in self.triggerer_jobs(alive_only=False)}
        self._triggerer_count += 1
        comp = self._start_component(
            f"triggerer-{self._triggerer_count}",
            ["triggerer"],
            env={"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())},
        )

        def new_job() -> int | None:
            fresh = [j["id"] for j in self.triggerer_jobs(alive_only=True) if j["id"] not in known]
            return fresh[0] if fresh else None

        comp.job_id = wait_until(new_job, timeout, f"{comp.name} to register its job", check=self.check_alive)
        return comp

    def kill_triggerer(
        self, name: str | None = None, sig: int = signal.SIGKILL, group: bool = True, timeout: float = 30
    ) -> Component:
        """Signal a triggerer (default: the oldest running one) and reap it.

        ``group=True`` signals its whole process group (main process, trigger-runner
        subprocess, log server), like a crashed host or container; ``group=False``
        only the main process, leaving Airflow to deal with its children.
        """
        alive = self.triggerers
        comp = self.components[name] if name else (alive[0] if alive else None)
        if comp is None or not comp.alive():
            raise AirflowStackError(f"no running triggerer {name or ''} to kill")
        comp.expected_dead = True
        if group:
            comp.signal_group(sig)
        else:
            os.kill(comp.pid, sig)
        if not comp.wait(timeout):
            raise AirflowStackError(f"{comp.name} (pid {comp.pid}) ignored signal {sig} for {timeout}s")
        return comp

    @property
    def workers(self) -> list[Component]:
        """Celery worker components still running (none in the SQLite stack)."""
        return [c for n, c in self.components.items() if n.startswith("celery-worker-") and c.alive()]

    def start_worker(self, timeout: float | None = None) -> Component:
        """Start one ``airflow celery worker`` (Celery stack); wait until it consumes the queue."""
        if self.kind != "celery":
            raise AirflowStackError("only the Celery stack has separate workers")
        timeout = timeout or self._component_budget()
        self._worker_count += 1
        name = f"celery-worker-{self._worker_count}"
        comp = self._start_component(
            name,
            ["celery", "worker", "--concurrency", str(self.worker_concurrency), "--celery-hostname", f"{name}@%h"],
            base_env=self.worker_env,
        )
        wait_until(
            lambda: f"{name}@" in (log := tail(comp.log_path, 400)) and " ready." in log,
            timeout,
            f"{name} to be ready",
            check=self.check_alive,
        )
        return comp

    def kill_worker(self, name: str | None = None, sig: int = signal.SIGKILL, timeout: float = 30) -> Component:
        """Kill a Celery worker's whole process group (the machine is gone): tasks it runs die with it."""
        comp = self.components[name] if name else (self.workers[0] if self.workers else None)
        if comp is None or not comp.alive():
            raise AirflowStackError(f"no running worker {name or ''} to kill")
        comp.expected_dead = True
        comp.signal_group(sig)
        if not comp.wait(timeout):
            raise AirflowStackError(f"{comp.name} (pid {comp.pid}) ignored signal {sig} for {timeout}s")
        return comp

    def restart_component(self, name: str, sig: int = signal.SIGKILL, down: float = 0.0) -> Component:
        """Kill a component's process group with ``sig``, wait ``down`` seconds, start it again (same name)."""
        comp = self.components[name]
        comp.expected_dead = True
        comp.signal_group(sig)
        if not comp.wait(30):
            raise AirflowStackError(f"{name} (pid {comp.pid}) ignored signal {sig} for 30s")
        comp.close()
        time.sleep(down)
        return self._start_component(name, comp.argv[1:], base_env=comp.env)

    def revive(self) -> list[str]:
        """Start again every component that exited on its own, as a process supervisor would.

        What systemd's ``Restart=always`` or a Kubernetes pod does for an Airflow
        component that exits (Airflow 3.3's scheduler, DAG processor and
        triggerer exit when they lose the database). Same name, argv and
        environment; a triggerer comes back with a new TriggererJob, whose id
        ``adopt_triggerer_jobs`` finds. Components killed on purpose stay dead.
        Returns the names started again.
        """
        revived = []
        for name, comp in list(self.components.items()):
            if comp.expected_dead or comp.alive():
                continue
            comp.expected_dead = True
            comp.close()
            if comp.job_id is not None:
                self._retired_job_ids.add(comp.job_id)
            self._start_component(name, comp.argv[1:], base_env=comp.env)
            revived.append(name)
        return revived

    def adopt_triggerer_jobs(self) -> None:
        """Give running triggerers without a job id the TriggererJobs no component claims yet.

        Unambiguous only when one such triggerer waits for its job (the usual
        case: one exits at a time); with several, the oldest job goes to the
        oldest triggerer.
        """
        waiting = [c for c in self.triggerers if c.job_id is None]
        if not waiting:
            return
        claimed = {c.job_id for c in self.components.values() if c.job_id is not None} | self._retired_job_ids
        fresh = sorted(j["id"] for j in self.triggerer_jobs(alive_only=True) if j["id"] not in claimed)
        for comp, job_id in zip(waiting, fresh, strict=False):
            comp.job_id = job_id

    def kill_task_worker(self, ti_id: str) -> None:
        """The machine running task instance ``ti_id`` dies: SIGKILL, no goodbye to Airflow.

        Celery stack: the whole worker goes (every task on it), and a fresh one
        starts, as a replaced machine would. SQLite stack: the LocalExecutor
        processes running that task (its supervisor and its task runner).
        """
        procs = self.worker_processes(ti_id)
        if not procs:
            raise AirflowStackError(f"no worker process runs task instance {ti_id}")
        if self.kind == "celery":
            [owner] = [c for c in self.workers if c.pid in _sessions_of([p.pid for p in procs])]
            self.kill_worker(owner.name)
            self.start_worker()
            return
        for proc in procs:
            with suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        wait_until(lambda: not self.has_worker(ti_id), 10, f"the processes of TI {ti_id} to die")

    def component_processes(self, comp: Component) -> list[int]:
        """Live processes of one component: its session, and what descends from it."""
        table = _process_table()
        ours = {p.pid for p in table if p.sid == comp.pid}
        return sorted(ours | descendants_in(ours | {comp.pid}, table))

    def ssh_connections(self, address: str, port: int) -> dict[str, int]:
        """Established TCP connections to ``address:port`` per component name (only those with one)."""
        inodes = _tcp_connections_to(address, port)
        counts = {}
        for comp in self.components.values():
            if comp.alive():
                n = sum(len(_socket_inodes(pid) & inodes) for pid in self.component_processes(comp))
                if n:
                    counts[comp.name] = n
        return counts

    def restart_triggerer(self, name: str | None = None, sig: int = signal.SIGKILL) -> Component:
        """Kill a triggerer with ``sig`` and start a fresh one (a new name and TriggererJob)."""
        self.kill_triggerer(name, sig=sig)
        return self.start_triggerer()

    # --------------------------------------------------------------------- HTTP

    @property
    def client(self) -> httpx.Client:
        """HTTP client carrying a bearer token from SimpleAuthManager's /auth/token."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.base_url, timeout=30)
            resp = self._client.post("/auth/token", json={"username": self.username, "password": self.password})
            if resp.status_code != 201:
                raise AirflowStackError(f"login failed: HTTP {resp.status_code} {resp.text}")
            self._client.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
        return self._client

    def token(self, username: str | None = None, password: str | None = None) -> str:
        """A JWT for a user (default: the admin), as the UI gets one at login."""
        username = username or self.username
        if password is None:
            password = self.viewer_password if username == self.viewer_username else self.password
        resp = httpx.post(f"{self.base_url}/auth/token", json={"username": username, "password": password}, timeout=30)
        if resp.status_code != 201:
            raise AirflowStackError(f"login of {username} failed: HTTP {resp.status_code} {resp.text}")
        return str(resp.json()["access_token"])

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        ok: Iterable[int] = (200,),
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Call ``/api/v2`` + path; raise with the response body unless the status is in ``ok``."""
        resp = self.client.request(method, API + path, json=json_body, params=params, headers=headers)
        if resp.status_code not in tuple(ok):
            raise AirflowStackError(f"{method} {path} -> HTTP {resp.status_code}: {resp.text[:2000]}")
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json() if "json" in resp.headers.get("content-type", "") else resp.text

    def health(self) -> dict[str, Any] | None:
        """``/api/v2/monitor/health`` (no auth needed), or None while the API is not up."""
        try:
            resp = httpx.get(f"{self.base_url}{API}/monitor/health", timeout=5)
        except httpx.HTTPError:
            return None
        return resp.json() if resp.status_code == 200 else None

    def _wait_api(self, timeout: float) -> None:
        wait_until(self.health, timeout, f"API server on {self.base_url}", check=self.check_alive)

    def _component_budget(self) -> float:
        """How long a component may take to come up: what is left of the startup budget
        while the stack starts, the whole budget when a test starts one later."""
        return self._startup_left() if self.startup_seconds is None else self.startup_timeout

    def _startup_left(self) -> float:
        """Seconds left of the startup budget (one deadline for all startup waits)."""
        return max(1.0, self._startup_deadline - time.monotonic())

    def _wait_ready(self) -> None:
        """All components healthy per the API, and the requested DAGs parsed."""

        def healthy() -> bool:
            h = self.health() or {}
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            return all((h.get(p) or {}).get("status") == "healthy" for p in parts)

        wait_until(healthy, self._startup_left(), "all components healthy", check=self.check_alive)
        for dag_id in self.dag_ids:
            wait_until(
                lambda d=dag_id: self.dag_exists(d),
                self._startup_left(),
                f"DAG {dag_id} to be parsed",
                check=self._check_alive_and_import_errors,
            )

    def _check_alive_and_import_errors(self) -> None:
        self.check_alive()
        errors = self.import_errors()
        if errors:
            detail = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)
            raise AirflowStackError(f"DAG import errors:\n{detail}")

    # --------------------------------------------------------------- DAGs, runs

    def import_errors(self) -> list[dict[str, Any]]:
        return self.request("GET", "/importErrors")["import_errors"]

    def dag_exists(self, dag_id: str) -> bool:
        return self.request("GET", f"/dags/{dag_id}", ok=(200, 404)).get("dag_id") == dag_id

    def unpause_dag(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json_body={"is_paused": False})

    def pause_dag(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json_body={"is_paused": True})

    def trigger_dag(self, dag_id: str, conf: Mapping[str, Any] | None = None, run_id: str | None = None) -> str:
        """Trigger a manual run (as the UI's Trigger button does); returns its run id."""
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf or {})}
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json_body=body)["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def dag_run_state(self, dag_id: str, run_id: str) -> str:
        return self.dag_run(dag_id, run_id)["state"]

    def wait_for_dag_run(self, dag_id: str, run_id: str, timeout: float = 120) -> str:
        """Wait for the run to be success or failed; returns that state."""
        return wait_until(
            lambda: (s := self.dag_run_state(dag_id, run_id)) in TERMINAL_RUN_STATES and s,
            timeout,
            f"run {dag_id}/{run_id} to finish",
            interval=1,
            check=self.check_alive,
        )

    # ----------------------------------------------------------- task instances

    @staticmethod
    def _ti_path(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
        base = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        return base if map_index < 0 else f"{base}/{map_index}"

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """All task instances of a run (mapped ones with their ``map_index``)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        found: list[dict[str, Any]] = []
        while True:  # the API serves at most [api] maximum_page_limit (100) per page
            page = self.request("GET", path, params={"limit": 100, "offset": len(found)})
            found += page["task_instances"]
            if not page["task_instances"] or len(found) >= page["total_entries"]:
                return found

    def task_states(self, dag_id: str, run_id: str) -> dict[tuple[str, int], str | None]:
        return {(t["task_id"], t["map_index"]): t["state"] for t in self.task_instances(dag_id, run_id)}

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        """One task instance: ``id`` (UUID), ``state``, ``try_number``, ``trigger``, ``triggerer_job``..."""
        return self.request("GET", self._ti_path(dag_id, run_id, task_id, map_index))

    def find_task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any] | None:
        """Like ``task_instance`` but None while it does not exist yet (e.g. before mapping expands)."""
        ti = self.request("GET", self._ti_path(dag_id, run_id, task_id, map_index), ok=(200, 404))
        return ti if "state" in ti else None

    def wait_for_task_state(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        state: str,
        map_index: int = -1,
        timeout: float = 60,
    ) -> dict[str, Any]:
        """Wait for a task instance to reach ``state``; fail early if it ends in another state."""

        def probe() -> dict[str, Any] | None:
            ti = self.find_task_instance(dag_id, run_id, task_id, map_index)
            if ti is None:
                return None
            if ti["state"] == state:
                return ti
            if ti["state"] in TERMINAL_TI_STATES and state not in TERMINAL_TI_STATES:
                raise AirflowStackError(f"{task_id}[{map_index}] ended {ti['state']!r} before reaching {state!r}")
            return None

        what = f"{dag_id}/{run_id}/{task_id}[{map_index}] -> {state}"
        return wait_until(probe, timeout, what, check=self.check_alive)

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        """A try's full log as text: one line per structured event, ``"[level] event key=value"``."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        body = self.request(
            "GET",
            path,
            params={"full_content": "true", "map_index": map_index},
            headers={"Accept": "application/json"},
        )
        return "\n".join(self._format_log_entry(e) for e in body.get("content", []))

    @staticmethod
    def _format_log_entry(entry: dict[str, Any] | str) -> str:
        if isinstance(entry, str):
            return entry
        extras = " ".join(f"{k}={v}" for k, v in entry.items() if k not in ("event", "timestamp", "level"))
        level = entry.get("level")
        return f"{f'[{level}] ' if level else ''}{entry.get('event', '')}{f' {extras}' if extras else ''}"

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """An XCom value, deserialized by the API into plain JSON."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.request("GET", path, params={"map_index": map_index, "deserialize": "true"})["value"]

    def set_task_state(
        self, dag_id: str, run_id: str, task_id: str, new_state: str, map_index: int = -1
    ) -> list[dict[str, Any]]:
        """Mark a task instance failed/success/skipped, as the UI's "Mark as" buttons do."""
        body = self.request(
            "PATCH", self._ti_path(dag_id, run_id, task_id, map_index), json_body={"new_state": new_state}
        )
        return list(body.get("task_instances", [body]))

    def mark_failed(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        return self.set_task_state(dag_id, run_id, task_id, "failed", map_index)

    def mark_success(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        return self.set_task_state(dag_id, run_id, task_id, "success", map_index)

    def clear_tasks(
        self, dag_id: str, run_id: str, task_ids: Sequence[str | tuple[str, int]], **options: Any
    ) -> list[dict[str, Any]]:
        """Clear task instances (any state) so they run again; returns the cleared TIs."""
        body = {
            "dry_run": False,
            "only_failed": False,
            "dag_run_id": run_id,
            "task_ids": [list(t) if isinstance(t, tuple) else t for t in task_ids],
            **options,
        }
        return list(self.request("POST", f"/dags/{dag_id}/clearTaskInstances", json_body=body)["task_instances"])

    # ------------------------------------------------------------------ triggers

    def triggerer_jobs(self, alive_only: bool = True) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"job_type": "TriggererJob", "limit": 100}
        if alive_only:
            params["is_alive"] = "true"
        return list(self.request("GET", "/jobs", params=params)["jobs"])

    def trigger_holder(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str | None:
        """Name of the triggerer component running this deferred task's trigger, if any.

        Airflow has no public "list triggers" endpoint; the task instance carries
        ``trigger`` (with ``triggerer_id`` = TriggererJob id) instead.
        """
        trigger = self.task_instance(dag_id, run_id, task_id, map_index).get("trigger") or {}
        job_id = trigger.get("triggerer_id")
        if job_id is None:
            return None
        names = [c.name for c in self.components.values() if c.job_id == job_id]
        return names[0] if names else f"job-{job_id}"

    def wait_for_trigger_holder(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, timeout: float = 30
    ) -> str:
        """Wait until a triggerer has picked up the task's trigger (a fresh trigger is unassigned)."""
        return wait_until(
            lambda: self.trigger_holder(dag_id, run_id, task_id, map_index),
            timeout,
            f"a triggerer to pick up the trigger of {task_id}[{map_index}]",
            check=self.check_alive,
        )

    # ------------------------------------------------------------------- workers

    def worker_processes(self, ti_id: str | None = None) -> list[WorkerProcess]:
        """LocalExecutor worker processes of this stack, optionally only those running ``ti_id``.

        What they look like in Airflow 3.3 (process titles set via setproctitle,
        so visible in ``ps`` and /proc/PID/cmdline):

        * The scheduler's LocalExecutor pre-forks ``[core] parallelism`` pool
          workers (fork start method on Linux). Idle, each is titled
          ``airflow worker -- LocalExecutor: <idle>``; these exist all the time.
        * A pool worker that picks up a task retitles itself
          ``airflow worker -- LocalExecutor: <ti uuid>`` and acts as the task-sdk
          supervisor for it.
        * The supervisor forks the task runner into its own process group. It
          first shows the supervisor's title, then (task-sdk ``startup()``)
          ``airflow worker -- <ti uuid>``.
        * When the task defers, the runner exits and the pool worker returns to
          ``<idle>``: a deferred task holds no process, only a trigger row.

        ``<ti uuid>`` is the task instance's ``id`` from the REST API (a new one per try).
        """
        procs = []
        for pid in self.stack_processes():
            title = _proc_title(pid)
            if not title.startswith(WORKER_TITLE):
                continue
            proc = WorkerProcess(pid=pid, title=title, ti_id=_parse_worker_title(title))
            if ti_id is None or proc.ti_id == str(ti_id):
                procs.append(proc)
        return procs

    def busy_workers(self) -> list[WorkerProcess]:
        """Worker processes running any task (idle pool workers excluded)."""
        return [p for p in self.worker_processes() if p.ti_id is not None]

    def has_worker(self, ti_id: str) -> bool:
        return bool(self.worker_processes(ti_id))

    def wait_for_no_worker(self, ti_id: str, timeout: float = 20) -> None:
        """Wait until no process runs task instance ``ti_id`` (e.g. after it deferred)."""
        wait_until(lambda: not self.has_worker(ti_id), timeout, f"no worker process for TI {ti_id}")
