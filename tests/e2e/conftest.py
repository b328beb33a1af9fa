"""One real Airflow 3.3 for the whole e2e suite, wired to the session's test sshd.

The stack (API server, scheduler, DAG processor, triggerer: separate
processes, see tests/harness/airflow_stack.py) starts once, after the sshd
fixture has put its ``AIRFLOW_CONN_*`` variables into ``os.environ``, which
the stack's processes inherit. A startup failure fails every test; nothing
here skips.
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

from tests.harness.airflow_stack import AirflowStack
from tests.harness.sshd import SSHServer, home

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
)
USER = "asyncdash"
STARTUP_LIMIT = 60.0

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


def _secret_env(values: dict[str, str]) -> dict[str, str]:
    import json

    db = {"conn_type": "postgres", "host": "db", "login": "app", "password": values["db_password"]}
    return {
        "AIRFLOW_CONN_E2E_DB": json.dumps(db),
        "AIRFLOW_VAR_E2E_API_SECRET": values["api_secret"],
        "E2E_CONTEXT_SECRET": values["context"],
        "E2E_SERVICE_TOKEN": values["service_token"],
    }


_failed: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    if outcome.get_result().failed:
        _failed.append(item.nodeid)


@pytest.fixture(scope="session")
def airflow_stack(
    sshd: SSHServer, bad_connections: dict[str, str], secret_values: dict[str, str]
) -> Iterator[AirflowStack]:
    """The one stack of the suite. ``sshd`` first: its connections must be in the environment."""
    assert os.environ.get("AIRFLOW_CONN_TEST_ASYNCDASH"), "the sshd fixture did not set its connections"
    env = {**bad_connections, **_secret_env(secret_values)}
    stack = AirflowStack(DAGS, env=env, dag_ids=DAG_IDS, parallelism=5)
    stack.start()  # raises (and cleans up) when Airflow cannot start: the tests fail, never skip
    try:
        assert stack.startup_seconds is not None and stack.startup_seconds < STARTUP_LIMIT, (
            f"Airflow took {stack.startup_seconds:.1f}s to start (limit {STARTUP_LIMIT:.0f}s)"
        )
        for dag_id in DAG_IDS:
            stack.unpause_dag(dag_id)
        yield stack
    finally:
        keep = bool(_failed) or stack.keep_home
        stack.stop(remove_home=not keep)
        if keep:
            print(f"\nAirflowStack: logs kept in {stack.home}")


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
    marker = f"AIRFLOW_ASYNC_JOB_ID={job_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat")
        if not stat or stat[stat.rindex(b")") + 2 :].split()[0] == b"Z":
            continue
        argv = _read(f"/proc/{entry}/cmdline").split(b"\0")
        if marker in _read(f"/proc/{entry}/environ").split(b"\0") or (
            any(a.endswith(b"/supervise.sh") for a in argv) and job_id.encode() in argv
        ):
            found.append(int(entry))
    return found


def kill_job_processes(job_id: str) -> None:
    for pid in job_processes(job_id):
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
        for job_id in self.ids:
            kill_job_processes(job_id)
        for job_id in self.ids:
            for path in self.async_dir.glob(f"{job_id}*"):
                shutil.rmtree(path, ignore_errors=True)
            for path in (self.async_dir / ".archive").glob(f"{job_id}*"):
                shutil.rmtree(path, ignore_errors=True)
            for path in self.home.iterdir():
                if re.search(rf"-{re.escape(job_id)}", path.name):
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
