"""A full disk and a runaway writer over a real sshd (issue 20).

Each test mounts a small tmpfs of its own as the async_dir, owned by the
test user and mode 0700 (the provider refuses a folder others may write),
standing in for a /home that fills up during a nightly run.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_ssh_async.errors import RemoteWriteError
from airflow_ssh_async.job import JobState
from tests.conftest import SHELL_USERS
from tests.harness.sshd import home, run_as
from tests.integration.test_protocol import wait_state

pytestmark = pytest.mark.timeout(180)

# The job: 5 MB of output into a 2 MiB filesystem, then an exit code.
FILLER = "head -c 5000000 /dev/zero | tr '\\0' x; echo; echo done; exit 3"


def mount_tmpfs(user: str, size: str) -> Path:
    """A fresh tmpfs of SIZE in USER's home, theirs, mode 0700."""
    pw = pwd.getpwnam(user)
    where = home(user) / f"disk-{uuid.uuid4().hex[:8]}"
    where.mkdir()
    opts = f"size={size},mode=0700,uid={pw.pw_uid},gid={pw.pw_gid}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], check=True, timeout=30)
    return where


def unmount(where: Path) -> None:
    # A job left running (a failed test) holds files there: end it first.
    subprocess.run(["fuser", "-k", "-M", "-m", str(where)], capture_output=True, timeout=30)
    done = subprocess.run(["umount", str(where)], capture_output=True, timeout=30)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(where)], check=True, timeout=30)
    where.rmdir()


@pytest.fixture
def small_disk() -> Iterator[Callable[[str, str], Path]]:
    mounted: list[Path] = []

    def make(user: str, size: str = "2m") -> Path:
        mounted.append(mount_tmpfs(user, size))
        return mounted[-1]

    yield make
    for where in mounted:
        unmount(where)


def fill(user: str, where: Path) -> None:
    """Take every free byte of WHERE's filesystem (as USER, the owner)."""
    run_as(user, f"cat /dev/zero > '{where}/ballast' 2>/dev/null; :")
    assert os.statvfs(where).f_bavail == 0


@pytest.mark.parametrize("user", SHELL_USERS)
def test_a_job_that_fills_the_disk_keeps_its_exit_code(make_hook, small_disk, user: str) -> None:
    async_dir = small_disk(user)
    hook = make_hook(user, async_dir=str(async_dir))
    launched = hook.launch(f"fill-{uuid.uuid4().hex[:8]}", FILLER)
    status = wait_state(hook, launched.job_dir, JobState.FAILED, limit=60)
    assert status.exit_code == 3, status
    assert os.statvfs(async_dir).f_bavail == 0, "the job should have filled the disk"
    result = json.loads(Path(launched.job_dir, "result.json").read_bytes())
    assert result["exit_code"] == 3
    stdout_cut = [c for c in status.output_cut if c.stream == "stdout"]
    assert stdout_cut and stdout_cut[0].cause == "ENOSPC", status
    assert stdout_cut[0].at == Path(launched.job_dir, "stdout").stat().st_size > 1_000_000
    assert "the disk was full (ENOSPC)" in status.reason
    assert not Path(launched.job_dir, "result.reserve").exists()


@pytest.mark.parametrize("user", SHELL_USERS)
def test_a_launch_on_a_full_disk_is_refused_and_leaves_nothing(make_hook, small_disk, user: str) -> None:
    async_dir = small_disk(user)
    hook = make_hook(user, async_dir=str(async_dir))
    # A first launch installs the supervisor copy, as on any used host.
    first = hook.launch(f"first-{uuid.uuid4().hex[:8]}", "exit 0")
    wait_state(hook, first.job_dir, JobState.SUCCEEDED)
    fill(user, async_dir)
    before = sorted(p.name for p in async_dir.iterdir())
    job_id = f"refused-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RemoteWriteError) as caught:
        hook.launch(job_id, "echo never", environment={"SECRET": "hunter2"})
    message = str(caught.value)
    assert "127.0.0.1" in message or "localhost" in message, message
    assert str(async_dir) in message and "KiB free" in message, message
    assert "nothing was started" in message
    assert sorted(p.name for p in async_dir.iterdir()) == before, "the refused launch left something"
    assert not (async_dir / job_id).exists()
