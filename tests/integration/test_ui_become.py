"""The Remote jobs view's data layer (ui/hosts.py) reads a become_user's jobs through sudo (issue 19).

Real sshd, the real sudoers rule of tests/harness/become.py (the login users may
run /bin/sh as asynctarget), real signals. The job folder is asynctarget's,
mode 0700: nothing of it is readable by the login, so every listing, output
read and kill that works here went through the elevation.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_ssh_async.hooks import SSHAsyncJobHook
from airflow_ssh_async.ui.hosts import HostCache
from tests.harness.become import TARGET, processes_of, sudoers_rules
from tests.harness.sshd import home

pytestmark = pytest.mark.timeout(120)
CONN = "test_asyncdash"
ASYNC_DIR = "~/.airflow_async_ui_become"
COUNTER = 'i=0; while true; do i=$((i+1)); echo "line $i as $(id -un)"; sleep 0.2; done'


@pytest.fixture(scope="module")
def rules(sshd) -> Iterator[Path]:
    with sudoers_rules() as path:
        yield path


@pytest.fixture
def target_dir(rules) -> Iterator[Path]:
    path = home(TARGET) / ASYNC_DIR[2:]
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def wait_for(check, limit: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} within {limit}s"
        time.sleep(0.2)


def test_the_view_lists_follows_and_kills_a_become_users_job_through_sudo(target_dir: Path, job_id: str) -> None:
    try:
        _follow_and_kill(target_dir, job_id)
    finally:
        from tests.e2e.conftest import kill_jobs_processes

        kill_jobs_processes([job_id])  # only this job's: other tests may run jobs as the target too


def _follow_and_kill(target_dir: Path, job_id: str) -> None:
    launched = SSHAsyncJobHook(CONN, ASYNC_DIR, become_user=TARGET).launch(
        job_id, COUNTER, origin=f"e2e_ui/job/manual__{job_id}/-1"
    )
    assert launched.job_dir == f"{target_dir}/{job_id}"
    wait_for(lambda: (target_dir / job_id / "job.json").exists(), 30, "job.json")
    assert os.stat(target_dir / job_id).st_mode & 0o077 == 0, "the folder is the target's alone"

    async def scenario() -> None:
        cache = HostCache(refresh=0.0, host_timeout=30)
        # The login's own async_dir of that name holds no such job: the view must ask as the target.
        mine = await cache.snapshot(CONN, ASYNC_DIR)
        assert mine.find(job_id) is None, mine.rows
        snap = await cache.snapshot(CONN, ASYNC_DIR, TARGET, "sudo", fresh=True)
        assert not snap.error, snap.error
        assert snap.resolved_dir == str(target_dir) and f"as {TARGET!r} via sudo" in snap.label
        row = snap.find(job_id)
        assert row is not None and row.state == "running" and dict(row.facts)["user"] == TARGET, row
        assert row.origin is not None and row.origin.dag_id == "e2e_ui"

        size = 0
        for _ in range(50):  # output read as the target, up to the size the snapshot saw
            snap = await cache.snapshot(CONN, ASYNC_DIR, TARGET, "sudo", fresh=True)
            row = snap.find(job_id)
            assert row is not None
            size = dict(row.sizes).get("stdout", 0)
            if size:
                break
            await asyncio.sleep(0.2)
        chunk = await cache.read(snap, row.job_dir, "stdout", 0, size, size)
        assert chunk.data.startswith(f"line 1 as {TARGET}\n".encode()), chunk

        assert await cache.cancel(snap, row.job_dir, 1) == "cancelled"
        for _ in range(100):
            snap = await cache.snapshot(CONN, ASYNC_DIR, TARGET, "sudo", fresh=True)
            row = snap.find(job_id)
            if row is not None and row.state == "cancelled":
                break
            await asyncio.sleep(0.2)
        assert row is not None and row.state == "cancelled", row

    asyncio.run(scenario())
    left = [p for p in processes_of(TARGET) if p[1] == launched.pid or p[2] in (launched.pid, launched.supervisor_pid)]
    assert left == [], f"processes of the killed job left (root's ps): {left}"


def test_a_become_user_without_a_rule_shows_as_refused_in_its_section(rules) -> None:
    from tests.harness.become import NO_RULE

    async def look() -> None:
        snap = await HostCache(refresh=0.0, host_timeout=30).snapshot(CONN, ASYNC_DIR, NO_RULE, "sudo")
        assert snap.error_kind == "refused" and NO_RULE in snap.error and not snap.rows, snap
        assert "NOPASSWD" in snap.error or "sudoers" in snap.error, snap.error

    asyncio.run(look())


def test_airflow_records_name_the_become_user_and_keep_the_secrets_for_the_view(rules, dag_bag, job_id) -> None:
    """What the view reads from Airflow's records (ui/sources.py), after a real run of a become_user
    task: the section and the task's job name the user; the task_state_store entry gives the secrets."""
    import json

    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_ssh_async.masking import SECRETS_KEY
    from airflow_ssh_async.ui import sources
    from tests.integration.test_operator import run_dag, ti_of

    dag_run = run_dag(dag_bag, "ssh_async_become", job_id=job_id, command="echo hi", become_user=TARGET)
    assert ti_of(dag_run).state == "success"
    found = sources.recorded_sections()
    assert ("ssh_async_become", sources.Section(CONN, "~/.airflow_async", TARGET, "sudo")) in found, found
    job, why = sources.task_job("ssh_async_become", dag_run.run_id, "job", -1)
    assert job is not None and (job.job_id, job.become_user, job.become_method) == (job_id, TARGET, "sudo"), why

    key = ("ssh_async_become", dag_run.run_id, "job", -1)
    other = ("ssh_async_become", "no-such-run", "job", -1)
    with create_session() as session:
        kept = session.scalars(
            select(TaskStateStoreModel.value).where(
                TaskStateStoreModel.run_id == dag_run.run_id, TaskStateStoreModel.key == SECRETS_KEY
            )
        ).all()
    assert kept == [], "this test Airflow has no [core] fernet_key: the operator must keep nothing (never in clear)"
    # dag.test leaves the finished task's trigger linked: its kwargs give what Airflow's masker
    # knew in the task (here the config's own secrets, such as the metadata DB's URL).
    found = sources.task_secrets([key, other])
    assert any(s.startswith("sqlite:") for s in found[key].values), found
    assert (found[key].from_trigger, found[key].kept, found[key].launcher) == (True, False, True), found
    assert found[other] == sources.TaskSecrets(), "no such task instance: nothing, and not a launcher"
    # An entry written by hand (editors may write the store through the REST API) counts for nothing.
    with create_session() as session:
        session.add(
            TaskStateStoreModel(
                dag_run_id=dag_run.id, task_id="job", map_index=-1, key=SECRETS_KEY, dag_id=key[0],
                run_id=key[1], value=json.dumps(json.dumps(["s3cret-value"])),
            )
        )  # fmt: skip
    again = sources.task_secrets([key])[key]
    assert "s3cret-value" not in again.values and not again.kept, again
    import shutil

    shutil.rmtree(home(TARGET) / ".airflow_async" / job_id, ignore_errors=True)
