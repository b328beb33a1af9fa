"""The remote job protocol over a real sshd: states, output, secrets, locking, errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from airflow_ssh_async.errors import (
    AsyncDirError,
    ConnectionNotFoundError,
    CwdError,
    HostKeyError,
    JobExistsError,
    RemoteWriteError,
    SSHAuthError,
)
from airflow_ssh_async.hooks import SSHAsyncJobHook
from airflow_ssh_async.job import JobState
from tests.conftest import SHELL_USERS
from tests.harness.procs import live_group_members, rss_kb
from tests.harness.sshd import SSHServer, home, run_as

pytestmark = pytest.mark.timeout(120)


def wait_state(hook: SSHAsyncJobHook, job_dir: str, *states: JobState, limit: float = 20):
    deadline = time.monotonic() + limit
    while True:
        status = hook.status([job_dir])[job_dir][0]
        if status.state in states or time.monotonic() > deadline:
            assert status.state in states, f"{job_dir}: {status}"
            return status
        time.sleep(0.2)


def job_json(job_dir: str, limit: float = 10) -> dict:
    """job.json, waited for: the launch reports before the supervisor writes it."""
    path, deadline = Path(job_dir, "job.json"), time.monotonic() + limit
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path} {limit}s after the launch"
        time.sleep(0.05)
    return json.loads(path.read_text())


@pytest.mark.parametrize("user", SHELL_USERS)
def test_sequence_keeps_every_line_and_exit_code_is_kept(make_hook, job_id: str, user: str) -> None:
    hook = make_hook(user)
    started = time.monotonic()
    launched = hook.launch(job_id, "echo one; echo two\necho a; exit 3")
    status = wait_state(hook, launched.job_dir, JobState.FAILED)
    assert time.monotonic() - started < 5, "a quick job must report at once, not at a timeout"
    assert status.exit_code == 3
    [out] = hook.read([(launched.job_dir, "stdout", 0)])
    assert out.data == b"one\ntwo\na\n"
    assert launched.job_dir == f"{home(user)}/.airflow_async/{job_id}"


def test_commands_run_exactly_as_written(make_hook, job_id: str) -> None:
    command = """cat <<'EOF'
