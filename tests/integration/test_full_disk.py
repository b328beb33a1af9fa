"""A full disk and a runaway writer over a real sshd (issue 20).

Each test mounts a small tmpfs of its own as the async_dir, owned by the
test user and mode 0700 (the provider refuses a folder others may write),
standing in for a /home that fills up during a nightly run.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_ssh_async.errors import RemoteWriteError
from airflow_ssh_async.hooks import SSHAsyncJobHook
from airflow_ssh_async.job import JobRef, JobState, OutputCut
from airflow_ssh_async.watch import watch_job
from tests.conftest import SHELL_USERS
from tests.harness.logs import ListLog
from tests.harness.release import released_when, wait_for_release
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
    # The cap saw the failed write: the stream, where it stopped, and what
    # came after it, counted (the job itself never saw an error).
    [cut] = status.output_cut
    assert (cut.stream, cut.cause) == ("stdout", "ENOSPC"), status
    assert cut.at == Path(launched.job_dir, "stdout").stat().st_size > 1_000_000
    assert cut.dropped and cut.at + cut.dropped > 4_000_000, cut
    assert "the disk was full (ENOSPC)" in status.reason
    assert not Path(launched.job_dir, "result.reserve").exists()


def test_without_a_cap_a_full_disk_is_still_said_in_the_result(make_hook, small_disk) -> None:
    """output_limit=0: the job writes its files itself and sees the write
    errors (tr fails); the supervisor finds the disk full when it ends."""
    user = "asyncdash"
    async_dir = small_disk(user)
    hook = make_hook(user, async_dir=str(async_dir))
    launched = hook.launch(f"fill-{uuid.uuid4().hex[:8]}", FILLER, output_limit=0)
    status = wait_state(hook, launched.job_dir, JobState.FAILED, limit=60)
    assert status.exit_code == 3, status
    assert {(c.stream, c.cause, c.dropped) for c in status.output_cut} == {
        ("stdout", "ENOSPC", None),
        ("stderr", "ENOSPC", None),
    }
    assert not Path(launched.job_dir, "stdout.cut").exists()


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


# --- output_limit ---------------------------------------------------------------------

HUNDRED_MB = 100_000_000
MIB = 1024 * 1024


@pytest.mark.parametrize("user", SHELL_USERS)
def test_output_limit_stores_the_first_bytes_and_counts_the_rest(make_hook, job_id: str, user: str) -> None:
    hook = make_hook(user)
    command = f"head -c {HUNDRED_MB} /dev/zero; echo err-line >&2; exit 4"
    launched = hook.launch(job_id, command, output_limit=MIB)
    status = wait_state(hook, launched.job_dir, JobState.FAILED, limit=120)
    assert status.exit_code == 4, status
    assert Path(launched.job_dir, "stdout").stat().st_size == MIB
    assert Path(launched.job_dir, "stderr").read_bytes() == b"err-line\n"
    assert status.output_cut == (OutputCut("stdout", "output_limit", MIB, HUNDRED_MB - MIB),)
    assert f"stdout truncated at {MIB} bytes (output_limit), {HUNDRED_MB - MIB} bytes dropped" in status.reason
    result = json.loads(Path(launched.job_dir, "result.json").read_bytes())
    assert result["output_cut"] == [
        {"stream": "stdout", "cause": "output_limit", "at": MIB, "dropped": HUNDRED_MB - MIB}
    ]
    assert not Path(launched.job_dir, "stdout.pipe").exists()


@pytest.mark.timeout(400)  # dag.test() and the DB set-up, under load
def test_a_retry_reattaches_to_a_truncated_running_job(sshd, dag_bag, job_id: str, capfd) -> None:
    """The first try "died" after launching a job that is past its
    output_limit and runs on; the retry watches it to its end: the log has
    the output up to the limit and says it was truncated, once."""
    from tests.integration.test_operator import run_dag, ti_of, xcom

    release = home("asyncdash") / f"release-{job_id}"
    command = f"yes 0123456789 | head -c 10000000; {wait_for_release(release)}; echo after >&2"
    hook = SSHAsyncJobHook("test_asyncdash")
    launched = hook.launch(job_id, command, output_limit=65536)
    deadline = time.monotonic() + 60
    while True:
        status = wait_state(hook, launched.job_dir, JobState.RUNNING)
        # The running count lags by up to a chunk (1 MiB, doubling).
        if status.output_cut and (status.output_cut[0].dropped or 0) >= 1024 * 1024:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert "stdout truncated at 65536 bytes (output_limit)" in status.reason
    # The job ends once the retry has re-attached: the re-attaching try
    # gives the running job its execution_timeout, writing its `deadline`
    # file (dag.test's in-process trigger has no task try, so it records no
    # `.delivered-*` reads to wait for).
    deadline_file = Path(launched.job_dir) / "deadline"
    assert not deadline_file.exists()
    with released_when(deadline_file, release):
        dag_run = run_dag(dag_bag, "ssh_async_output_limit", job_id=job_id, command=command)
    out = capfd.readouterr().out
    assert ti_of(dag_run).state == "success"
    assert "re-attaching instead of starting it again" in out
    assert out.count("stdout reached output_limit (65536 bytes)") == 1, out[-3000:]
    assert out.count("0123456789") >= 65536 // 11 - 1
    result = xcom(dag_run)
    assert result["output_cut"] == [
        {"stream": "stdout", "cause": "output_limit", "at": 65536, "dropped": 10000000 - 65536}
    ]
    assert result["stderr_tail"] == "after\n"


# --- low space ---------------------------------------------------------------------------


@pytest.mark.parametrize("user", SHELL_USERS)
def test_low_space_is_in_the_status_and_logged_once_by_the_watch(make_hook, small_disk, user: str) -> None:
    """A 2 MiB async_dir is far under LOW_SPACE_KB: the status says how much
    is free, and a watch warns once, however many polls it makes."""
    async_dir = small_disk(user)
    hook = make_hook(user, async_dir=str(async_dir))
    job_id = f"low-{uuid.uuid4().hex[:8]}"
    launched = hook.launch(job_id, "for i in 1 2 3 4 5 6; do echo $i; sleep 0.3; done")
    status = wait_state(hook, launched.job_dir, JobState.RUNNING, JobState.SUCCEEDED)
    assert status.free_kb is not None and 0 < status.free_kb <= 2048, status
    assert status.low_space
    log = ListLog()
    ref = JobRef(f"test_{user}", job_id, launched.job_dir)
    event = asyncio.run(watch_job(hook, ref, log=log, poll_interval=0.3))
    assert event["result"]["state"] == "succeeded"
    warned = [line for line in log.lines if "MiB free in its async_dir" in line]
    assert len(warned) == 1, log.lines
    assert f"job {job_id} on " in warned[0]
    # A roomy async_dir says nothing.
    roomy = make_hook(user)
    other = roomy.launch(f"roomy-{uuid.uuid4().hex[:8]}", "echo hi")
    log = ListLog()
    asyncio.run(watch_job(roomy, JobRef(f"test_{user}", other.job_id, other.job_dir), log=log, poll_interval=0.3))
    assert not [line for line in log.lines if "async_dir" in line], log.lines
