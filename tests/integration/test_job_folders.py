"""Job folders at their edges, over a real sshd under each login shell:
hostile strings in job.json, folders left by a dead launch, and async_dirs
that another user could change.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from airflow_ssh_async.errors import AsyncDirError
from airflow_ssh_async.job import JobRef, JobState
from airflow_ssh_async.watch import watch_job
from tests.conftest import SHELL_USERS
from tests.harness.logs import ListLog
from tests.harness.sshd import home, run_as
from tests.integration.test_protocol import wait_state

pytestmark = pytest.mark.timeout(120)

# Valid UTF-8 (a Python str): what an operator's cwd, origin and async_dir can hold.
HOSTILE = "a\\qb \"q\" 's' \\u0041 tab\there nl\nhere \x01\x1f\x7f é中😀 $(id) *"


def job_json(job_dir: str) -> dict:
    return json.loads(Path(job_dir, "job.json").read_bytes())


@pytest.mark.parametrize("user", SHELL_USERS)
def test_hostile_cwd_origin_and_async_dir_give_a_valid_job_json_and_the_job_is_watched_to_its_end(
    make_hook, job_id: str, user: str
) -> None:
    unique = uuid.uuid4().hex[:8]
    cwd = home(user) / f"cwd-{unique}-{HOSTILE}"
    # 0x1f ends an argument of a batch (lib.sh): an async_dir may hold any other byte.
    folder = f".async-{unique}-{HOSTILE.replace(chr(0x1F), '')}"
    async_dir = f"~/{folder}"
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
        assert info["job_dir"] == f"{home(user)}/{folder}/{job_id}" == launched.job_dir
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
        shutil.rmtree(home(user) / folder, ignore_errors=True)


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


# --- async_dir must be the SSH user's alone ------------------------------------------------


def other_user(user: str) -> str:
    return SHELL_USERS[(SHELL_USERS.index(user) + 1) % len(SHELL_USERS)]


@pytest.mark.parametrize("user", SHELL_USERS)
def test_an_async_dir_another_user_owns_is_refused_before_anything_runs(make_hook, job_id: str, user: str) -> None:
    owner = other_user(user)
    shared = f"/tmp/h9b-shared-{uuid.uuid4().hex[:8]}"
    made = run_as(owner, f"mkdir {shared} && chmod 1777 {shared}")
    assert made.returncode == 0, made.stderr
    try:
        marker = Path(shared) / "ran"
        with pytest.raises(AsyncDirError) as caught:
            make_hook(user, async_dir=shared).launch(job_id, f": > {marker}")
        message = str(caught.value)
        assert f"folder '{shared}' (owner {owner}, mode drwxrwxrwt)" in message
        assert "chmod 700" in message and "127.0.0.1" in message and job_id in message
        assert os.listdir(shared) == [], "nothing may be written or run in it"
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.parametrize("user", SHELL_USERS)
def test_a_group_writable_async_dir_of_ones_own_is_refused(make_hook, job_id: str, user: str) -> None:
    folder = home(user) / f".gw-{uuid.uuid4().hex[:8]}"
    assert run_as(user, f"mkdir {folder} && chmod 770 {folder}").returncode == 0
    try:
        with pytest.raises(AsyncDirError, match=rf"'{folder}' \(owner {user}, mode drwxrwx---\)"):
            make_hook(user, async_dir=str(folder)).launch(job_id, "true")
        assert os.listdir(folder) == []
        # Made private, it is used.
        folder.chmod(0o700)
        launched = make_hook(user, async_dir=str(folder)).launch(job_id, "true")
        assert wait_state(make_hook(user), launched.job_dir, JobState.SUCCEEDED).state is JobState.SUCCEEDED
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("user", SHELL_USERS)
def test_a_planted_supervisor_symlink_is_never_run_and_a_symlinked_folder_is_refused(
    make_hook, job_id: str, user: str
) -> None:
    folder = home(user) / f".sym-{uuid.uuid4().hex[:8]}"
    hook = make_hook(user, async_dir=str(folder))
    try:
        first = hook.launch(f"{job_id}-1", "true")
        wait_state(hook, first.job_dir, JobState.SUCCEEDED)
        [copy] = folder.glob(".supervisor/*/supervise.sh")
        good = copy.read_bytes()
        # The user's own file, but not the supervisor: a symlink to it must not be run.
        marker = folder / "planted-ran"
        planted = home(user) / f"planted-{uuid.uuid4().hex[:8]}.sh"
        planted.write_text(f": > {marker}\n")
        shutil.chown(planted, user, user)
        copy.unlink()
        copy.symlink_to(planted)
        os.lchown(copy, *(lambda p: (p.pw_uid, p.pw_gid))(pwd.getpwnam(user)))
        second = hook.launch(f"{job_id}-2", "echo fine")
        assert wait_state(hook, second.job_dir, JobState.SUCCEEDED).state is JobState.SUCCEEDED
        assert not marker.exists(), "a symlinked supervisor copy was run"
        assert not copy.is_symlink() and copy.read_bytes() == good
        planted.unlink()
        # A symlinked .supervisor/<id> folder: refused, naming it.
        real = folder / "elsewhere"
        copy.parent.rename(real)
        copy.parent.symlink_to(real)
        with pytest.raises(AsyncDirError, match=re.escape(f"folder '{copy.parent}' (owner root, mode lrwxrwxrwx)")):
            hook.launch(f"{job_id}-3", "true")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("user", SHELL_USERS)
def test_an_archive_folder_others_can_write_is_refused(make_hook, job_id: str, user: str) -> None:
    folder = home(user) / f".arch-{uuid.uuid4().hex[:8]}"
    hook = make_hook(user, async_dir=str(folder))
    try:
        launched = hook.launch(job_id, "true")
        wait_state(hook, launched.job_dir, JobState.SUCCEEDED)
        assert run_as(user, f"mkdir -m 777 {folder}/.archive").returncode == 0
        with pytest.raises(AsyncDirError, match=r"\.archive' \(owner .*, mode drwxrwxrwx\)"):
            hook.archive(launched.job_dir)
        assert Path(launched.job_dir, "result.json").exists(), "the job folder stays where it was"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