$HOME `x` "q" 'single'
EOF
printf '%s\\n' "it's" ; exit 0"""
    hook = make_hook()
    launched = hook.launch(job_id, command)
    wait_state(hook, launched.job_dir, JobState.SUCCEEDED)
    [out] = hook.read([(launched.job_dir, "stdout", 0)])
    assert out.data == b"$HOME `x` \"q\" 'single'\nit's\n"
    assert Path(launched.job_dir, "command").read_text() == command, "the command file is verbatim"


def test_environment_values_arrive_exactly(make_hook, job_id: str) -> None:
    env = {"A": "two words", "B": 'it\'s "q" $HOME `id`', "C": "line1\nline2", "D": ""}
    hook = make_hook("asyncbash")
    command = 'for v in A B C D; do eval "printf \'%s|\' \\"\\$$v\\""; done'
    launched = hook.launch(job_id, command, environment=env)
    wait_state(hook, launched.job_dir, JobState.SUCCEEDED)
    [out] = hook.read([(launched.job_dir, "stdout", 0)])
    assert out.data.decode() == "|".join(env.values()) + "|"


def test_secret_never_in_argv_nor_in_a_file_others_can_read(make_hook, job_id: str) -> None:
    secret = f"s3cr3t-{job_id}"
    seen: list[str] = []
    stop = threading.Event()

    def watch_argv() -> None:
        while not stop.is_set():
            for proc in Path("/proc").iterdir():
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if secret.encode() in cmdline:
                    seen.append(cmdline.decode(errors="replace"))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_argv, daemon=True)
    watcher.start()
    hook = make_hook()
    try:
        launched = hook.launch(job_id, 'sleep 2; test -n "$PASSWORD"', environment={"PASSWORD": secret})
        wait_state(hook, launched.job_dir, JobState.SUCCEEDED)
    finally:
        stop.set()
        watcher.join()
    assert seen == [], "the secret showed in a process's argv (ps)"
    job_dir = Path(launched.job_dir)
    assert not (job_dir / "env").exists(), "the env file must be gone once the job started"
    assert oct(job_dir.stat().st_mode & 0o777) == "0o700"
    # The whole async_dir, where other test sessions add and remove job folders meanwhile.
    for root, _dirs, files in os.walk(job_dir.parent):
        for name in files:
            path = Path(root, name)
            try:
                mode = path.stat().st_mode
                if stat.S_ISREG(mode) and mode & 0o077:
                    assert secret.encode() not in path.read_bytes(), f"{path} is readable by others, with the secret"
            except FileNotFoundError:
                continue


def test_every_terminal_state_for_real(make_hook) -> None:
    hook = make_hook()
    ids = {
        name: f"st-{name}-{os.urandom(4).hex()}" for name in ("ok", "kill9", "sup9", "boot", "reuse", "limit", "cancel")
    }
    ok = hook.launch(ids["ok"], "true")
    kill9 = hook.launch(ids["kill9"], "sleep 60")
    sup9 = hook.launch(ids["sup9"], "sleep 60")
    boot = hook.launch(ids["boot"], "sleep 60")
    reuse = hook.launch(ids["reuse"], "sleep 60")
    limit = hook.launch(ids["limit"], "trap '' TERM; sleep 60", timeout=1, grace=1)
    cancel = hook.launch(ids["cancel"], "sleep 61 & sleep 62; wait")

    wait_state(hook, ok.job_dir, JobState.SUCCEEDED)

    os.kill(kill9.pid, signal.SIGKILL)
    status = wait_state(hook, kill9.job_dir, JobState.KILLED)
    assert status.signal == 9

    os.kill(sup9.supervisor_pid, signal.SIGKILL)
    status = wait_state(hook, sup9.job_dir, JobState.LOST)
    assert "supervisor is gone" in status.reason
    os.killpg(sup9.pid, signal.SIGKILL)

    for launched, key, value in (
        (boot, "boot_id", "00000000-0000-0000-0000-000000000000"),
        (reuse, "supervisor_start", "1"),
    ):
        path = Path(launched.job_dir, "job.json")
        info = job_json(launched.job_dir)
        info[key] = value
        path.write_text(json.dumps(info, indent=2))
    assert "rebooted" in wait_state(hook, boot.job_dir, JobState.LOST).reason
    assert "another process" in wait_state(hook, reuse.job_dir, JobState.LOST).reason
    os.killpg(boot.pid, signal.SIGKILL)
    os.killpg(reuse.pid, signal.SIGKILL)

    status = wait_state(hook, limit.job_dir, JobState.TIMED_OUT, limit=15)
    assert status.signal == 9, "TERM was ignored, so the grace period must end in SIGKILL"

    assert hook.cancel(cancel.job_dir, grace=2) == "cancelled"
    wait_state(hook, cancel.job_dir, JobState.CANCELLED)
    assert live_group_members(cancel.pid) == []

    missing = hook.status([hook.job_dir("never-launched")])
    assert missing[hook.job_dir("never-launched")][0].state is JobState.MISSING


def test_many_jobs_in_one_status_call(make_hook) -> None:
    hook = make_hook()
    dirs = [hook.launch(f"many-{i}-{os.urandom(3).hex()}", f"exit {i}").job_dir for i in range(5)]
    time.sleep(1)
    statuses = hook.status(dirs + [hook.job_dir("absent-job")])
    assert [statuses[d][0].exit_code for d in dirs] == [0, 1, 2, 3, 4]
    assert statuses[hook.job_dir("absent-job")][0].state is JobState.MISSING


@pytest.mark.timeout(240)
def test_100mb_output_readable_by_offset_with_flat_supervisor_memory(make_hook, job_id: str) -> None:
    hook = make_hook()
    size = 100 * 1024 * 1024
    launched = hook.launch(job_id, f"yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c {size}; sleep 1")
    supervisor = launched.supervisor_pid
    peak = 0
    while Path(f"/proc/{supervisor}").exists():
        peak = max(peak, rss_kb(supervisor))
        time.sleep(0.05)
    wait_state(hook, launched.job_dir, JobState.SUCCEEDED)
    digest, offset = hashlib.sha256(), 0
    while offset < size:
        [chunk] = hook.read([(launched.job_dir, "stdout", offset)], max_bytes=16 * 1024 * 1024)
        assert chunk.data, f"no data at offset {offset}"
        digest.update(chunk.data)
        offset += len(chunk.data)
    expected = hashlib.sha256()
    line = b"0123456789abcdefghijklmnopqrstuvwxyz\n"
    whole = line * (size // len(line) + 1)
    expected.update(whole[:size])
    assert offset == size and digest.hexdigest() == expected.hexdigest()
    assert 0 < peak < 4096, f"supervisor RSS peaked at {peak} KiB"


def test_twenty_concurrent_launches_start_exactly_one_process(make_hook, job_id: str) -> None:
    hook = make_hook()
    marker = f"sleep 7.{int.from_bytes(os.urandom(2), 'big')}"

    def attempt(_: int) -> str:
        try:
            SSHAsyncJobHook("test_asyncdash").launch(job_id, marker)
            return "started"
        except JobExistsError:
            return "exists"

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(attempt, range(20)))
    assert outcomes.count("started") == 1 and outcomes.count("exists") == 19
    procs = run_as("asyncdash", f"pgrep -f -x '{marker}' | wc -l").stdout.strip()
    assert procs == "1"
    hook.cancel(hook.job_dir(job_id), grace=1)


def test_two_users_have_their_own_job_dirs_and_do_not_block_each_other(make_hook, job_id: str) -> None:
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda u: make_hook(u).launch(job_id, "sleep 1"), ("asyncdash", "asyncbash"))
    assert a.job_dir != b.job_dir
    assert a.job_dir.startswith(str(home("asyncdash"))) and b.job_dir.startswith(str(home("asyncbash")))
    wait_state(make_hook("asyncdash"), a.job_dir, JobState.SUCCEEDED)
    wait_state(make_hook("asyncbash"), b.job_dir, JobState.SUCCEEDED)


def test_errors_name_host_job_and_what_to_do(
    make_hook, job_id: str, sshd: SSHServer, tmp_path: Path, monkeypatch
) -> None:
    hook = make_hook()
    with pytest.raises(CwdError) as exc:
        hook.launch(job_id, "true", cwd="/no/such/dir")
    assert job_id in str(exc.value) and "127.0.0.1" in str(exc.value) and "/no/such/dir" in str(exc.value)
    assert not Path(hook.job_dir(job_id).replace("~", str(home("asyncdash")))).exists()

    with pytest.raises(ConnectionNotFoundError, match="'no_such_conn' is not defined.*AIRFLOW_CONN_NO_SUCH_CONN"):
        SSHAsyncJobHook("no_such_conn").launch(job_id, "true")

    with pytest.raises(AsyncDirError, match="async_dir"):
        make_hook(async_dir="/root/forbidden").launch(job_id, "true")

    other_key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    sshd.set_connection("wrong_key", "asyncdash", key_file=str(other_key))
    with pytest.raises(SSHAuthError, match="authentication failed.*wrong_key.*authorized_keys"):
        SSHAsyncJobHook("wrong_key").launch(job_id, "true")

    wrong_host_key = Path(f"{other_key}.pub").read_text().split()[:2]
    sshd.set_connection("changed_host_key", "asyncdash", host_key=" ".join(wrong_host_key))
    with pytest.raises(HostKeyError, match="host_key extra of connection 'changed_host_key'"):
        SSHAsyncJobHook("changed_host_key").launch(job_id, "true")


def test_disk_full_at_launch_fails_cleanly(make_hook, job_id: str) -> None:
    # Under /tmp, not pytest's 0700 tmp_path: the SSH user must reach it.
    # 128k: room for one small job (payload and supervisor copy), not for 200k.
    mount = Path(tempfile.mkdtemp(prefix="ssh-async-full-"))
    mount.chmod(0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k,mode=0777", "tmpfs", str(mount)], check=True)
    try:
        hook = make_hook(async_dir=str(mount / "jobs"))
        with pytest.raises(RemoteWriteError, match="disk full") as exc:
            hook.launch(job_id, "echo " + "x" * 200_000)
        assert "nothing was started" in str(exc.value) or "payload" in str(exc.value)
        assert [p.name for p in (mount / "jobs").iterdir()] == []
        # With room again, the same id launches: the failure left no lock behind.
        launched = hook.launch(job_id, "echo small")
        wait_state(hook, launched.job_dir, JobState.SUCCEEDED)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
