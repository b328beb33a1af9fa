"""Hard edges of the job's process over a real sshd (issue 9, items 1-4).

The whole process group ends on a time limit or a cancel; the job's
environment cannot break the launcher; a relative cwd means the login
directory; the job starts with default signal dispositions.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from airflow_ssh_async.errors import JobRunningError
from airflow_ssh_async.hooks import SSHAsyncJobHook
from airflow_ssh_async.job import JobState
from tests.conftest import SHELL_USERS
from tests.harness.procs import live_group_members
from tests.harness.sshd import home, run_as
from tests.integration.test_protocol import wait_state

pytestmark = pytest.mark.timeout(120)

# A child that ignores SIGTERM, beside a leader that dies of it.
TERM_IGNORING_CHILD = "(trap '' TERM; exec sleep 30) & sleep 30"


def stdout_of(hook: SSHAsyncJobHook, job_dir: str) -> bytes:
    [out] = hook.read([(job_dir, "stdout", 0)])
    return out.data


def wait_file(path: Path, limit: float = 15) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path} after {limit}s"
        time.sleep(0.05)


# --- 1. the whole process group ends ------------------------------------------------


@pytest.mark.parametrize("user", SHELL_USERS)
def test_time_limit_ends_the_whole_process_group_before_the_result(make_hook, job_id: str, user: str) -> None:
    hook = make_hook(user)
    launched = hook.launch(job_id, TERM_IGNORING_CHILD, timeout=2, grace=1)
    status = wait_state(hook, launched.job_dir, JobState.TIMED_OUT, limit=30)
    # The result is written only once the group is empty: nothing may be
    # left the moment the job reads timed_out (no time to die given).
    assert live_group_members(launched.pid, limit=0) == [], "a TERM-ignoring child outlived the result"
    assert status.signal == 15


@pytest.mark.parametrize("user", SHELL_USERS)
def test_cancel_ends_the_whole_process_group_before_the_result(make_hook, job_id: str, user: str) -> None:
    hook = make_hook(user)
    launched = hook.launch(job_id, TERM_IGNORING_CHILD, grace=1)
    wait_file(Path(launched.job_dir, "job.json"))
    wait_state(hook, launched.job_dir, JobState.RUNNING)
    hook.cancel(launched.job_dir, grace=1)
    wait_state(hook, launched.job_dir, JobState.CANCELLED, limit=30)
    assert live_group_members(launched.pid, limit=0) == [], "a TERM-ignoring child outlived the result"


def test_a_retry_never_starts_next_to_an_orphan_of_the_first(make_hook, job_id: str) -> None:
    """A job that ended but left a child in its group: archiving (what a
    retry does before it launches again) is refused until the group is gone,
    and a cancel of the ended job ends the group."""
    hook = make_hook("asyncdash")
    launched = hook.launch(job_id, "sleep 60 & exit 3", grace=1)
    wait_state(hook, launched.job_dir, JobState.FAILED)
    assert live_group_members(launched.pid, limit=0), "the background child should still run"
    with pytest.raises(JobRunningError, match="process group"):
        hook.archive(launched.job_dir)
    hook.cancel(launched.job_dir, grace=1)
    assert live_group_members(launched.pid) == []
    assert hook.archive(launched.job_dir)


# --- 2. the job's environment cannot break the launcher ----------------------------


@pytest.mark.parametrize("user", SHELL_USERS)
def test_environment_reaches_only_the_job_and_cannot_break_the_launcher(make_hook, job_id: str, user: str) -> None:
    hook = make_hook(user)
    env = {"PATH": "/nonexistent/bin", "_cwd": "/", "_dir": "/tmp", "_id": "x", "_sup": "/bin/false"}
    launched = hook.launch(job_id, '/bin/echo "pwd=$(/bin/pwd) path=$PATH"', environment=env, cwd="/tmp")
    status = wait_state(hook, launched.job_dir, JobState.SUCCEEDED, JobState.FAILED)
    assert stdout_of(hook, launched.job_dir) == b"pwd=/tmp path=/nonexistent/bin\n", status
    assert status.state is JobState.SUCCEEDED
    info = json.loads(Path(launched.job_dir, "job.json").read_text())
    assert (info["id"], info["job_dir"], info["cwd"]) == (job_id, launched.job_dir, "/tmp")
    assert not Path(launched.job_dir, "env").exists()
    assert not Path(launched.job_dir, "payload").exists()


@pytest.mark.parametrize("user", SHELL_USERS)
def test_a_users_lc_all_reaches_the_job_as_given(make_hook, job_id: str, user: str) -> None:
    hook = make_hook(user)
    launched = hook.launch(job_id, 'printf "%s" "$LC_ALL"', environment={"LC_ALL": "C.UTF-8"})
    wait_state(hook, launched.job_dir, JobState.SUCCEEDED)
    assert stdout_of(hook, launched.job_dir) == b"C.UTF-8"


# --- 3. a relative cwd is relative to the login directory --------------------------


@pytest.mark.parametrize("user", SHELL_USERS)
def test_relative_cwd_is_relative_to_the_ssh_users_home(make_hook, job_id: str, user: str) -> None:
    name = f"proj-{uuid.uuid4().hex[:8]}"
    assert run_as(user, f"mkdir ~/{name}").returncode == 0
    try:
        hook = make_hook(user)
        launched = hook.launch(job_id, "pwd", cwd=name)
        wait_state(hook, launched.job_dir, JobState.SUCCEEDED)
        assert stdout_of(hook, launched.job_dir) == f"{home(user)}/{name}\n".encode()
    finally:
        run_as(user, f"rmdir ~/{name}")


# --- 4. default signal dispositions -----------------------------------------------


@pytest.mark.parametrize("user", SHELL_USERS)
@pytest.mark.parametrize("sig,code", [("INT", 5), ("QUIT", 6)])
def test_the_job_starts_with_sigint_and_sigquit_not_ignored(
    make_hook, job_id: str, user: str, sig: str, code: int
) -> None:
    # An ignored signal cannot be trapped: the job would print ran-on, exit 0.
    hook = make_hook(user)
    command = f"trap 'echo got-{sig}; exit {code}' {sig}; kill -s {sig} $$; echo ran-on"
    launched = hook.launch(job_id, command, environment={"PATH": "/nonexistent/bin"})
    status = wait_state(hook, launched.job_dir, JobState.FAILED)
    assert (status.exit_code, stdout_of(hook, launched.job_dir)) == (code, f"got-{sig}\n".encode())
    # Nor does the job's process hold them ignored from the start.
    probe = hook.launch(f"{job_id}-p", "grep SigIgn /proc/$$/status")
    wait_state(hook, probe.job_dir, JobState.SUCCEEDED)
    ignored = int(stdout_of(hook, probe.job_dir).split()[1], 16)
    assert ignored & (1 << 1 | 1 << 2) == 0, f"SigIgn {ignored:#x}: INT or QUIT ignored"
