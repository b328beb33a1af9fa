"""Job folders at their edges, over a real sshd under each login shell:
hostile strings in job.json, folders left by a dead launch, and async_dirs
that another user could change.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from airflow_ssh_async.hooks import SSHAsyncJobHook
from airflow_ssh_async.job import JobRef, JobState, JobStatus
from airflow_ssh_async.watch import watch_job
from tests.conftest import SHELL_USERS
from tests.harness.logs import ListLog
from tests.harness.sshd import home

pytestmark = pytest.mark.timeout(120)

# Valid UTF-8 (a Python str): what an operator's cwd, origin and async_dir can hold.
HOSTILE = "a\\qb \"q\" 's' \\u0041 tab\there nl\nhere \x01\x1f\x7f é中😀 $(id) *"


def wait_state(hook: SSHAsyncJobHook, job_dir: str, want: JobState, limit: float = 30) -> JobStatus:
    deadline = time.monotonic() + limit
    while True:
        status = hook.status([job_dir])[job_dir][0]
        if status.state is want or time.monotonic() > deadline:
            assert status.state is want, f"{job_dir}: {status}"
            return status
        time.sleep(0.2)


def job_json(job_dir: str) -> dict:
    return json.loads(Path(job_dir, "job.json").read_bytes())


@pytest.mark.parametrize("user", SHELL_USERS)
def test_hostile_cwd_origin_and_async_dir_give_a_valid_job_json_and_the_job_is_watched_to_its_end(
    make_hook, job_id: str, user: str
) -> None:
    unique = uuid.uuid4().hex[:8]
    cwd = home(user) / f"cwd-{unique}-{HOSTILE}"
    async_dir = f"~/.async-{unique}-{HOSTILE}"
    cwd.mkdir()
    shutil.chown(cwd, user, user)
    try:
        hook = make_hook(user, async_dir=async_dir)
        origin = f"dag/{HOSTILE}/run/-1"
        launched = hook.launch(job_id, 'printf %s "$PWD"', cwd=str(cwd), origin=origin)
        ref = JobRef(f"test_{user}", job_id, launched.job_dir)
        event = asyncio.run(watch_job(hook, ref, log=ListLog(), poll_interval=0.2))
        assert event["status"] == "finished", event
        assert event["result"]["state"] == "succeeded", event
        assert event["result"]["stdout_tail"] == str(cwd)
        info = job_json(launched.job_dir)
        assert info["cwd"] == str(cwd)
        assert info["origin"] == origin
        assert info["job_dir"] == f"{home(user)}/.async-{unique}-{HOSTILE}/{job_id}" == launched.job_dir
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
        shutil.rmtree(home(user) / f".async-{unique}-{HOSTILE}", ignore_errors=True)


# --- a launch that died half way ----------------------------------------------------------


def plant_dead_launch(user: str, job_id: str, async_dir: str = ".airflow_async") -> Path:
    """What a launch killed after its mkdir leaves: the task's secrets, no job.json, 10 min old."""
    folder = home(user) / async_dir / job_id
    folder.mkdir(mode=0o700, parents=True)
    (folder / "payload").write_text("airflow-ssh-async-payload 1 0 20 0 0 0\nexport TOKEN='secret'\n")
    (folder / "env").write_text("export TOKEN='secret'\n")
    for path in (folder, folder / "payload", folder / "env"):
        shutil.chown(path, user, user)
    subprocess.run(["touch", "-d", "10 minutes ago", str(folder)], check=True)
    return folder


@pytest.mark.parametrize("user", SHELL_USERS)
def test_a_dead_launch_never_blocks_its_id_and_leaves_no_secrets(make_hook, job_id: str, user: str) -> None:
    hook = make_hook(user)
    folder = plant_dead_launch(user, job_id)
    status, _ = hook.status([str(folder)])[str(folder)]
    assert status.state is JobState.LOST and "the launch died before writing job.json" in status.reason
    assert hook.cancel(str(folder)) == "gone"
    assert not (folder / "env").exists() and not (folder / "payload").exists()
    # What a retry with on_existing=reattach does with a lost job: archive, launch afresh.
    moved = hook.archive(str(folder))
    assert Path(moved).parent == home(user) / ".airflow_async" / ".archive" / job_id
    launched = hook.launch(job_id, "echo fresh")
    assert wait_state(hook, launched.job_dir, JobState.SUCCEEDED).state is JobState.SUCCEEDED


def test_an_operator_retry_relaunches_over_a_dead_launch_within_seconds(sshd, dag_bag, job_id: str) -> None:
    user = "asyncdash"  # the connection of the ssh_async_generic DAG
    folder = plant_dead_launch(user, job_id)
    started = time.monotonic()
    dag_run = dag_bag.dags["ssh_async_generic"].test(run_conf={"job_id": job_id, "command": "echo fresh"})
    elapsed = time.monotonic() - started
    [ti] = [t for t in dag_run.get_task_instances() if t.task_id == "job"]
    assert ti.state == "success"
    # The old way waited out the 60 s starting patience, then failed the task as lost.
    assert elapsed < 50, f"{elapsed:.0f} s"
    [attempt] = (home(user) / ".airflow_async" / ".archive" / job_id).iterdir()
    assert not (attempt / "env").exists() and not (attempt / "payload").exists()
    assert (folder / "stdout").read_text() == "fresh\n"
