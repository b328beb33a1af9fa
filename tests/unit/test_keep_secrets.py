"""The operator keeps its task's secrets sealed in the task_state_store, for the Remote jobs view (issue 21)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_ssh_async.masking import SECRETS_KEY, seal_for, unseal_for


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


TI = SimpleNamespace(dag_id="etl", task_id="t", run_id="manual__1", map_index=-1)
OWNER = "etl/t/manual__1/-1"  # the task instance, as job.json's origin names it


def context(store: Store) -> dict[str, Any]:
    return {"task_state_store": store, "ti": TI}


def operator(secrets: list[str]) -> Any:
    from airflow_ssh_async import SSHAsyncJobOperator

    op = SSHAsyncJobOperator(task_id="t", ssh_conn_id="c", command="true")
    op._secrets = secrets
    return op


def test_secrets_are_kept_sealed_and_each_try_adds_its_own(fernet_key: None) -> None:
    store = Store()
    operator(["s3cret-one"])._keep_secrets(context(store))
    token = store.values[SECRETS_KEY]
    assert "s3cret-one" not in token and unseal_for(OWNER, token) == ["s3cret-one"]
    operator(["s3cret-two"])._keep_secrets(context(store))  # a retry with a rotated password
    assert unseal_for(OWNER, store.values[SECRETS_KEY]) == ["s3cret-one", "s3cret-two"]
    writes = store.writes
    operator(["s3cret-two"])._keep_secrets(context(store))
    assert store.writes == writes, "nothing new: nothing written"


def test_a_token_counts_only_for_the_task_instance_it_was_sealed_for(fernet_key: None) -> None:
    token = seal_for(OWNER, ["s3cret-one"])
    assert token is not None
    with pytest.raises(ValueError, match="another task instance"):
        unseal_for("etl/other/manual__1/-1", token)  # copied into another task's store by an editor
    with pytest.raises(ValueError):
        unseal_for(OWNER, '["written", "by hand"]')  # the store is writable through the REST API
    store = Store()
    store.values[SECRETS_KEY] = seal_for("etl/other/manual__1/-1", ["other-secret"])
    operator(["s3cret-one"])._keep_secrets(context(store))
    assert unseal_for(OWNER, store.values[SECRETS_KEY]) == ["s3cret-one"], "another task's token is replaced"


def test_the_view_withholds_the_output_of_a_task_that_kept_no_secrets() -> None:
    from airflow_ssh_async.ui.masks import masking_of as _masking_of
    from airflow_ssh_async.ui.sources import TaskSecrets

    ended = TaskSecrets(("s3cret-one",), from_trigger=False, kept=False, launcher=True)
    assert _masking_of(ended, 5, sealing=True).withheld, "entry deleted or replaced: fail closed"
    assert not _masking_of(ended, 5, sealing=False).withheld, "no Fernet key: nothing could be kept"
    assert not _masking_of(TaskSecrets(("s3cret-one",), kept=True, launcher=True), 5, sealing=True).withheld
    assert not _masking_of(TaskSecrets(("s",), from_trigger=True, launcher=True), 5, sealing=True).withheld
    assert not _masking_of(TaskSecrets(), 5, sealing=True).withheld, "not a task of the operator (CLI origin)"
    assert (
        _masking_of(TaskSecrets(("s3cret-one",), kept=True, launcher=True), 5, True).masker.mask("pw=s3cret-one")
        == "pw=***"
    )


def test_nothing_is_kept_without_a_fernet_key_or_without_secrets() -> None:
    before = os.environ.get("AIRFLOW__CORE__FERNET_KEY")
    _fernet_key("")
    try:
        store = Store()
        operator(["s3cret-one"])._keep_secrets(context(store))
        assert store.values == {}, "never in clear"
    finally:
        _fernet_key(before)
    store = Store()
    operator([])._keep_secrets(context(store))
    assert store.values == {}
    operator(["s3cret-one"])._keep_secrets({})  # no store (an older Airflow's context): nothing to do
