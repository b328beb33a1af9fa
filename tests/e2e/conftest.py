"""One real Airflow 3.3 per stack kind for the whole e2e suite, wired to the test sshd.

Two kinds (tests/harness/airflow_stack.py): ``sqlite`` (SQLite, LocalExecutor,
one triggerer) and ``celery`` (PostgreSQL, Redis, CeleryExecutor, a worker
"on another machine", two triggerers). Every test that takes ``airflow_stack``
runs on each kind (``@pytest.mark.stacks("celery")`` narrows it); pytest
groups the tests by kind, so one stack at a time runs and each starts once.
``E2E_STACKS=sqlite`` (comma-separated) runs only those kinds' tests.

A stack starts after the sshd fixtures have put their ``AIRFLOW_CONN_*``
variables into ``os.environ``: the SQLite stack's processes inherit them, the
Celery stack imports them into its database. A startup failure fails every
test; nothing here skips.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.airflow_stack import KINDS, AirflowStack
from tests.harness.sshd import SSHServer, home, start_server

DAGS = Path(__file__).parent / "dags"
DAG_IDS = (
    "e2e_job",
    "e2e_watch_2s",
    "e2e_timeout",
    "e2e_retry",
    "e2e_launch_only",
    "e2e_sensor",
    "e2e_bad_input",
    "e2e_secrets",
    "e2e_worker_kill",
    "e2e_mapped",
    "e2e_exec_timeout",
    "e2e_exec_once",
    "e2e_exec_job_limit",
    "e2e_exec_clear",
    "e2e_dagrun_timeout",
    "e2e_ui",
    "e2e_ui_secrets",
    "e2e_ui_become",
)
USER = "asyncdash"
# A bound on a start that hangs, not a speed target: a busy 2-core machine (CI with
# both sessions and a core kept busy) took 64 s for SQLite. The Celery stack also
# starts PostgreSQL, Redis, a second triggerer and a worker.
STARTUP_LIMIT = {"sqlite": 240.0, "celery": 400.0}
SELECTED_KINDS = tuple(k.strip() for k in os.environ.get("E2E_STACKS", ",".join(KINDS)).split(",") if k.strip())
SECOND_HOST = "127.0.0.2"  # a second sshd, its own host key and port: another host to the provider

# Tests that run after every other test of their stack: what they leave behind meets no other test.
LAST_MARKS = ("load", "outage")

pytestmark = pytest.mark.e2e


def _keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, capture_output=True, timeout=30
    )
    return path


@pytest.fixture(scope="session")
def bad_connections(sshd: SSHServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Connections a DAG author could get wrong (scenario 12), all aimed at the test sshd."""
    keys = tmp_path_factory.mktemp("e2e-keys")
    stranger = _keygen(keys / "not_authorized")  # a key no authorized_keys lists
    impostor = _keygen(keys / "other_host_key")  # the host key we are told to expect
    impostor_line = " ".join((impostor.parent / f"{impostor.name}.pub").read_text().split()[:2])
    return {
        "AIRFLOW_CONN_E2E_WRONG_KEY": sshd.conn_uri_json(USER, key_file=str(stranger)),
        "AIRFLOW_CONN_E2E_BAD_HOST_KEY": sshd.conn_uri_json(USER, host_key=impostor_line),
    }


@pytest.fixture(scope="session")
def secret_values() -> dict[str, str]:
    """The secrets of the e2e_secrets DAG, new each session so no other text holds them."""
    tag = os.urandom(6).hex()
    return {
        "db_password": f"e2e-Db-Pa55-{tag}",
        "api_secret": f"e2e-api-{tag}",
        "context": f"e2e-ctx-{tag}",
        "service_token": f"e2e-tok-{tag}",
    }


@pytest.fixture(scope="session")
def ui_secrets_dir() -> Iterator[str]:
    """The async_dir of the e2e_ui_secrets DAG, new each session: the Remote jobs view shows
    in clear a job whose task this Airflow does not know (docs/ui.md), so the list of one
    session must never meet the jobs of another (the other stack's session, or a run that was
    killed before its cleanup)."""
    path = f"~/.airflow_async_ui_secrets-{os.urandom(4).hex()}"
    yield path
    shutil.rmtree(home(USER) / path[2:], ignore_errors=True)


