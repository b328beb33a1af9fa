"""The remote scripts, run locally under dash, bash and busybox sh (no SSH).

Over SSH the login shell only parses `sh -c ...`; these tests make each
shell actually execute launch, supervise, status, output and signal.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from airflow_ssh_async.client import program, script, stdin_args
from airflow_ssh_async.job import JobState, StatusParts, classify, launch_payload, parse_frames, parse_status
from tests.harness.procs import live_group_members, with_env

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


def run(
    shell: list[str], name: str, *args: str, stdin: bytes = b"", home: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": os.environ["PATH"], "HOME": str(home)}
    # Run the supervisor under the same shell; busybox needs a single path.
    env["AIRFLOW_ASYNC_SH"] = "/usr/local/bin/ash" if shell[0] == "busybox" else shutil.which(shell[0]) or ""
    env.update(extra_env or {})
    return subprocess.run(
        [*shell, "-c", program(name), name, *args], input=stdin, capture_output=True, env=env, timeout=60
    )


def launch(
    shell: list[str],
    home: Path,
    job: str,
    command: str,
    timeout: int = 0,
    env: dict | None = None,
    grace: int = 1,
    extra_env: dict[str, str] | None = None,
    execution_left: int = 0,
) -> dict[str, bytes]:
    payload = launch_payload(command, env or {}, "", script("lib") + b"\n" + script("supervise"))
    limits = [str(execution_left)] if execution_left else []
    out = run(
        *(shell, "launch", "~/.airflow_async", job, str(timeout), str(grace), "test", *limits),
        stdin=payload,
        home=home,
        extra_env=extra_env,
    )
    assert out.returncode == 0, out.stderr
    report = dict(parse_frames(out.stdout))
    # The supervisor reports before it writes job.json; the tests read it.
    path, deadline = Path(report["job_dir"].decode(), "job.json"), time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path} 10 s after the launch"
        time.sleep(0.02)
    return report


def run_batch(shell: list[str], name: str, *args: str, home: Path) -> subprocess.CompletedProcess[bytes]:
    """NAME with its arguments on stdin, as the client sends a batch."""
    return run(shell, name, "--stdin-args", stdin=stdin_args(args), home=home)


def status(shell: list[str], home: Path, job_dir: str) -> JobState:
    out = run_batch(shell, "status", job_dir, home=home)
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
    requests = [(job_dir, "stdout", "0"), (job_dir, "stderr", "0"), (job_dir, "stdout", "4")]
    out = run_batch(shell, "output", *(a for r in requests for a in (*r, "100", "-", "0")), home=tmp_path)
    chunks = [v for k, v in parse_frames(out.stdout) if k == "chunk"]
    assert chunks == [b"one\ntwo\n", "é\n".encode(), b"two\n"]
    assert not Path(job_dir, "env").exists()


def test_a_batch_past_the_argument_limit_answers_every_job_under_each_shell(shell: list[str], tmp_path: Path) -> None:
    # 1,000 folders with 250-character names: 250 KB of arguments, past the
    # 128 KiB that one argument may be, and 3,000 stream paths for wc; 600
    # output requests, 170 KB of arguments.
    base = tmp_path / ("d" * 100)
    base.mkdir()
    dirs = []
    for i in range(1000):
        d = base / f"{i:04d}-{'x' * 145}"
        d.mkdir()
        (d / "stdout").write_bytes(b"o" * i)
        dirs.append(str(d))
    out = run_batch(shell, "status", *dirs, home=tmp_path)
    assert out.returncode == 0, out.stderr[-500:]
    report = parse_status(out.stdout)
    assert [report.jobs[d].sizes["stdout"] for d in dirs] == list(range(1000))
    reads = run_batch(
        shell, "output", *(a for d in dirs[:600] for a in (d, "stdout", "0", "3", "-", "0")), home=tmp_path
    )
    assert reads.returncode == 0, reads.stderr[-500:]
    chunks = [v for k, v in parse_frames(reads.stdout) if k == "chunk"]
    assert chunks == [b"o" * min(i, 3) for i in range(600)]


def test_one_bad_output_request_answers_alone_and_reads_are_recorded_under_each_shell(
    shell: list[str], tmp_path: Path
) -> None:
    good, shrunk = tmp_path / "good", tmp_path / "shrunk"
    for d in (good, shrunk):
        d.mkdir()
    (good / "stdout").write_bytes(b"line one\nline t")
    (shrunk / "progress").write_bytes(b"10%\n")  # the job rewrote it with `>`
    requests = [
        (str(shrunk), "progress", "900", "100", "-", "0"),
        (str(tmp_path / "gone"), "stdout", "0", "100", "-", "0"),
        (str(good), "stdout", "0", "100", "k1", "0"),
        (str(good), "stdout", "?", "0", "k1", "0"),
        (str(good), "stderr", "?", "0", "k2", "0"),
    ]
    out = run_batch(shell, "output", *(a for r in requests for a in r), home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert parse_frames(out.stdout) == [
        ("shrunk", b"4"),
        ("missing", str(tmp_path / "gone").encode()),
        ("size", b"15"),
        ("chunk", b"line one\nline t"),
        ("delivered", b"0 15"),
        ("delivered", b""),
    ]


@pytest.mark.parametrize("copy", ["dd", "tail"])
def test_output_reads_exact_byte_ranges_with_dd_and_with_tail_under_each_shell(
    shell: list[str], copy: str, tmp_path: Path
) -> None:
    """One dd a read where dd counts in bytes, tail | head where it does not: the same bytes."""
    job = tmp_path / "j"
    job.mkdir()
    data = bytes(range(256)) * 1200  # 300 KiB, NUL bytes included: several of dd's 64 KiB blocks
    (job / "stdout").write_bytes(data)
    (job / "stderr").write_bytes(b"")
    cases = [(0, 10), (1, 70_000), (65_535, 65_538), (299_990, 100), (len(data), 5), (7, len(data))]
    requests = [(str(job), "stdout", str(o), str(n), "-", "0") for o, n in cases]
    requests.append((str(job), "stderr", "0", "100", "-", "0"))
    out = run(
        shell,
        "output",
        "--stdin-args",
        stdin=stdin_args([a for r in requests for a in r]),
        home=tmp_path,
        extra_env={"AIRFLOW_ASYNC_COPY": copy},
    )
    assert out.returncode == 0, out.stderr
    chunks = [v for k, v in parse_frames(out.stdout) if k == "chunk"]
    assert chunks == [data[o : o + n] for o, n in cases] + [b""]


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


def test_the_supervisor_copy_is_shared_and_only_ours_is_run(shell: list[str], tmp_path: Path) -> None:
    launch(shell, tmp_path, "j6", "true")
    [copy] = (tmp_path / ".airflow_async" / ".supervisor").glob("*/supervise.sh")
    assert copy.read_bytes() == script("lib") + b"\n" + script("supervise")
    inode = copy.stat().st_ino
    wait_state(shell, tmp_path, launch(shell, tmp_path, "j7", "true")["job_dir"].decode(), JobState.SUCCEEDED)
    assert copy.stat().st_ino == inode, "a later launch runs the shared copy, it does not write it again"

    # A copy someone else owns (an async_dir others can write to) is replaced, never run.
    planted = tmp_path / "planted-ran"
    copy.write_text(f": > {planted}\n")
    os.chown(copy, 65534, 65534)
    rep = launch(shell, tmp_path, "j8", "echo fine")
    wait_state(shell, tmp_path, rep["job_dir"].decode(), JobState.SUCCEEDED)
    assert not planted.exists(), "a supervisor copy of another owner was run"
    assert copy.stat().st_uid == os.getuid() and copy.read_bytes() == script("lib") + b"\n" + script("supervise")


# --- the supervisor waits without a tick -------------------------------------------------


def _result_after(job_dir: str, started: float, limit: float = 10) -> tuple[float, dict]:
    """Seconds from STARTED until result.json appeared, and its content."""
    path = Path(job_dir, "result.json")
    deadline = time.monotonic() + limit
    while not path.exists():
        assert time.monotonic() < deadline, f"no result.json in {job_dir} after {limit}s"
        time.sleep(0.01)
    return time.monotonic() - started, json.loads(path.read_text())


def _children(pid: int) -> list[str]:
    """Command lines of PID's live children."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if int(stat[1]) == pid and stat[0] != "Z":
            out.append(cmd)
    return out


