"""become_user (issue 19): the whole job runs as another user through a real sudo.

Real sshd, real sudoers rules (a file of this run's own in /etc/sudoers.d,
removed at the end), real signals; what is left running is checked with ps
as root. The login users are the harness's dash, bash and busybox ash users;
the jobs run as asynctarget.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_ssh_async import cli
from airflow_ssh_async.become import BecomeError
from airflow_ssh_async.hooks import SSHAsyncJobHook
from airflow_ssh_async.job import JobState
from tests.conftest import SHELL_USERS
from tests.harness.become import (
    MISSING,
    NO_RULE,
    OTHER,
    PASSWORD,
    TARGET,
    TTY,
    doas_rules,
    kill_jobs_of,
    processes_of,
    sudoers_rules,
)
from tests.harness.procs import live_group_members
from tests.harness.release import released_when, wait_for_release
from tests.harness.sshd import home
from tests.integration.test_operator import run_dag, ti_of, xcom
from tests.integration.test_protocol import wait_state

pytestmark = pytest.mark.timeout(180)

# A leader that dies of SIGTERM beside a child that ignores it.
TERM_IGNORING_CHILD = "(trap '' TERM; exec sleep 60) & sleep 60"


# The job ids this module used: its teardown ends what they left, and nothing else.
JOB_IDS: list[str] = []


@pytest.fixture
def job_id(job_id: str) -> str:
    JOB_IDS.append(job_id)
    return job_id


@pytest.fixture(scope="module")
def rules(sshd) -> Iterator[Path]:
    with sudoers_rules() as path:
        yield path
    kill_jobs_of((TARGET, OTHER), JOB_IDS)


def become_hook(user: str = "asyncdash", target: str = TARGET, **kwargs: Any) -> SSHAsyncJobHook:
    return SSHAsyncJobHook(f"test_{user}", become_user=target, **kwargs)


def nothing_of_the_job_alive(pid: int, supervisor_pid: int, limit: float = 5) -> list[tuple[Any, ...]]:
    """Processes (as root's ps shows them) in the job's group or session, or the supervisor's session."""
    deadline = time.monotonic() + limit
    while True:
        left = [p for p in processes_of(TARGET, OTHER) if p[1] == pid or p[2] in (pid, supervisor_pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def wait_job_json(job_dir: str, limit: float = 15) -> dict[str, Any]:
    path, deadline = Path(job_dir, "job.json"), time.monotonic() + limit
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.05)
    return json.loads(path.read_text())


# --- the whole job is the target user's ------------------------------------------------------


@pytest.mark.parametrize("user", SHELL_USERS)
def test_time_limit_ends_every_process_of_a_become_job(rules, job_id: str, user: str) -> None:
    hook = become_hook(user)
    launched = hook.launch(job_id, TERM_IGNORING_CHILD, timeout=2, grace=1)
    info = wait_job_json(launched.job_dir)
    assert launched.job_dir == f"{home(TARGET)}/.airflow_async/{job_id}"
    assert info["user"] == TARGET
    folder = os.stat(launched.job_dir)
    assert (folder.st_uid, stat.S_IMODE(folder.st_mode)) == (pwd_uid(TARGET), 0o700)
    status = wait_state(hook, launched.job_dir, JobState.TIMED_OUT, limit=30)
    assert status.signal == 15 and status.survivors == (), status
    # The result is written once the group is empty: nothing left, at once.
    assert live_group_members(launched.pid, limit=0) == []
    assert nothing_of_the_job_alive(launched.pid, launched.supervisor_pid) == []


@pytest.mark.parametrize("user", SHELL_USERS)
def test_cancel_ends_every_process_of_a_become_job(rules, job_id: str, user: str) -> None:
    hook = become_hook(user)
    launched = hook.launch(job_id, TERM_IGNORING_CHILD, grace=1)
    wait_job_json(launched.job_dir)
    wait_state(hook, launched.job_dir, JobState.RUNNING)
    assert {p[3] for p in processes_of(TARGET) if p[1] == launched.pid} == {TARGET}
    assert hook.cancel(launched.job_dir, grace=1) == "cancelled"
    wait_state(hook, launched.job_dir, JobState.CANCELLED, limit=30)
    assert live_group_members(launched.pid, limit=0) == []
    assert nothing_of_the_job_alive(launched.pid, launched.supervisor_pid) == []


def pwd_uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def test_a_retry_reattaches_to_the_running_become_job(rules, dag_bag, job_id: str) -> None:
    marker = home(TARGET) / f"starts-{job_id}"
    release = home(TARGET) / f"release-{job_id}"
    command = f"echo started >> {marker}; {wait_for_release(release)}; echo finished as $(id -un)"
    try:
        first = become_hook().launch(job_id, command)  # the first try, which "died"
        # The job runs until the retry has re-attached (it moves the job's deadline).
        deadline_file = Path(first.job_dir) / "deadline"
        assert not deadline_file.exists()
        with released_when(deadline_file, release):
            dag_run = run_dag(dag_bag, "ssh_async_become", job_id=job_id, command=command, become_user=TARGET)
        assert ti_of(dag_run).state == "success"
        # The same job (pid), run once.
        assert xcom(dag_run)["pid"] == first.pid
        assert len(marker.read_text().splitlines()) == 1
        assert xcom(dag_run)["stdout_tail"] == f"finished as {TARGET}\n"
        assert xcom(dag_run)["job_dir"] == f"{home(TARGET)}/.airflow_async/{job_id}"
    finally:
        marker.unlink(missing_ok=True)


# --- refusals fail at once, saying what to add --------------------------------------------------


@pytest.mark.parametrize(
    ("target", "words"),
    [
        (NO_RULE, ["a password is required", f"`asyncdash ALL=({NO_RULE}) NOPASSWD: /bin/sh`"]),
        (PASSWORD, ["a password is required", f"`asyncdash ALL=({PASSWORD}) NOPASSWD: /bin/sh`"]),
        (TTY, ["requiretty", f"Defaults>{TTY} !requiretty", f"`asyncdash ALL=({TTY}) NOPASSWD: /bin/sh`"]),
        (MISSING, [f"user '{MISSING}' does not exist"]),
    ],
)
def test_a_refused_become_fails_the_launch_at_once_naming_host_user_and_rule(
    rules, sshd, job_id: str, target: str, words: list[str]
) -> None:
    started = time.monotonic()
    with pytest.raises(BecomeError) as caught:
        become_hook(target=target).launch(job_id, "true")
    took = time.monotonic() - started
    message = str(caught.value)
    assert took < 15, f"took {took:.1f}s: sudo must not wait for a prompt"
    assert f"cannot run as '{target}'" in message and f"127.0.0.1:{sshd.port}" in message, message
    for word in words:
        assert word in message, message
    assert caught.value.permanent


def test_the_operator_fails_a_refused_become_without_waiting(rules, dag_bag, job_id: str, capfd) -> None:
    started = time.monotonic()
    dag_run = run_dag(dag_bag, "ssh_async_become", job_id=job_id, command="true", become_user=PASSWORD)
    assert ti_of(dag_run).state == "failed"
    assert time.monotonic() - started < 60
    out = capfd.readouterr()
    assert f"asyncdash ALL=({PASSWORD}) NOPASSWD: /bin/sh" in out.out + out.err


# --- the environment: exactly what was given ---------------------------------------------------------


def env_of(hook: SSHAsyncJobHook, job_id: str, environment: dict[str, str]) -> dict[str, str]:
    launched = hook.launch(job_id, "env -0", environment=environment)
    wait_state(hook, launched.job_dir, JobState.SUCCEEDED)
    [out] = hook.read([(launched.job_dir, "stdout", 0)])
    pairs = [item.split("=", 1) for item in out.data.decode().split("\0") if item]
    return dict(pairs)


@pytest.mark.parametrize("user", SHELL_USERS)
def test_env_reset_neither_drops_nor_adds_variables(rules, job_id: str, user: str) -> None:
    given = {"DB_PASSWORD": "s3cr3t 'quoted' $HOME", "EMPTY": "", "LANG": "C.UTF-8", "MULTI": "a\nb", "PATH": "/bin"}
    env = env_of(become_hook(user), job_id, given)
    for name, value in given.items():
        assert env.get(name) == value, (name, env)
    # The target user's identity, ours, and nothing of the login session or of sudo.
    assert (env["HOME"], env["USER"], env["LOGNAME"]) == (str(home(TARGET)), TARGET, TARGET)
    expected = set(given) | {"HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD"}
    expected |= {"AIRFLOW_ASYNC_JOB_ID", "AIRFLOW_ASYNC_JOB_DIR", "AIRFLOW_ASYNC_PROGRESS"}
    assert set(env) <= expected, sorted(set(env) - expected)
    assert not [n for n in env if n.startswith(("SUDO_", "SSH_"))]


def test_secrets_reach_no_argv_and_no_file_the_login_user_can_read(rules, job_id: str) -> None:
    secret = f"pw-{job_id}"
    hook = become_hook()
    launched = hook.launch(job_id, "sleep 2; echo done", environment={"SECRET": secret})
    wait_job_json(launched.job_dir)
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                assert secret.encode() not in (proc / "cmdline").read_bytes()
            except OSError:
                continue
    # The job folder is the target's alone (0700): the login user cannot even list it.
    assert stat.S_IMODE(os.stat(launched.job_dir).st_mode) == 0o700
    assert os.stat(launched.job_dir).st_uid == pwd_uid(TARGET)
    wait_state(hook, launched.job_dir, JobState.SUCCEEDED)
    assert not Path(launched.job_dir, "env").exists() and not Path(launched.job_dir, "payload").exists()


# --- a job that calls sudo itself ----------------------------------------------------------------


def test_a_time_limit_that_cannot_end_a_sudo_child_names_the_survivors(rules, job_id: str) -> None:
    hook = become_hook()
    command = f"sudo -n -u {OTHER} /bin/sh -c \"trap '' TERM; exec sleep 120\""
    launched = None
    try:
        launched = hook.launch(job_id, command, timeout=2, grace=1)
        status = wait_state(hook, launched.job_dir, JobState.TIMED_OUT, limit=40)
        left = [p for p in processes_of(OTHER) if p[1] == launched.pid]
        assert left, "the other user's sleep should outlive the time limit"
        assert {s["user"] for s in status.survivors} == {OTHER}, status
        assert {s["pid"] for s in status.survivors} == {p[0] for p in left}, (status, left)
        assert "NOT everything ended" in status.reason and OTHER in status.reason, status.reason
        [result] = [hook.status([launched.job_dir])[launched.job_dir][0]]
        assert result.survivors == status.survivors
    finally:
        kill_jobs_of((OTHER,), [job_id], groups=(launched.pid,) if launched else ())


# --- every later call goes through the same elevation ------------------------------------------------


def test_cli_sees_a_become_job_through_the_same_elevation(rules, job_id: str, capsysbinary) -> None:
    hook = become_hook()
    launched = hook.launch(job_id, "echo from-target; sleep 30", grace=1)
    wait_job_json(launched.job_dir)
    common = ["--become-user", TARGET, "--json"]
    assert cli.main(["jobs", "test_asyncdash", *common]) == 0
    listing = json.loads(capsysbinary.readouterr().out)
    assert job_id in {j["job_id"] for j in listing["jobs"]}, listing
    assert cli.main(["status", "test_asyncdash", job_id, *common]) == 0
    assert json.loads(capsysbinary.readouterr().out)["state"] == "running"
    assert cli.main(["logs", "test_asyncdash", job_id, "--become-user", TARGET]) == 0
    assert capsysbinary.readouterr().out == b"from-target\n"
    assert cli.main(["kill", "test_asyncdash", job_id, "--grace", "1", "--wait", *common]) == 0
    capsysbinary.readouterr()
    assert nothing_of_the_job_alive(launched.pid, launched.supervisor_pid) == []
    # Without elevation the login user sees no such job in its own async_dir.
    assert cli.main(["status", "test_asyncdash", job_id, "--json"]) == cli.Exit.MISSING
    capsysbinary.readouterr()
    assert cli.main(["gc", "test_asyncdash", "--older-than", "0m", *common]) == 0
    capsysbinary.readouterr()
    assert not Path(launched.job_dir).exists()


def test_the_connection_extra_sets_the_default_become_user(rules, sshd, job_id: str) -> None:
    sshd.set_connection("test_become_extra", "asyncbash", become_user=TARGET)
    try:
        hook = SSHAsyncJobHook("test_become_extra")
        launched = hook.launch(job_id, "id -un")
        assert wait_state(hook, launched.job_dir, JobState.SUCCEEDED)
        assert hook.read([(launched.job_dir, "stdout", 0)])[0].data == f"{TARGET}\n".encode()
        assert launched.job_dir == f"{home(TARGET)}/.airflow_async/{job_id}"
        # A hook's own become_user wins over the extra's.
        other = SSHAsyncJobHook("test_become_extra", become_user=NO_RULE)
        with pytest.raises(BecomeError, match=f"asyncbash ALL=\\({NO_RULE}\\)"):
            other.status([launched.job_dir])
    finally:
        os.environ.pop("AIRFLOW_CONN_TEST_BECOME_EXTRA", None)


# --- doas -----------------------------------------------------------------------------------------


def test_doas_runs_the_job_as_the_target_and_cancels_it(sshd, job_id: str) -> None:
    with doas_rules():
        hook = become_hook("asyncash", become_method="doas")
        launched = hook.launch(job_id, TERM_IGNORING_CHILD + "; echo unreachable", grace=1)
        assert wait_job_json(launched.job_dir)["user"] == TARGET
        wait_state(hook, launched.job_dir, JobState.RUNNING)
        assert hook.cancel(launched.job_dir, grace=1) == "cancelled"
        wait_state(hook, launched.job_dir, JobState.CANCELLED, limit=30)
        assert nothing_of_the_job_alive(launched.pid, launched.supervisor_pid) == []
        with pytest.raises(BecomeError, match=f"permit nopass asyncash as {NO_RULE} cmd /bin/sh"):
            become_hook("asyncash", target=NO_RULE, become_method="doas").launch(job_id, "true")


def test_a_sensor_watches_and_its_trigger_cancels_a_become_job(rules, job_id: str) -> None:
    """The sensor's poke and its trigger's cancel (on_kill, kill_on_cancel) go through the same elevation."""
    import asyncio

    from airflow_ssh_async import SSHAsyncJobSensor, SSHAsyncJobTrigger

    hook = become_hook()
    launched = hook.launch(job_id, TERM_IGNORING_CHILD, grace=1)
    wait_job_json(launched.job_dir)
    sensor = SSHAsyncJobSensor(
        task_id="watch", ssh_conn_id="test_asyncdash", job_id=job_id, become_user=TARGET, deferrable=False
    )
    assert not sensor.poke({}).is_done
    trigger = SSHAsyncJobTrigger(**sensor._trigger_kwargs() | {"kill_on_cancel": True, "grace": 1})
    assert trigger.serialize()[1]["become_user"] == TARGET

    async def cancel() -> None:
        await trigger.on_kill()  # no task instance: the state is unknown, so kill_on_cancel is honoured
        await trigger.cleanup()

    asyncio.run(cancel())
    wait_state(hook, launched.job_dir, JobState.CANCELLED, limit=30)
    assert nothing_of_the_job_alive(launched.pid, launched.supervisor_pid) == []
    with pytest.raises(Exception, match="cancel"):
        sensor.poke({})  # the sensor reads the end as the job's user too: cancelled fails it