def _secret_env(values: dict[str, str]) -> dict[str, str]:
    import json

    db = {"conn_type": "postgres", "host": "db", "login": "app", "password": values["db_password"]}
    return {
        "AIRFLOW_CONN_E2E_DB": json.dumps(db),
        "AIRFLOW_VAR_E2E_API_SECRET": values["api_secret"],
        "E2E_CONTEXT_SECRET": values["context"],
        "E2E_SERVICE_TOKEN": values["service_token"],
    }


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that takes ``airflow_stack`` once per stack kind (or per its ``stacks`` mark)."""
    if "airflow_stack" not in metafunc.fixturenames:
        return
    mark = metafunc.definition.get_closest_marker("stacks")
    kinds = list(mark.args) if mark else list(KINDS)
    unknown = set(kinds) - set(KINDS)
    assert not unknown, f"{metafunc.definition.nodeid}: unknown stack kinds {unknown}"
    metafunc.parametrize("airflow_stack", kinds, indirect=True, scope="session")


@pytest.hookimpl(trylast=True)  # after pytest has grouped the tests by stack kind
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the kinds E2E_STACKS leaves out (deselected, not skipped: nothing failed to start);
    load and outage tests (``@pytest.mark.load``, ``outage``) last, so that what they leave behind
    meets no other test."""
    unknown = set(SELECTED_KINDS) - set(KINDS)
    if unknown:
        raise pytest.UsageError(f"E2E_STACKS names unknown stack kinds {sorted(unknown)}; known: {KINDS}")
    keep, drop = [], []
    for item in items:
        kind = _stack_kind(item)
        (drop if kind and kind not in SELECTED_KINDS else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    closing = [i for i in keep if any(i.get_closest_marker(m) for m in LAST_MARKS)]
    rest = [i for i in keep if i not in closing]
    for item in closing:
        kind = _stack_kind(item)  # just after the last other test on its stack, before the stack stops
        last = max((n for n, i in enumerate(rest) if _stack_kind(i) == kind), default=len(rest) - 1)
        rest.insert(last + 1, item)
    items[:] = rest


def _stack_kind(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("airflow_stack") if callspec else None


@pytest.fixture(scope="session")
def second_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """A second SSH host (sshd on 127.0.0.2, own keys), for jobs spread over two hosts."""
    server = start_server(tmp_path_factory.mktemp("sshd-b"), address=SECOND_HOST)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def silent_host() -> Iterator[str]:
    """A connection to a port that accepts TCP and never says a word (a hung host): its
    URI. The kernel completes the handshake from the listen backlog; no SSH banner comes."""
    import json
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    try:
        yield json.dumps({"conn_type": "ssh", "host": "127.0.0.1", "port": port, "login": USER})
    finally:
        sock.close()


_failed: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    if outcome.get_result().failed:
        _failed.append(item.nodeid)


@pytest.fixture(scope="session")
def airflow_stack(
    request: pytest.FixtureRequest,
    sshd: SSHServer,
    second_host: SSHServer,
    bad_connections: dict[str, str],
    secret_values: dict[str, str],
    ui_secrets_dir: str,
    silent_host: str,
) -> Iterator[AirflowStack]:
    """The suite's stack of one kind (``request.param``). ``sshd`` first: its connections must be set."""
    assert os.environ.get("AIRFLOW_CONN_TEST_ASYNCDASH"), "the sshd fixture did not set its connections"
    kind = request.param
    env = {
        **bad_connections,
        **_secret_env(secret_values),
        "E2E_UI_SECRETS_DIR": ui_secrets_dir,
        "AIRFLOW_CONN_TEST_ASYNCDASH_B": second_host.conn_uri_json(USER),
        "AIRFLOW_CONN_E2E_UI_SILENT": silent_host,  # the Remote jobs view's hung host (test_ui.py)
        # The view's per-host time bound, short enough for a test to wait it out.
        "AIRFLOW__SSH_ASYNC__UI_HOST_TIMEOUT": "12",
    }
    stack = AirflowStack(DAGS, env=env, dag_ids=DAG_IDS, parallelism=5 if kind == "sqlite" else 32, kind=kind)
    stack.start()  # raises (and cleans up) when Airflow cannot start: the tests fail, never skip
    try:
        limit = STARTUP_LIMIT[kind]
        assert stack.startup_seconds is not None and stack.startup_seconds < limit, (
            f"the {kind} stack took {stack.startup_seconds:.1f}s to start (limit {limit:.0f}s)"
        )
        for dag_id in DAG_IDS:
            stack.unpause_dag(dag_id)
        yield stack
    finally:
        keep = bool(_failed) or stack.keep_home
        stack.stop(remove_home=not keep)
        if keep:
            print(f"\nAirflowStack ({kind}): logs kept in {stack.home}")


# --- the host side -------------------------------------------------------------------


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def job_processes(job_id: str) -> list[int]:
    """Live processes of a job on the host: its process tree (the variable the
    supervisor exports to it) and its supervisor (the job id in its argv)."""
    return jobs_processes([job_id]).get(job_id, [])


def jobs_processes(job_ids: list[str]) -> dict[str, list[int]]:
    """``job_processes`` for many jobs with one pass over /proc (the load scenario has 200)."""
    markers = {f"AIRFLOW_ASYNC_JOB_ID={j}".encode(): j for j in job_ids}
    ids = {j.encode(): j for j in job_ids}
    found: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat")
        if not stat or stat[stat.rindex(b")") + 2 :].split()[0] == b"Z":
            continue
        argv = _read(f"/proc/{entry}/cmdline").split(b"\0")
        owners = {markers[v] for v in _read(f"/proc/{entry}/environ").split(b"\0") if v in markers}
        if any(a.endswith(b"/supervise.sh") for a in argv):
            owners |= {ids[a] for a in argv if a in ids}
        for job_id in owners:
            found.setdefault(job_id, []).append(int(entry))
    return found


def kill_job_processes(job_id: str) -> None:
    kill_jobs_processes([job_id])


def kill_jobs_processes(job_ids: list[str]) -> None:
    for pids in jobs_processes(job_ids).values():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class RemoteJobs:
    """Job ids a test uses; at teardown their processes and files go."""

    def __init__(self, user: str = USER) -> None:
        self.user = user
        self.home = home(user)
        self.async_dir = self.home / ".airflow_async"
        self.ids: list[str] = []

    def new(self, name: str) -> str:
        job_id = f"e2e-{name}-{os.urandom(4).hex()}"
        self.ids.append(job_id)
        return job_id

    def dir(self, job_id: str) -> Path:
        return self.async_dir / job_id

    def file(self, name: str, job_id: str) -> Path:
        """A per-job file in the user's home (markers, release switches)."""
        return self.home / f"{name}-{job_id}"

    def cleanup(self) -> None:
        kill_jobs_processes(self.ids)
        for job_id in self.ids:
            for path in self.async_dir.glob(f"{job_id}*"):
                shutil.rmtree(path, ignore_errors=True)
            for path in (self.async_dir / ".archive").glob(f"{job_id}*"):
                shutil.rmtree(path, ignore_errors=True)
        ours = re.compile("|".join(rf"-{re.escape(j)}" for j in self.ids)) if self.ids else None
        for path in self.home.iterdir() if ours else ():
            if ours.search(path.name):
                path.unlink(missing_ok=True)


@pytest.fixture
def remote_jobs() -> Iterator[RemoteJobs]:
    jobs = RemoteJobs()
    try:
        yield jobs
    finally:
        jobs.cleanup()


_metrics: dict[str, dict[str, object]] = {}


@pytest.fixture
def metrics(request: pytest.FixtureRequest) -> dict[str, object]:
    """Numbers a test measured (seconds, counts); written to $E2E_METRICS (JSON) at the end."""
    return _metrics.setdefault(request.node.name, {})


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("E2E_METRICS")
    if path and _metrics:
        import json

        Path(path).write_text(json.dumps(_metrics, indent=2, sort_keys=True))