@pytest.mark.parametrize("timeout", [0, 60])
@pytest.mark.parametrize("mode", ["", "tick"])
def test_the_end_of_a_job_is_seen_at_once(shell: list[str], tmp_path: Path, timeout: int, mode: str) -> None:
    """A 0.3 s job with a far time limit has its result at once (a supervisor
    that slept to its deadline would take 60 s), with its exit code. How
    soon exactly is a benchmark's business (bench/run_all.py), not a bound
    that must hold on a loaded machine."""
    extra = {"AIRFLOW_ASYNC_WAIT": mode} if mode else None
    started = time.monotonic()
    rep = launch(shell, tmp_path, "quick", "sleep 0.3; exit 7", timeout=timeout, extra_env=extra)
    took, result = _result_after(rep["job_dir"].decode(), started)
    assert result["reason"] == "exited" and result["exit_code"] == 7
    assert took < 5, f"result {took:.2f}s after launch"


@pytest.mark.parametrize("code", ["exit 0", "exit 127", "kill -9 $$"])
def test_exit_status_is_kept_exactly(shell: list[str], tmp_path: Path, code: str) -> None:
    rep = launch(shell, tmp_path, "code", f"sleep 0.2; {code}", timeout=60)
    _, result = _result_after(rep["job_dir"].decode(), time.monotonic())
    want = {"exit 0": ("exited", 0, None), "exit 127": ("exited", 127, None), "kill -9 $$": ("signal", None, 9)}[code]
    assert (result["reason"], result["exit_code"], result["signal"]) == want


def test_no_helper_process_without_a_time_limit_and_one_sleep_with_it(shell: list[str], tmp_path: Path) -> None:
    free = launch(shell, tmp_path, "free", "sleep 30")
    limited = launch(shell, tmp_path, "limited", "sleep 30", timeout=600)
    time.sleep(0.5)
    # A bash supervisor ticks (a `sleep 1`) even with nothing due; see supervise.sh.
    # A loaded machine may not have started the tick yet: look again for a few seconds.
    for rep, want in ((free, ["sleep"] if shell[0] == "bash" else []), (limited, ["sleep"])):
        info = json.loads(Path(rep["job_dir"].decode(), "job.json").read_text())
        deadline = time.monotonic() + 5
        while True:
            helpers = [c for c in _children(info["supervisor_pid"]) if not c.startswith("/bin/sh ")]
            if [c.split()[0] for c in helpers] == want or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [c.split()[0] for c in helpers] == want, helpers
    for rep in (free, limited):
        run(shell, "signal", rep["job_dir"].decode(), "1", home=tmp_path)


