"""Fixtures shared by every suite: a real sshd on loopback, hooks per user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.sshd import SSHServer, start_server

REPO = Path(__file__).resolve().parent.parent
# Airflow reads its config at import, so this runs before anything imports
# it: a throwaway AIRFLOW_HOME on SQLite, with the example DAGs and the test
# DAGs as two bundles (dag.test() syncs DAGs from the configured bundles).
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="ssh-async-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
    [
        {
            "name": name,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(path)},
        }
        for name, path in (("examples", REPO / "dags"), ("tests", REPO / "tests" / "dags"))
    ]
)

SHELL_USERS = ("asyncdash", "asyncbash", "asyncash")
# The example DAGs' connections, all pointed at the test sshd.
EXAMPLE_CONNECTIONS = {
    "ssh_async_db": "asyncdash",
    "ssh_async_backup": "asyncbash",
    "ssh_async_host_a": "asyncdash",
    "ssh_async_host_b": "asyncbash",
}


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """One sshd for the session; a harness failure fails the suite (no skip)."""
    server = start_server(tmp_path_factory.mktemp("sshd"))
    for user in SHELL_USERS:
        server.set_connection(f"test_{user}", user)
    for conn_id, user in EXAMPLE_CONNECTIONS.items():
        server.set_connection(conn_id, user)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def job_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_hook(sshd: SSHServer) -> Callable[..., object]:
    from airflow_ssh_async.hooks import SSHAsyncJobHook

    def make(user: str = "asyncdash", **kwargs: object) -> SSHAsyncJobHook:
        return SSHAsyncJobHook(f"test_{user}", **kwargs)

    return make


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Migrate the throwaway metadata DB once; a failure fails the suite."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"airflow db migrate failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="session")
def dag_bag(airflow_db: None) -> object:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(REPO / "tests" / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag
