"""Fixtures shared by every suite: a real sshd on loopback, hooks per user."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.harness.sshd import SSHServer, start_server

# Airflow reads its config at import: keep tests off any real AIRFLOW_HOME.
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")

SHELL_USERS = ("asyncdash", "asyncbash", "asyncash")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """One sshd for the session; a harness failure fails the suite (no skip)."""
    server = start_server(tmp_path_factory.mktemp("sshd"))
    for user in SHELL_USERS:
        server.set_connection(f"test_{user}", user)
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