def test_cancel_wakes_the_supervisor_which_escalates_after_the_grace(shell: list[str], tmp_path: Path) -> None:
    """A job that ignores SIGTERM, a time limit far away: SIGKILL comes after
    the grace period, not at the deadline."""
    rep = launch(shell, tmp_path, "stubborn", "trap '' TERM; sleep 300", timeout=600, grace=1)
    job_dir = rep["job_dir"].decode()
    time.sleep(0.3)
    started = time.monotonic()
    out = run(shell, "signal", job_dir, "1", home=tmp_path)
    assert dict(parse_frames(out.stdout))["outcome"] == b"cancelled", out.stderr
    took, result = _result_after(job_dir, started)
    assert (result["reason"], result["signal"]) == ("cancelled", 9)
    assert took < 10, f"cancel took {took:.1f}s (the time limit is 600 s away)"
    assert live_group_members(int(rep["pid"])) == []


def test_time_limit_is_kept_to_the_second(shell: list[str], tmp_path: Path) -> None:
    started = time.monotonic()
    rep = launch(shell, tmp_path, "limit", "sleep 300", timeout=2)
    took, result = _result_after(rep["job_dir"].decode(), started)
    assert (result["reason"], result["signal"]) == ("timed_out", 15)
    assert 1.0 < took < 8, f"time limit of 2 s hit after {took:.1f}s"


def test_an_instant_job_with_a_far_time_limit_reports_at_once(shell: list[str], tmp_path: Path) -> None:
    # The job ends before the supervisor starts waiting: that must not leave
    # the supervisor asleep until the deadline (it did once, under dash and ash).
    for i in range(5):
        started = time.monotonic()
        rep = launch(shell, tmp_path, f"instant{i}", "true", timeout=3600)
        wait_state(shell, tmp_path, rep["job_dir"].decode(), JobState.SUCCEEDED, limit=10)
        assert time.monotonic() - started < 10  # the time limit is an hour away


