"""The remote scripts, run locally under dash, bash and busybox sh (no SSH).

Over SSH the login shell only parses `sh -c ...`; these tests make each
shell actually execute launch, supervise, status, output and signal.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from airflow_ssh_async.client import program, script
from airflow_ssh_async.job import JobState, classify, launch_payload, parse_frames, parse_status
from tests.harness.procs import live_group_members

SHELLS = {
    "dash": ["dash"],
    "bash": ["bash", "--posix"],
    "busybox": ["busybox", "sh"],
}


@pytest.fixture(params=sorted(SHELLS))
def shell(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    argv = SHELLS[request.param]
    assert shutil.which(argv[0]), f"{argv[0]} must be installed (the README's set-up installs it)"
    return argv


def run(shell: list[str], name: str, *args: str, stdin: bytes = b"", home: Path) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": os.environ["PATH"], "HOME": str(home)}
    # Run the supervisor under the same shell; busybox needs a single path.
    env["AIRFLOW_ASYNC_SH"] = "/usr/local/bin/ash" if shell[0] == "busybox" else shutil.which(shell[0]) or ""
    return subprocess.run(
        [*shell, "-c", program(name), name, *args], input=stdin, capture_output=True, env=env, timeout=60
    )


def launch(
    shell: list[str], home: Path, job: str, command: str, timeout: int = 0, env: dict | None = None
) -> dict[str, bytes]:
    payload = launch_payload(command, env or {}, "", script("lib") + b"\n" + script("supervise"))
    out = run(shell, "launch", "~/.airflow_async", job, str(timeout), "1", "test", stdin=payload, home=home)
    assert out.returncode == 0, out.stderr
    return dict(parse_frames(out.stdout))


def status(shell: list[str], home: Path, job_dir: str) -> JobState:
    out = run(shell, "status", job_dir, home=home)
    assert out.returncode == 0, out.stderr
    report = parse_status(out.stdout)
    return classify(report.jobs[job_dir], report.boot_id, report.now).state


def wait_state(shell: list[str], home: Path, job_dir: str, want: JobState, limit: float = 15) -> None:
    deadline = time.monotonic() + limit
    state = status(shell, home, job_dir)
    while state is not want and time.monotonic() < deadline:
        time.sleep(0.1)
        state = status(shell, home, job_dir)
    assert state is want


@pytest.fixture(autouse=True)
def _ash_link() -> None:
    busybox = shutil.which("busybox")
    assert busybox, "busybox must be installed"
    if not os.path.exists("/usr/local/bin/ash"):
        os.symlink(busybox, "/usr/local/bin/ash")


def test_launch_status_output_under_each_shell(shell: list[str], tmp_path: Path) -> None:
    rep = launch(shell, tmp_path, "j1", "echo one; echo two\necho 'é' >&2\nexit 3", env={"V": "a'b"})
    job_dir = rep["job_dir"].decode()
    assert job_dir == f"{tmp_path}/.airflow_async/j1"
    wait_state(shell, tmp_path, job_dir, JobState.FAILED)
    out = run(
        shell, "output", "100", job_dir, "stdout", "0", job_dir, "stderr", "0", job_dir, "stdout", "4", home=tmp_path
    )
    chunks = [v for k, v in parse_frames(out.stdout) if k == "chunk"]
    assert chunks == [b"one\ntwo\n", "é\n".encode(), b"two\n"]
    assert not Path(job_dir, "env").exists()


def test_cancel_kills_the_process_group_under_each_shell(shell: list[str], tmp_path: Path) -> None:
    rep = launch(shell, tmp_path, "j2", "sleep 300 & sleep 301; wait")
    job_dir, pid = rep["job_dir"].decode(), int(rep["pid"])
    wait_state(shell, tmp_path, job_dir, JobState.RUNNING)
    out = run(shell, "signal", job_dir, "1", home=tmp_path)
    assert dict(parse_frames(out.stdout))[b"outcome".decode()] == b"cancelled", out.stderr
    wait_state(shell, tmp_path, job_dir, JobState.CANCELLED)
    assert live_group_members(pid) == []


def test_time_limit_escalates_to_sigkill_under_each_shell(shell: list[str], tmp_path: Path) -> None:
    rep = launch(shell, tmp_path, "j3", "trap '' TERM; sleep 300", timeout=1)
    job_dir = rep["job_dir"].decode()
    wait_state(shell, tmp_path, job_dir, JobState.TIMED_OUT, limit=20)


def test_second_launch_of_an_id_is_refused_under_each_shell(shell: list[str], tmp_path: Path) -> None:
    launch(shell, tmp_path, "j4", "true")
    payload = launch_payload("true", {}, "", script("lib") + b"\n" + script("supervise"))
    out = run(shell, "launch", "~/.airflow_async", "j4", "0", "1", "test", stdin=payload, home=tmp_path)
    assert out.returncode == 65 and b"exists already" in out.stderr


def test_missing_cwd_is_refused_and_leaves_nothing(shell: list[str], tmp_path: Path) -> None:
    payload = launch_payload("true", {}, "/no/such/dir", script("lib") + b"\n" + script("supervise"))
    out = run(shell, "launch", "~/.airflow_async", "j5", "0", "1", "test", stdin=payload, home=tmp_path)
    assert out.returncode == 67 and b"/no/such/dir" in out.stderr
    assert sorted(os.listdir(tmp_path / ".airflow_async")) == []
