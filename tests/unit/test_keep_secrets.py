"""The operator keeps its task's secrets sealed in the task_state_store, for the Remote jobs view (issue 21)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_ssh_async.masking import SECRETS_KEY, unseal


class Store:
    """The task_state_store's get/set, in a dict (the operator's only use of it here)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.writes = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self.values[key] = value
        self.writes += 1


def _fernet_key(value: str | None) -> None:
    from airflow.sdk.crypto import get_fernet

    if value is None:
        os.environ.pop("AIRFLOW__CORE__FERNET_KEY", None)
    else:
        os.environ["AIRFLOW__CORE__FERNET_KEY"] = value
    get_fernet.cache_clear()


@pytest.fixture
def fernet_key() -> Iterator[None]:
    before = os.environ.get("AIRFLOW__CORE__FERNET_KEY")
    _fernet_key(base64.urlsafe_b64encode(os.urandom(32)).decode())
    try:
        yield
    finally:
        _fernet_key(before)


def operator(secrets: list[str]) -> Any:
    from airflow_ssh_async import SSHAsyncJobOperator

    op = SSHAsyncJobOperator(task_id="t", ssh_conn_id="c", command="true")
    op._secrets = secrets
    return op


def test_secrets_are_kept_sealed_and_each_try_adds_its_own(fernet_key: None) -> None:
    store = Store()
    operator(["s3cret-one"])._keep_secrets({"task_state_store": store})
    token = store.values[SECRETS_KEY]
    assert "s3cret-one" not in token and unseal(token) == ["s3cret-one"]
    operator(["s3cret-two"])._keep_secrets({"task_state_store": store})  # a retry with a rotated password
    assert unseal(store.values[SECRETS_KEY]) == ["s3cret-one", "s3cret-two"]
    writes = store.writes
    operator(["s3cret-two"])._keep_secrets({"task_state_store": store})
    assert store.writes == writes, "nothing new: nothing written"


def test_nothing_is_kept_without_a_fernet_key_or_without_secrets() -> None:
    before = os.environ.get("AIRFLOW__CORE__FERNET_KEY")
    _fernet_key("")
    try:
        store = Store()
        operator(["s3cret-one"])._keep_secrets({"task_state_store": store})
        assert store.values == {}, "never in clear"
    finally:
        _fernet_key(before)
    store = Store()
    operator([])._keep_secrets({"task_state_store": store})
    assert store.values == {}
    operator(["s3cret-one"])._keep_secrets({})  # no store (an older Airflow's context): nothing to do