def test_archive_refuses_a_running_job_but_takes_a_lost_one(shell: list[str], tmp_path: Path) -> None:
    running = launch(shell, tmp_path, "running", "sleep 30")["job_dir"].decode()
    lost = launch(shell, tmp_path, "lost", "sleep 30")["job_dir"].decode()
    refused = run(shell, "archive", running, "archive", home=tmp_path)
    assert refused.returncode == 70 and b"still running" in refused.stderr
    # The supervisor's pid now names another process: lost, as classify says.
    info = json.loads(Path(lost, "job.json").read_text())
    info["supervisor_start"] = "1"
    Path(lost, "job.json").write_text(json.dumps(info, indent=2) + "\n")
    assert status(shell, tmp_path, lost) is JobState.LOST
    # Lost, but its job still runs: a retry must not start beside it.
    refused = run(shell, "archive", lost, "archive", home=tmp_path)
    assert refused.returncode == 70 and b"process group" in refused.stderr, refused.stderr
    os.killpg(info["pid"], signal.SIGKILL)
    assert live_group_members(info["pid"]) == []
    moved = run(shell, "archive", lost, "archive", home=tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert dict(parse_frames(moved.stdout))["archived"] == f"{tmp_path}/.airflow_async/.archive/lost/1".encode()
    os.killpg(json.loads(Path(running, "job.json").read_text())["pid"], signal.SIGKILL)


def test_exit_codes_beyond_the_signal_range_stay_exit_codes(shell: list[str], tmp_path: Path) -> None:
    rep = launch(shell, tmp_path, "e200", "exit 200")
    wait_state(shell, tmp_path, rep["job_dir"].decode(), JobState.FAILED)
    result = json.loads(Path(rep["job_dir"].decode(), "result.json").read_text())
    assert (result["reason"], result["exit_code"], result["signal"]) == ("exited", 200, None)


def test_a_supervisor_shell_that_is_missing_fails_the_launch_and_leaves_no_secret(
    shell: list[str], tmp_path: Path
) -> None:
    payload = launch_payload("true", {"SECRET": "s"}, "", script("lib") + b"\n" + script("supervise"))
    out = run(
        shell, "launch", "~/.airflow_async", "nosup", "0", "1", "test",
        stdin=payload, home=tmp_path, extra_env={"AIRFLOW_ASYNC_SH": "/no/such/shell"},
    )  # fmt: skip
    assert out.returncode == 71, out.stderr
    assert b"/no/such/shell" in out.stderr
    assert "pid" not in dict(parse_frames(out.stdout)), "the client takes a missing pid as a failed launch"
    assert not (tmp_path / ".airflow_async" / "nosup").exists(), "the folder (env, payload) must be gone"


def test_a_supervisor_that_cannot_start_sends_no_report_and_says_why(shell: list[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken-sh"
    broken.write_text("#!/bin/sh\necho 'broken shell' >&2; exit 1\n")
    broken.chmod(0o755)
    payload = launch_payload("true", {}, "", script("lib") + b"\n" + script("supervise"))
    out = run(
        shell, "launch", "~/.airflow_async", "nosup", "0", "1", "test",
        stdin=payload, home=tmp_path, extra_env={"AIRFLOW_ASYNC_SH": str(broken)},
    )  # fmt: skip
    assert "pid" not in dict(parse_frames(out.stdout)), "the client takes a missing pid as a failed launch"
    assert "broken shell" in (tmp_path / ".airflow_async" / "nosup" / "supervisor.log").read_text()


def test_env_and_payload_are_removed_when_the_job_cannot_start(shell: list[str], tmp_path: Path) -> None:
    """The cwd vanished between the launcher's check and the job's start."""
    job_dir = tmp_path / "j-nocwd"
    job_dir.mkdir()
    (job_dir / "env").write_text("export SECRET='s'\n")
    (job_dir / "payload").write_text("SECRET\n")
    (job_dir / "command").write_text("true\n")
    sup = tmp_path / "supervise.sh"
    sup.write_bytes(script("lib") + b"\n" + script("supervise"))
    done = subprocess.run(
        [*shell, str(sup), str(job_dir), "j-nocwd", "0", "1", str(tmp_path / "gone"), "test"],
        capture_output=True, timeout=30, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads((job_dir / "result.json").read_text())
    assert (result["reason"], result["exit_code"]) == ("exited", 126)
    assert not (job_dir / "env").exists() and not (job_dir / "payload").exists()


def _classified(shell: list[str], home: Path, job_dir: str):
    out = run(shell, "status", job_dir, home=home)
    assert out.returncode == 0, out.stderr
    report = parse_status(out.stdout)
    return classify(report.jobs[job_dir], report.boot_id, report.now)


def test_the_grace_given_at_cancel_time_wins_over_the_launch_grace(shell: list[str], tmp_path: Path) -> None:
    """Launched with a 60 s grace, killed with --grace 1: SIGKILL a second
    after the SIGTERM, not a minute."""
    rep = launch(shell, tmp_path, "stubborn", "trap '' TERM; sleep 300", grace=60)
    job_dir = rep["job_dir"].decode()
    wait_state(shell, tmp_path, job_dir, JobState.RUNNING)
    time.sleep(0.3)
    started = time.monotonic()
    out = run(shell, "signal", job_dir, "1", home=tmp_path)
    assert dict(parse_frames(out.stdout))["outcome"] == b"cancelled", out.stderr
    took, result = _result_after(job_dir, started, limit=30)
    assert (result["reason"], result["signal"]) == ("cancelled", 9)
    assert took < 20, f"the cancel's grace of 1 s took {took:.1f}s (the launch's was 60 s)"
    assert live_group_members(int(rep["pid"])) == []


def test_a_later_kill_with_a_shorter_grace_shortens_a_pending_cancel(shell: list[str], tmp_path: Path) -> None:
    rep = launch(shell, tmp_path, "stubborn2", "trap '' TERM; sleep 300", grace=60)
    job_dir = rep["job_dir"].decode()
    wait_state(shell, tmp_path, job_dir, JobState.RUNNING)
    run(shell, "signal", job_dir, "120", home=tmp_path)
    time.sleep(0.5)
    pending = _classified(shell, tmp_path, job_dir)
    assert pending.state is JobState.RUNNING and "cancel requested" in pending.reason
    started = time.monotonic()
    run(shell, "signal", job_dir, "0", home=tmp_path)
    took, result = _result_after(job_dir, started, limit=30)
    assert (result["reason"], result["signal"]) == ("cancelled", 9) and took < 20


@pytest.mark.parametrize(
    ("on_term", "state", "reason"),
    [
        ("exit 0", JobState.SUCCEEDED, "exited with code 0, although a cancel was requested"),
        ("exit 3", JobState.CANCELLED, "cancelled on request"),
        ("kill -9 $$", JobState.CANCELLED, "cancelled on request"),
    ],
)
def test_a_cancelled_job_that_exits_0_on_its_own_reads_succeeded(
    on_term: str, state: JobState, reason: str, shell: list[str], tmp_path: Path
) -> None:
    """The exit status wins over the cancel: exit 0 is a job that did its work."""
    rep = launch(shell, tmp_path, "polite", f"trap '{on_term}' TERM\necho ready\nwhile :; do sleep 1; done", grace=30)
    job_dir = rep["job_dir"].decode()
    # Signal only once the trap is set: under load the shell may not be there yet.
    deadline = time.monotonic() + 20
    while Path(job_dir, "stdout").read_bytes() != b"ready\n":
        assert time.monotonic() < deadline, "the job never set its trap"
        time.sleep(0.05)
    run(shell, "signal", job_dir, "30", home=tmp_path)
    _result_after(job_dir, time.monotonic(), limit=30)
    got = _classified(shell, tmp_path, job_dir)
    assert (got.state, got.reason) == (state, reason), Path(job_dir, "result.json").read_text()


# --- a launch that died half way ----------------------------------------------------------


def _half_made(home: Path, job: str, launching: str | None = None, age: int = 600) -> Path:
    """A job folder as a launch that died after the mkdir leaves it: secrets, no job.json."""
    folder = home / ".airflow_async" / job
    folder.mkdir(parents=True)
    (folder / "payload").write_text("airflow-ssh-async-payload 1 0 14 0 0 0\nexport S='x'\n")
    (folder / "env").write_text("export S='secret'\n")
    if launching is not None:
        (folder / "launching").write_text(launching)
    os.utime(folder, (time.time() - age, time.time() - age))
    return folder


def _my_start() -> str:
    return Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]


def test_a_folder_left_by_a_dead_launch_is_lost_archived_without_its_secrets_and_relaunched(
    shell: list[str], tmp_path: Path
) -> None:
    # Its launcher's pid now names another process (pid 1, another start time).
    folder = _half_made(tmp_path, "dead", launching="1 999\n")
    assert status(shell, tmp_path, str(folder)) is JobState.LOST
    moved = run(shell, "archive", str(folder), "archive", home=tmp_path)
    assert moved.returncode == 0, moved.stderr
    archived = Path(dict(parse_frames(moved.stdout))["archived"].decode())
    assert sorted(p.name for p in archived.iterdir()) == ["launching"], "env and payload are removed"
    rep = launch(shell, tmp_path, "dead", "echo again")
    wait_state(shell, tmp_path, rep["job_dir"].decode(), JobState.SUCCEEDED)
    # A folder without a launching file (a launch that died before writing it): its age decides.
    folder = _half_made(tmp_path, "older")
    assert status(shell, tmp_path, str(folder)) is JobState.LOST
    out = run(shell, "signal", str(folder), "1", home=tmp_path)
    assert dict(parse_frames(out.stdout)).get("outcome") == b"gone", out.stderr
    assert not (folder / "env").exists() and not (folder / "payload").exists()


def test_a_launch_in_progress_is_starting_not_archived_its_cancel_pending(shell: list[str], tmp_path: Path) -> None:
    alive = _half_made(tmp_path, "alive", launching=f"1 999\n{os.getpid()} {_my_start()}\n")
    fresh = _half_made(tmp_path, "fresh", age=0)
    for folder in (alive, fresh):
        assert status(shell, tmp_path, str(folder)) is JobState.STARTING
        refused = run(shell, "archive", str(folder), "archive", home=tmp_path)
        assert refused.returncode == 70 and b"its launch may still be running" in refused.stderr
        cancel = run(shell, "signal", str(folder), "1", home=tmp_path)
        assert dict(parse_frames(cancel.stdout))["outcome"] == b"pending", cancel.stderr
        assert (folder / "cancel").exists(), "the cancel is recorded for the supervisor to find"
        assert (folder / "env").exists(), "a launch in progress keeps its files"


def test_a_launch_names_its_launcher_and_supervisor(shell: list[str], tmp_path: Path) -> None:
    rep = launch(shell, tmp_path, "named", "true")
    lines = Path(rep["job_dir"].decode(), "launching").read_text().splitlines()
    assert len(lines) == 2 and lines[1].split()[0] == rep["supervisor_pid"].decode()
    wait_state(shell, tmp_path, rep["job_dir"].decode(), JobState.SUCCEEDED)


@pytest.mark.parametrize("how", ["time limit", "cancel"])
def test_a_term_ignoring_child_is_killed_before_the_result_under_each_shell(
    shell: list[str], tmp_path: Path, how: str
) -> None:
    command = "(trap '' TERM; exec sleep 30) & sleep 30"
    rep = launch(shell, tmp_path, "drain", command, timeout=2 if how == "time limit" else 0, grace=1)
    job_dir, pid = rep["job_dir"].decode(), int(rep["pid"])
    if how == "cancel":
        wait_state(shell, tmp_path, job_dir, JobState.RUNNING)
        run(shell, "signal", job_dir, "1", home=tmp_path)
    result = Path(job_dir, "result.json")
    deadline = time.monotonic() + 30
    while not result.exists():
        assert time.monotonic() < deadline, "no result"
        time.sleep(0.1)
    assert live_group_members(pid, limit=0) == [], "the result came while the group still ran"
    assert "group_left" not in json.loads(result.read_text())


def test_supervisors_keeps_copies_that_running_jobs_run_and_removes_the_rest(shell: list[str], tmp_path: Path) -> None:
    from airflow_ssh_async.job import supervisor_id

    running = launch(shell, tmp_path, "runs", "sleep 30")
    wait_state(shell, tmp_path, running["job_dir"].decode(), JobState.RUNNING)
    in_use = supervisor_id(script("lib") + b"\n" + script("supervise"))
    unused = tmp_path / ".airflow_async" / ".supervisor" / "0123456789abcdef"
    unused.mkdir()
    (unused / "supervise.sh").write_text("")
    (tmp_path / ".airflow_async" / ".supervisor" / "not-a-copy").mkdir()  # not ours to touch

    def copies(remove: str) -> dict[str, str]:
        out = run(shell, "supervisors", "~/.airflow_async", "ffffffffffffffff", remove, home=tmp_path)
        assert out.returncode == 0, out.stderr
        frames = parse_frames(out.stdout)
        return {frames[i][1].decode(): frames[i + 1][1].decode() for i in range(1, len(frames), 2)}

    assert copies("0") == {in_use: "in_use", "0123456789abcdef": "unused"}
    assert unused.exists()
    assert copies("1") == {in_use: "in_use", "0123456789abcdef": "removed"}
    assert not unused.exists() and (tmp_path / ".airflow_async" / ".supervisor" / "not-a-copy").exists()
    run(shell, "signal", running["job_dir"].decode(), "1", home=tmp_path)
    wait_state(shell, tmp_path, running["job_dir"].decode(), JobState.CANCELLED)
    assert copies("1") == {in_use: "removed"}


# --- execution_timeout: the deadline file (limit.sh) -------------------------------------


@pytest.mark.timeout(60)
def test_the_sooner_of_job_timeout_and_execution_timeout_ends_the_job_and_is_named(
    shell: list[str], tmp_path: Path
) -> None:
    started = time.monotonic()
    by_exec = launch(shell, tmp_path, "byexec", "sleep 300", timeout=60, execution_left=2)
    by_job = launch(shell, tmp_path, "byjob", "sleep 300", timeout=2, execution_left=60)
    for rep, name in ((by_exec, "execution_timeout"), (by_job, "job_timeout")):
        took, result = _result_after(rep["job_dir"].decode(), started)
        assert (result["reason"], result["signal"], result["limit"]) == ("timed_out", 15, name), result
        assert 1.0 < took < 5.0, f"{name} of 2 s hit after {took:.1f}s"
        status = _classified(shell, tmp_path, rep["job_dir"].decode())
        assert status.state is JobState.TIMED_OUT and status.limit == name and name in status.reason


@pytest.mark.timeout(60)
def test_limit_moves_a_running_jobs_deadline_later_and_earlier(shell: list[str], tmp_path: Path) -> None:
    """A retry re-attaching gets its own execution_timeout: the supervisor reads the new deadline at once."""
    later = launch(shell, tmp_path, "later", "sleep 300", execution_left=2)
    earlier = launch(shell, tmp_path, "earlier", "sleep 300", execution_left=600)
    time.sleep(0.3)
    for rep, secs in ((later, "5"), (earlier, "1")):
        out = run(shell, "limit", rep["job_dir"].decode(), secs, home=tmp_path)
        assert dict(parse_frames(out.stdout)) == {"outcome": b"moved"}, out.stderr
    moved = time.monotonic()
    took, result = _result_after(earlier["job_dir"].decode(), moved)
    # Far under the old 600 s: the supervisor read the new deadline at once.
    assert result["limit"] == "execution_timeout" and took < 8.0, f"the earlier deadline hit after {took:.1f}s"
    assert not Path(later["job_dir"].decode(), "result.json").exists(), "the old deadline of 2 s still ended it"
    took, result = _result_after(later["job_dir"].decode(), moved)
    assert result["limit"] == "execution_timeout" and 3.0 < took < 9.0, f"the later deadline hit after {took:.1f}s"


@pytest.mark.timeout(60)
def test_limit_never_lifts_job_timeout_and_answers_finished_unsupported_and_bad_input(
    shell: list[str], tmp_path: Path
) -> None:
    capped = launch(shell, tmp_path, "capped", "sleep 300", timeout=2, execution_left=1)
    time.sleep(0.3)
    run(shell, "limit", capped["job_dir"].decode(), "600", home=tmp_path)
    took, result = _result_after(capped["job_dir"].decode(), time.monotonic())
    assert result["limit"] == "job_timeout" and took < 4.0, result
    out = run(shell, "limit", capped["job_dir"].decode(), "5", home=tmp_path)
    assert dict(parse_frames(out.stdout)) == {"outcome": b"finished"}
    old = launch(shell, tmp_path, "old", "sleep 300")
    job_json = Path(old["job_dir"].decode(), "job.json")  # launch() waits for it
    # A supervisor from before the deadline file says nothing about one.
    job_json.write_text(job_json.read_text().replace('  "deadline_file": "deadline",\n', ""))
    out = run(shell, "limit", old["job_dir"].decode(), "5", home=tmp_path)
    assert dict(parse_frames(out.stdout)) == {"outcome": b"unsupported"}
    for bad in ("", "-1", "5; rm -rf ~", "1e3"):
        out = run(shell, "limit", old["job_dir"].decode(), bad, home=tmp_path)
        assert out.returncode == 64 and b"whole number" in out.stderr, (bad, out)
    out = run(shell, "limit", str(tmp_path / "nope"), "5", home=tmp_path)
    assert out.returncode == 66
    run(shell, "signal", old["job_dir"].decode(), "1", home=tmp_path)


# --- the waiting status call (status.sh --wait) ---------------------------------


@pytest.fixture(scope="module")
def no_inotify_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH with every command of this machine but inotifywait: a host without inotify-tools."""
    assert shutil.which("inotifywait"), "inotifywait must be installed (dev/setup.sh installs inotify-tools)"
    bin_dir = tmp_path_factory.mktemp("no-inotify-bin")
    for folder in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        for name in os.listdir(folder):
            if name != "inotifywait" and not (bin_dir / name).exists():
                (bin_dir / name).symlink_to(os.path.join(folder, name))
    return str(bin_dir)


@pytest.fixture(params=["inotifywait", "sleep-loop"])
def wait_path(request: pytest.FixtureRequest, no_inotify_path: str) -> dict[str, str]:
    return {} if request.param == "inotifywait" else {"PATH": no_inotify_path}


def waiting_status(
    shell: list[str], home: Path, job_dir: str, *wait: str, env: dict[str, str]
) -> tuple[dict[str, bytes], float]:
    """status --wait WAIT... for one job: its head records and how long it took."""
    started = time.monotonic()
    out = run(shell, "status", "--stdin-args", stdin=stdin_args(["--wait", *wait, job_dir]), home=home, extra_env=env)
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    head = dict(parse_frames(out.stdout.split(b"job ", 1)[0]))
    return head, took


def test_a_waiting_status_returns_as_the_job_ends(shell: list[str], tmp_path: Path, wait_path: dict) -> None:
    job_dir = launch(shell, tmp_path, "w", "sleep 2; echo done")["job_dir"].decode()
    head, took = waiting_status(shell, tmp_path, job_dir, "20", "-1", "-", env=wait_path)
    assert head["woke"] == b"ended"
    ended = os.stat(Path(job_dir, "result.json")).st_mtime
    assert time.time() - ended < 1.5, "the report came more than 1.5 s after the job's end"
    assert took < 10
    # What told it: the supervisor's mark in async_dir (one small file),
    # written just after result.json.
    mark, deadline = Path(job_dir).parent / ".ended", time.monotonic() + 10
    while not mark.exists():
        assert time.monotonic() < deadline, "no .ended mark 10 s after the end"
        time.sleep(0.05)
    assert mark.read_text().split()[1] == "w"
    assert status(shell, tmp_path, job_dir) is JobState.SUCCEEDED


def test_a_waiting_status_sees_a_supervisor_killed_without_a_result(
    shell: list[str], tmp_path: Path, wait_path: dict
) -> None:
    report = launch(shell, tmp_path, "w", "sleep 60")
    job_dir = report["job_dir"].decode()
    sup = int(report["supervisor_pid"])
    try:
        proc = subprocess.Popen(
            [*shell, "-c", program("status"), "status", "--stdin-args"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **wait_path},
        )
        time.sleep(1)
        os.kill(sup, signal.SIGKILL)
        killed = time.monotonic()
        out, _ = proc.communicate(stdin_args(["--wait", "30", "-1", "-", job_dir]), timeout=30)
        # Looked for every 5 s (SCAN_EVERY): a dead supervisor writes nothing to wake the wait.
        assert time.monotonic() - killed < 9, "a dead supervisor was seen late"
        assert b"woke 5\nended\n" in out
        report2 = parse_status(out)
        assert classify(report2.jobs[job_dir], report2.boot_id, report2.now).state is JobState.LOST
    finally:
        os.killpg(int(report["pid"]), signal.SIGKILL)


def test_a_waiting_status_returns_on_growth_only_once_allowed_and_else_on_time(
    shell: list[str], tmp_path: Path, wait_path: dict
) -> None:
    job_dir = launch(shell, tmp_path, "w", "echo a; sleep 60")["job_dir"].decode()
    try:
        wait_state(shell, tmp_path, job_dir, JobState.RUNNING)
        # The caller's last report said 0 bytes: the job has written "a\n" since.
        head, took = waiting_status(shell, tmp_path, job_dir, "20", "0", "0", env=wait_path)
        assert head["woke"] == b"grew" and took < 5
        # Growth may count only after 2 s: it waits those out, then returns at once.
        head, took = waiting_status(shell, tmp_path, job_dir, "20", "2", "0", env=wait_path)
        assert head["woke"] == b"grew" and 1 <= took < 6, took
        # Nothing new (2 bytes known): it waits its whole time.
        head, took = waiting_status(shell, tmp_path, job_dir, "2", "0", "2", env=wait_path)
        assert head["woke"] == b"time" and 1 <= took < 6, took
    finally:
        run(shell, "signal", job_dir, "1", home=tmp_path)


def test_a_waiting_status_with_parts_reports_each_end_at_once_and_waits_on(
    shell: list[str], tmp_path: Path, wait_path: dict
) -> None:
    # Three jobs: two end a second apart, one runs on. Each end comes as a
    # part of the one call within about a second; the call goes on until the
    # last watched job ends (a part too), and its own report then covers no job.
    quick = launch(shell, tmp_path, "q1", "sleep 1; echo one")["job_dir"].decode()
    later = launch(shell, tmp_path, "q2", "sleep 2.5; echo two")["job_dir"].decode()
    slow = launch(shell, tmp_path, "s", "sleep 60")
    slow_dir = slow["job_dir"].decode()
    proc = subprocess.Popen(
        [*shell, "-c", program("status"), "status", "--stdin-args"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **wait_path},
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(stdin_args(["--wait-parts", "30", "-1", "-", quick, later, slow_dir]))
    proc.stdin.close()
    parts, seen, out = StatusParts(), [], b""
    os.set_blocking(proc.stdout.fileno(), False)
    try:
        deadline = time.monotonic() + 20
        while len(seen) < 2:
            assert time.monotonic() < deadline, seen
            data = proc.stdout.read(65536) or b""
            out += data
            for report in parts.feed(data):
                seen += [(d, time.time()) for d in report.jobs]
                for facts in report.jobs.values():
                    assert classify(facts, report.boot_id, report.now).state is JobState.SUCCEEDED
            time.sleep(0.05)
        assert [d for d, _ in seen] == [quick, later]
        for d, at in seen:
            assert at - os.stat(Path(d, "result.json")).st_mtime < 1.5, "a part came late"
        assert proc.poll() is None, "the call ended with a job still running"
        run(shell, "signal", slow_dir, "1", home=tmp_path)
        os.set_blocking(proc.stdout.fileno(), True)
        rest = proc.stdout.read()
        [last] = parts.feed(rest)
        assert list(last.jobs) == [slow_dir]
        report = parse_status(out + rest)
        assert report.woke == "ended"
        assert report.jobs == {}
    finally:
        with contextlib.suppress(OSError):
            os.killpg(int(slow["pid"]), signal.SIGKILL)
        proc.kill()
        proc.wait(timeout=10)


def watcher_leftovers(tmp: Path, limit: float = 5) -> tuple[list[int], list[str]]:
    """What a waiting call left behind in TMP once LIMIT s passed: its
    processes (watcher, inotifywait, sleep) and its FIFO's folder."""
    deadline = time.monotonic() + limit
    while True:
        procs, dirs = with_env(f"TMPDIR={tmp}"), sorted(os.listdir(tmp))
        if (not procs and not dirs) or time.monotonic() > deadline:
            return procs, dirs
        time.sleep(0.1)


@pytest.mark.parametrize("end", ["time", "caller closed", "caller killed"])
def test_a_waiting_status_leaves_no_watcher_and_no_fifo_behind(shell: list[str], tmp_path: Path, end: str) -> None:
    # With inotifywait the wait reads a FIFO fed by a watcher of its own
    # (inotifywait -m and a tick a second). Whether the call ends on time or
    # its caller goes (the channel closed: SIGPIPE; or the script killed
    # outright, no EXIT trap), the watcher, its inotifywait and the FIFO's
    # folder go too: the watcher ends once the FIFO has no reader. Output
    # may end these waits at once (GROW_AFTER 0): the watcher is restarted
    # on the job folders, and the new one must hold no copy of the FIFO's
    # reading end (a shell keeps one across a redirected function call).
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    job_dir = launch(shell, tmp_path, "w", "sleep 60")["job_dir"].decode()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TMPDIR": str(tmp)}
    try:
        wait_state(shell, tmp_path, job_dir, JobState.RUNNING)
        if end == "time":
            head, took = waiting_status(shell, tmp_path, job_dir, "2", "0", "-", env={"TMPDIR": str(tmp)})
            assert head["woke"] == b"time" and 1 <= took < 6, (head, took)
        else:
            proc = subprocess.Popen(
                [*shell, "-c", program("status"), "status", "--stdin-args"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(stdin_args(["--wait", "30", "0", "-", job_dir]))
            proc.stdin.close()
            assert proc.stdout.read(7) == b"wait 0\n", "no wait record"
            # The watcher runs now (it started before the first record).
            assert with_env(f"TMPDIR={tmp}"), "no watcher beside the wait"
            if end == "caller closed":
                proc.stdout.close()
            else:
                proc.kill()
            proc.wait(timeout=10)
        assert watcher_leftovers(tmp) == ([], []), "the wait left its watcher or its FIFO"
    finally:
        run(shell, "signal", job_dir, "1", home=tmp_path)


def test_an_inotifywait_that_cannot_watch_leaves_the_wait_to_its_naps(shell: list[str], tmp_path: Path) -> None:
    # inotifywait is there but fails (too many watches, a file system
    # without inotify): the wait naps instead and still sees the end soon.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "inotifywait").write_text("#!/bin/sh\necho 'Failed to watch: No space left on device' >&2\nexit 1\n")
    (fake / "inotifywait").chmod(0o755)
    job_dir = launch(shell, tmp_path, "w", "sleep 3; echo done")["job_dir"].decode()
    head, took = waiting_status(shell, tmp_path, job_dir, "20", "-1", "-", env={"PATH": f"{fake}:{os.environ['PATH']}"})
    assert head["woke"] == b"ended", head
    assert time.time() - os.stat(Path(job_dir, "result.json")).st_mtime < 2.5, "the end was seen late"
    assert took < 10


@pytest.mark.parametrize("tmpdir", ["missing", "a file"])
def test_a_tmpdir_that_cannot_hold_the_fifo_leaves_the_wait_to_its_naps(
    shell: list[str], tmp_path: Path, tmpdir: str
) -> None:
    # The FIFO goes under $TMPDIR: a host whose TMPDIR names no folder (or a
    # file) still gets its end seen soon, by the naps, and nothing is made there.
    tmp = tmp_path / "tmp"
    if tmpdir == "a file":
        tmp.write_text("not a folder\n")
    job_dir = launch(shell, tmp_path, "w", "sleep 3; echo done")["job_dir"].decode()
    head, took = waiting_status(shell, tmp_path, job_dir, "20", "-1", "-", env={"TMPDIR": str(tmp)})
    assert head["woke"] == b"ended", head
    assert time.time() - os.stat(Path(job_dir, "result.json")).st_mtime < 2.5, "the end was seen late"
    assert took < 10
    assert tmp.exists() == (tmpdir == "a file") and not with_env(f"TMPDIR={tmp}"), "a watcher or folder was left"
