"""The ops console (`airflow-ssh-async`) against a real sshd and real remote shells.

Most tests call ``cli.main`` in-process (fast, output captured); the ones about
the process itself (exit status, no traceback, output while the job runs) run
the installed console script.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_ssh_async import cli, client
from airflow_ssh_async.hooks import SSHAsyncJobHook
from airflow_ssh_async.job import OUTPUT_KEYS, JobRef
from tests.harness.sshd import USERS, SSHServer, free_port, run_as, start_server

SCRIPT = Path(sys.executable).parent / "airflow-ssh-async"
DASH = "cli_asyncdash"


@pytest.fixture(scope="module")
def server() -> Iterator[SSHServer]:
    srv = start_server()
    for user in USERS:
        srv.set_connection(f"cli_{user}", user)
    yield srv
    for user in USERS:
        os.environ.pop(f"AIRFLOW_CONN_CLI_{user.upper()}", None)
    # Stop only the sshd this module started (its own process group).
    if srv.process is not None and srv.process.poll() is None:
        os.killpg(srv.process.pid, signal.SIGTERM)
        srv.process.wait(10)


def new_async_dir(user: str) -> str:
    return f"~/cli-test-{uuid.uuid4().hex[:10]}"


def remove_async_dir(user: str, async_dir: str) -> None:
    """Kill what is left of our jobs (by the pids they recorded), then drop the folder."""
    path = async_dir.replace("~", "$HOME", 1)
    run_as(
        user,
        f"""for f in {path}/*/job.json; do
              [ -f "$f" ] || continue
              p=$(sed -n 's/^  "pid": \\([0-9]*\\),$/\\1/p' "$f")
              s=$(sed -n 's/^  "supervisor_pid": \\([0-9]*\\),$/\\1/p' "$f")
              [ -f "${{f%/job.json}}/result.json" ] && continue
              [ -n "$p" ] && kill -s KILL -- "-$p" 2>/dev/null
              [ -n "$s" ] && kill -s KILL "$s" 2>/dev/null
            done
            rm -rf {path}""",
    )


def run_cli(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> tuple[int, str, str]:
    """cli.main in-process: (exit code, stdout, stderr)."""
    capsysbinary.readouterr()
    code = cli.main(list(argv))
    out, err = capsysbinary.readouterr()
    return code, out.decode(), err.decode()


def run_script(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.exists(), f"{SCRIPT} is missing: pip install -e the repo to get the console script"
    return subprocess.run([str(SCRIPT), *argv], capture_output=True, text=True, timeout=timeout)


def wait_for_states(hook: SSHAsyncJobHook, wanted: dict[str, str], timeout: float = 30) -> None:
    """Poll until every job has the wanted state (the remote side works at its pace)."""
    deadline = time.monotonic() + timeout
    while True:
        got = {j: hook.status([hook.job_dir(j)])[hook.job_dir(j)][0].state.value for j in wanted}
        if got == wanted:
            return
        assert time.monotonic() < deadline, f"jobs did not reach {wanted}: {got}"
        time.sleep(0.3)


def job_json(user: str, async_dir: str, job_id: str) -> dict:
    """job.json, waited for: the launch reports before the supervisor writes it."""
    path = async_dir.replace("~", "$HOME", 1)
    f = f"{path}/{job_id}/job.json"
    return json.loads(
        run_as(user, f"i=0; until [ -s {f} ] || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done; cat {f}").stdout
    )


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("airflow-ssh-async: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, err)


ZOO_STATES = {
    "ok": "succeeded",
    "bad": "failed",
    "sig": "killed",
    "tout": "timed_out",
    "canc": "cancelled",
    "lost": "lost",
    "run": "running",
}


@pytest.fixture(scope="module")
def zoo(server: SSHServer) -> Iterator[tuple[SSHAsyncJobHook, str]]:
    """One job in every state (dash login shell), plus entries `jobs` must not list."""
    user = "asyncdash"
    async_dir = new_async_dir(user)
    hook = SSHAsyncJobHook(DASH, async_dir=async_dir)
    hook.launch("ok", "echo hello; echo oops >&2")
    hook.launch("bad", "echo partial; exit 3")
    hook.launch("sig", "kill -s KILL $$")
    hook.launch("tout", "sleep 4", timeout=1, grace=1)
    hook.launch("canc", "sleep 4")
    hook.launch("lost", "sleep 60")
    hook.launch("run", "sleep 120")
    hook.cancel(hook.job_dir("canc"), grace=1)
    info = job_json(user, async_dir, "lost")
    run_as(user, f"kill -s KILL {info['supervisor_pid']}; kill -s KILL -- -{info['pid']}")
    path = async_dir.replace("~", "$HOME", 1)
    run_as(user, f"mkdir -p '{path}/.archive/old/1' '{path}/bad name' && : >'{path}/.incoming.42' && : >'{path}/notes'")
    wait_for_states(hook, ZOO_STATES)
    yield hook, async_dir
    remove_async_dir(user, async_dir)


# --- jobs --------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_jobs_lists_every_state_with_age_pid_and_exit(zoo, capsysbinary) -> None:
    hook, async_dir = zoo
    code, out, err = run_cli(capsysbinary, "jobs", DASH, "--async-dir", async_dir)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["JOB", "STATE", "AGE", "ENDED", "PID", "EXIT", "REASON"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(ZOO_STATES)  # not .archive, .incoming.*, 'bad name' or the plain file
    for job_id, state in ZOO_STATES.items():
        assert rows[job_id][1] == state
        assert rows[job_id][4] == str(job_json("asyncdash", async_dir, job_id)["pid"])
    assert rows["ok"][5] == "0"
    assert rows["bad"][5] == "3"
    assert rows["sig"][5] == "SIGKILL"
    assert rows["run"][3] == "-" and rows["run"][5] == "-"

    code, out, _ = run_cli(capsysbinary, "jobs", DASH, "--async-dir", async_dir, "--json")
    data = json.loads(out)
    assert code == 0
    assert data["async_dir"].startswith("/home/asyncdash/cli-test-")
    by_id = {j["job_id"]: j for j in data["jobs"]}
    assert {j: r["state"] for j, r in by_id.items()} == ZOO_STATES
    assert by_id["bad"]["exit_code"] == 3 and by_id["bad"]["signal"] is None
    assert by_id["sig"]["signal"] == 9 and by_id["sig"]["signal_name"] == "SIGKILL"
    assert by_id["run"]["end_time"] is None and 0 <= by_id["run"]["age"] < 600
    assert by_id["ok"]["stdout_size"] == len(b"hello\n") and by_id["ok"]["stderr_size"] == len(b"oops\n")
    starts = [j["start_time"] for j in data["jobs"]]
    assert starts == sorted(starts)

    code, out, _ = run_cli(
        capsysbinary, "jobs", DASH, "--async-dir", async_dir, "--state", "failed", "--state", "lost", "--json"
    )
    assert sorted(j["job_id"] for j in json.loads(out)["jobs"]) == ["bad", "lost"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("user", sorted(USERS))
def test_jobs_works_under_every_login_shell(server, capsysbinary, user: str) -> None:
    async_dir = new_async_dir(user)
    hook = SSHAsyncJobHook(f"cli_{user}", async_dir=async_dir)
    try:
        hook.launch("first", "echo one")
        hook.launch("second.try-2", "exit 7")
        wait_for_states(hook, {"first": "succeeded", "second.try-2": "failed"})
        code, out, err = run_cli(capsysbinary, "jobs", f"cli_{user}", "--async-dir", async_dir, "--json")
        assert code == 0, err
        states = {j["job_id"]: (j["state"], j["exit_code"]) for j in json.loads(out)["jobs"]}
        assert states == {"first": ("succeeded", 0), "second.try-2": ("failed", 7)}
    finally:
        remove_async_dir(user, async_dir)


@pytest.mark.timeout(60)
def test_jobs_on_a_missing_or_empty_async_dir(server, capsysbinary) -> None:
    code, out, _ = run_cli(capsysbinary, "jobs", DASH, "--async-dir", "~/cli-test-never-created")
    assert code == 0
    assert out.startswith("no jobs in /home/asyncdash/cli-test-never-created (does not exist) on asyncdash@")
    code, out, _ = run_cli(capsysbinary, "jobs", DASH, "--async-dir", "~/cli-test-never-created", "--json")
    assert json.loads(out)["jobs"] == []
    name = f"cli-test-file-{uuid.uuid4().hex[:8]}"
    run_as("asyncdash", f": >$HOME/{name}")
    try:
        code, out, err = run_cli(capsysbinary, "jobs", DASH, "--async-dir", f"~/{name}")
        assert code == 1 and out == ""
        assert_one_line_error(err, f"async_dir '/home/asyncdash/{name}' is not a directory", "asyncdash@127.0.0.1")
    finally:
        run_as("asyncdash", f"rm -f $HOME/{name}")


@pytest.mark.timeout(60)
def test_one_ssh_connection_and_one_status_call_per_listing(zoo, capsysbinary, monkeypatch) -> None:
    hook, async_dir = zoo
    opened: list[str] = []
    ran: list[str] = []
    real_open, real_run = client.open_connection, client.RemoteHost.run

    async def counting_open(options):
        opened.append(options.conn_id)
        return await real_open(options)

    async def counting_run(self, name, args, **kwargs):
        ran.append(name)
        return await real_run(self, name, args, **kwargs)

    monkeypatch.setattr(client, "open_connection", counting_open)
    monkeypatch.setattr(client.RemoteHost, "run", counting_run)
    code, out, _ = run_cli(capsysbinary, "jobs", DASH, "--async-dir", async_dir, "--json")
    assert code == 0 and len(json.loads(out)["jobs"]) == len(ZOO_STATES)
    assert opened == [DASH]
    assert ran == ["list", "status"], "every listed job's state comes from one status call"


# --- status -----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_status_exit_code_follows_the_state(zoo, capsysbinary) -> None:
    hook, async_dir = zoo
    expected = {"ok": 0, "run": 0, "bad": 4, "sig": 5, "tout": 6, "canc": 7, "lost": 8, "gone": 9}
    for job_id, want in expected.items():
        code, out, err = run_cli(capsysbinary, "status", DASH, job_id, "--async-dir", async_dir)
        assert code == want, (job_id, out, err)
        assert f"job:      {job_id}" in out
    code, out, _ = run_cli(capsysbinary, "status", DASH, "bad", "--async-dir", async_dir)
    assert "state:    failed (exited with code 3)" in out
    assert "exit:     3" in out
    assert f"dir:      /home/asyncdash/{async_dir[2:]}/bad" in out
    code, out, _ = run_cli(capsysbinary, "status", DASH, "tout", "--async-dir", async_dir, "--json")
    rec = json.loads(out)
    assert code == 6 and rec["state"] == "timed_out" and rec["signal"] == 15 and rec["duration"] >= 1


@pytest.mark.timeout(60)
def test_status_json_is_the_xcom_result_without_the_output(zoo, capsysbinary) -> None:
    hook, async_dir = zoo
    d = hook.job_dir("tout")
    status = hook.status([d])[d][0]
    ref = JobRef(DASH, "tout", f"/home/asyncdash/{async_dir[2:]}/tout", hook.get_options().address)
    result = hook.run_sync(lambda h: hook.afinished_result(ref, status, host=h))  # what XCom gets
    code, out, _ = run_cli(capsysbinary, "status", DASH, "tout", "--async-dir", async_dir, "--json")
    rec = json.loads(out)
    assert code == 6
    assert {k: rec[k] for k in result if k not in OUTPUT_KEYS} == {
        k: v for k, v in result.items() if k not in OUTPUT_KEYS
    }
    assert rec["limit"] == "job_timeout" and rec["host"] == "asyncdash@127.0.0.1:" + str(hook.get_options().port)


@pytest.mark.timeout(60)
def test_status_of_a_missing_job_names_host_job_and_what_to_do(zoo, capsysbinary) -> None:
    _, async_dir = zoo
    code, out, err = run_cli(capsysbinary, "status", DASH, "nope", "--async-dir", async_dir)
    assert code == 9
    assert f"state:    missing (no job directory /home/asyncdash/{async_dir[2:]}/nope)" in out
    assert f"dir:      /home/asyncdash/{async_dir[2:]}/nope" in out
    assert_one_line_error(err, "job 'nope'", "asyncdash@127.0.0.1", f"airflow-ssh-async jobs {DASH}")


# --- logs -----------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_logs_is_byte_exact_across_chunks(server, capsysbinary) -> None:
    user, async_dir = "asyncbash", new_async_dir("asyncbash")
    hook = SSHAsyncJobHook("cli_asyncbash", async_dir=async_dir)
    try:
        hook.launch("big", "head -c 2500000 /dev/urandom; printf 'é\\n' >&2")
        wait_for_states(hook, {"big": "succeeded"})
        capsysbinary.readouterr()
        assert cli.main(["logs", "cli_asyncbash", "big", "--async-dir", async_dir]) == 0
        data = capsysbinary.readouterr().out  # raw bytes: the output is random binary
        remote = run_as(user, f"sha256sum {async_dir.replace('~', '$HOME', 1)}/big/stdout").stdout.split()[0]
        assert len(data) == 2500000 and hashlib.sha256(data).hexdigest() == remote
        code, out, _ = run_cli(capsysbinary, "logs", "cli_asyncbash", "big", "--stderr", "--async-dir", async_dir)
        assert code == 0 and out == "é\n"
    finally:
        remove_async_dir(user, async_dir)


@pytest.mark.timeout(120)
def test_logs_follow_prints_while_running_and_exits_with_the_state(server) -> None:
    user, async_dir = "asyncdash", new_async_dir("asyncdash")
    hook = SSHAsyncJobHook(DASH, async_dir=async_dir)
    try:
        # The job holds until the test has seen step1 while it runs (a release file, not a
        # fixed sleep: the console script alone can take seconds to start on a busy machine).
        release = f"{async_dir.replace('~', '$HOME', 1)}/release-steps"
        hook.launch(
            "steps",
            f'echo step1; while [ ! -e "{release}" ]; do sleep 0.1; done; echo step2; echo warn >&2; exit 3',
        )
        proc = subprocess.Popen(
            [str(SCRIPT), "logs", DASH, "steps", "--follow", "--interval", "0.2", "--async-dir", async_dir],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "step1\n"
        # the first line arrived while the job was still running
        assert hook.status([hook.job_dir("steps")])[hook.job_dir("steps")][0].state.value == "running"
        assert run_as(user, f': > "{release}"').returncode == 0
        out, err = proc.communicate(timeout=60)
        assert out == "step2\n"
        assert proc.returncode == 4
        assert "job 'steps' failed (exited with code 3)" in err and "Traceback" not in err

        follow_json = run_script("logs", DASH, "steps", "--follow", "--json", "--async-dir", async_dir)
        records = [json.loads(line) for line in follow_json.stdout.splitlines()]
        assert "".join(r["data"] for r in records if "data" in r) == "step1\nstep2\n"
        assert records[-1]["final"] is True and records[-1]["state"] == "failed"
        assert follow_json.returncode == 4
    finally:
        remove_async_dir(user, async_dir)


@pytest.mark.timeout(60)
def test_logs_of_a_missing_job(zoo) -> None:
    _, async_dir = zoo
    proc = run_script("logs", DASH, "nope", "--async-dir", async_dir)
    assert proc.returncode == 9 and proc.stdout == ""
    assert_one_line_error(proc.stderr, "job 'nope'", "asyncdash@127.0.0.1", "airflow-ssh-async jobs")


# --- kill --------------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_kill_cancels_a_running_job(server, capsysbinary) -> None:
    user, async_dir = "asyncash", new_async_dir("asyncash")
    hook = SSHAsyncJobHook("cli_asyncash", async_dir=async_dir)
    try:
        hook.launch("victim", "sleep 60")  # the kill ends it; running for sure when the kill comes
        hook.launch("done", "true")
        wait_for_states(hook, {"victim": "running", "done": "succeeded"})
        code, out, err = run_cli(
            capsysbinary, "kill", "cli_asyncash", "victim", "--grace", "1", "--wait", "--async-dir", async_dir
        )
        assert code == 0, err
        assert "cancel requested" in out and "job 'victim': cancelled (cancelled on request)" in out
        code, _, _ = run_cli(capsysbinary, "status", "cli_asyncash", "victim", "--async-dir", async_dir)
        assert code == 7

        code, out, _ = run_cli(capsysbinary, "kill", "cli_asyncash", "done", "--async-dir", async_dir, "--json")
        assert code == 0 and json.loads(out)["outcome"] == "finished"

        code, _, err = run_cli(capsysbinary, "kill", "cli_asyncash", "nope", "--async-dir", async_dir)
        assert code == 9
        assert_one_line_error(err, "job 'nope'", "asyncash@127.0.0.1", "airflow-ssh-async jobs")
    finally:
        remove_async_dir(user, async_dir)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("user", sorted(USERS))
def test_kill_grace_wins_over_the_launch_grace_and_status_shows_the_cancel_pending(user, server, capsysbinary) -> None:
    """Launched with a 60 s grace, a job that ignores SIGTERM: `kill --grace
    100` leaves it running with the cancel shown; `kill --grace 1 --wait`
    ends it within seconds, not a minute."""
    conn, async_dir = f"cli_{user}", new_async_dir(user)
    hook = SSHAsyncJobHook(conn, async_dir=async_dir)
    try:
        hook.launch("stubborn", "trap '' TERM; while :; do sleep 1; done", grace=60)
        wait_for_states(hook, {"stubborn": "running"})
        code, out, err = run_cli(capsysbinary, "kill", conn, "stubborn", "--grace", "100", "--async-dir", async_dir)
        assert code == 0, err
        code, out, _ = run_cli(capsysbinary, "status", conn, "stubborn", "--async-dir", async_dir)
        assert code == 0 and "state:    running (running, cancel requested" in out, out
        code, out, _ = run_cli(capsysbinary, "jobs", conn, "--async-dir", async_dir, "--json")
        assert "cancel requested" in json.loads(out)["jobs"][0]["reason"]
        started = time.monotonic()
        code, out, err = run_cli(
            capsysbinary, "kill", conn, "stubborn", "--grace", "1", "--wait", "--async-dir", async_dir
        )
        took = time.monotonic() - started
        assert code == 0, err
        assert "job 'stubborn': cancelled (cancelled on request)" in out
        assert took < 30, f"kill --grace 1 took {took:.0f}s (the launch grace was 60 s)"
    finally:
        remove_async_dir(user, async_dir)


@pytest.mark.timeout(120)
def test_a_job_that_exits_0_after_a_kill_reads_succeeded_with_the_cancel_in_the_reason(server, capsysbinary) -> None:
    user, async_dir = "asyncdash", new_async_dir("asyncdash")
    hook = SSHAsyncJobHook(DASH, async_dir=async_dir)
    try:
        hook.launch("tidy", "trap 'echo done; exit 0' TERM\nwhile :; do sleep 1; done")
        wait_for_states(hook, {"tidy": "running"})
        code, out, err = run_cli(capsysbinary, "kill", DASH, "tidy", "--wait", "--async-dir", async_dir)
        assert code == 0, err
        assert "job 'tidy': succeeded (exited with code 0, although a cancel was requested)" in out
        code, _, _ = run_cli(capsysbinary, "status", DASH, "tidy", "--async-dir", async_dir)
        assert code == 0
    finally:
        remove_async_dir(user, async_dir)


# --- gc -------------------------------------------------------------------------------------------------


def age_result(user: str, async_dir: str, job_id: str, seconds: int) -> None:
    """Pretend a job ended SECONDS ago (rewrite end_time in its result.json)."""
    path = f"{async_dir.replace('~', '$HOME', 1)}/{job_id}/result.json"
    proc = run_as(
        user,
        f"""end=$(($(date +%s) - {seconds}))
            sed "s/\\"end_time\\": [0-9]*/\\"end_time\\": $end/" {path} >{path}.new && mv {path}.new {path}""",
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.timeout(120)
def test_gc_removes_only_old_finished_jobs(server, capsysbinary) -> None:
    user, async_dir = "asyncdash", new_async_dir("asyncdash")
    hook = SSHAsyncJobHook(DASH, async_dir=async_dir)
    week = 7 * 86400
    try:
        # Two attempts of "retried" moved aside by new attempts: an old one and a recent one.
        for command in ("exit 1", "exit 2", "true"):
            if command != "exit 1":
                hook.archive(hook.job_dir("retried"))
            hook.launch("retried", command)
            wait_for_states(hook, {"retried": "failed" if command.startswith("exit") else "succeeded"})
        hook.launch("old-ok", "true")
        hook.launch("old-bad", "exit 1")
        hook.launch("fresh", "true")
        hook.launch("busy", "sleep 60")
        wait_for_states(hook, {"old-ok": "succeeded", "old-bad": "failed", "fresh": "succeeded", "busy": "running"})
        age_result(user, async_dir, "old-ok", week + 60)
        age_result(user, async_dir, "old-bad", week + 3600)
        age_result(user, async_dir, ".archive/retried/1", week + 60)
        old = ["old-bad", "old-ok", ".archive/retried/1"]

        code, out, err = run_cli(capsysbinary, "gc", DASH, "--older-than", "7d", "--dry-run", "--async-dir", async_dir)
        assert code == 0, err
        assert sorted(re.findall(r"^would remove (\S+) \(", out, re.M)) == sorted(old)
        assert "would remove 3 job folder(s) older than 7d00h" in out
        code, out, _ = run_cli(capsysbinary, "jobs", DASH, "--async-dir", async_dir, "--json")
        assert len(json.loads(out)["jobs"]) == 5  # the dry run removed nothing

        code, out, err = run_cli(capsysbinary, "gc", DASH, "--older-than", "7d", "--async-dir", async_dir, "--json")
        assert code == 0, err
        report = json.loads(out)
        assert sorted(report["removed"]) == sorted(old) and report["skipped"] == {}
        code, out, _ = run_cli(capsysbinary, "jobs", DASH, "--async-dir", async_dir, "--json")
        assert sorted(j["job_id"] for j in json.loads(out)["jobs"]) == ["busy", "fresh", "retried"]
        archive = run_as(user, f"cd {async_dir.replace('~', '$HOME', 1)}/.archive && echo */*").stdout.split()
        assert archive == ["retried/2"], "the recent attempt is kept, the old one removed"

        # Even "older than nothing" never touches a running job.
        code, out, _ = run_cli(capsysbinary, "gc", DASH, "--older-than", "0s", "--async-dir", async_dir)
        assert code == 0 and "removed fresh (succeeded" in out and "busy" not in out
        assert "removed .archive/retried/2 (failed" in out
        gone = run_as(user, f"test -e {async_dir.replace('~', '$HOME', 1)}/.archive/retried || echo gone").stdout
        assert gone == "gone\n", "the folder of an id whose last archived attempt was removed is removed too"
        assert hook.status([hook.job_dir("busy")])[hook.job_dir("busy")][0].state.value == "running"
    finally:
        remove_async_dir(user, async_dir)


# --- connection errors -------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_connection_errors_exit_3_with_one_line(server, monkeypatch, tmp_path) -> None:
    proc = run_script("jobs", "cli_never_defined")
    assert proc.returncode == 3
    assert_one_line_error(proc.stderr, "'cli_never_defined' is not defined", "AIRFLOW_CONN_CLI_NEVER_DEFINED")

    dead = json.loads(server.conn_uri_json("asyncdash"))
    dead["port"] = free_port()  # nothing listens there
    monkeypatch.setenv("AIRFLOW_CONN_CLI_DEAD", json.dumps(dead))
    proc = run_script("status", "cli_dead", "some-job")
    assert proc.returncode == 3
    assert_one_line_error(proc.stderr, "cannot connect", f"asyncdash@127.0.0.1:{dead['port']}", "sshd listens")

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other_key = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    monkeypatch.setenv("AIRFLOW_CONN_CLI_WRONG_KEY", server.conn_uri_json("asyncdash", host_key=other_key))
    proc = run_script("jobs", "cli_wrong_key")
    assert proc.returncode == 3
    assert_one_line_error(proc.stderr, "host key not trusted", "connection 'cli_wrong_key'")


# --- damaged job files ------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_damaged_job_is_reported_not_guessed_and_hides_no_other_job(server, capsysbinary) -> None:
    user, async_dir = "asyncdash", new_async_dir("asyncdash")
    hook = SSHAsyncJobHook(DASH, async_dir=async_dir)
    try:
        hook.launch("fine", "true")
        hook.launch("broken", "true")
        wait_for_states(hook, {"fine": "succeeded", "broken": "succeeded"})
        run_as(user, f'printf \'{{"protocol": 1, "rea\' >{async_dir.replace("~", "$HOME", 1)}/broken/result.json')

        code, out, err = run_cli(capsysbinary, "jobs", DASH, "--async-dir", async_dir, "--json")
        assert code == 0, err
        by_id = {j["job_id"]: j for j in json.loads(out)["jobs"]}
        assert by_id["fine"]["state"] == "succeeded"
        assert (
            by_id["broken"]["state"] == "error" and "broken/result.json is not valid JSON" in by_id["broken"]["reason"]
        )

        code, out, err = run_cli(capsysbinary, "status", DASH, "broken", "--async-dir", async_dir)
        assert code == 1 and out == ""
        assert_one_line_error(err, "broken/result.json is not valid JSON", "job 'broken'", "asyncdash@127.0.0.1")

        # gc leaves a folder it cannot read alone, even when asked for everything.
        code, out, _ = run_cli(capsysbinary, "gc", DASH, "--older-than", "0s", "--async-dir", async_dir, "--json")
        assert code == 0 and json.loads(out)["removed"] == ["fine"]
    finally:
        remove_async_dir(user, async_dir)


# --- supervisor copies, --version, help, absolute folders, host-key ---------------------------------


@pytest.mark.timeout(120)
def test_gc_removes_supervisor_copies_of_other_versions_that_no_running_job_uses(
    server, capsysbinary, monkeypatch
) -> None:
    from airflow_ssh_async import hook_calls
    from airflow_ssh_async.job import supervisor_id

    user, async_dir = "asyncbash", new_async_dir("asyncbash")
    conn = "cli_asyncbash"
    hook = SSHAsyncJobHook(conn, async_dir=async_dir)
    base = async_dir.replace("~", "$HOME", 1)
    ours = supervisor_id(client.supervisor_program())
    try:
        hook.launch("current", "true")
        # Another version's supervisor (other content, other copy) runs a job.
        older = client.supervisor_program() + b"\n# an older provider version\n"
        monkeypatch.setattr(hook_calls, "supervisor_program", lambda: older)
        hook.launch("old-version-job", "sleep 60")
        monkeypatch.undo()
        in_use = supervisor_id(older)
        # A third version's copy that nothing runs any more.
        unused = "0123456789abcdef"
        assert (
            run_as(
                user, f"mkdir -p {base}/.supervisor/{unused} && : >{base}/.supervisor/{unused}/supervise.sh"
            ).returncode
            == 0
        )
        wait_for_states(hook, {"current": "succeeded", "old-version-job": "running"})

        code, out, err = run_cli(capsysbinary, "gc", conn, "--older-than", "7d", "--dry-run", "--async-dir", async_dir)
        assert code == 0, err
        assert f"would remove: /home/{user}/" in out and f".supervisor/{unused} (the supervisor" in out
        assert f"kept, a running job uses it: /home/{user}/" in out, out
        code, out, err = run_cli(capsysbinary, "gc", conn, "--older-than", "7d", "--async-dir", async_dir, "--json")
        assert code == 0, err
        assert json.loads(out)["supervisor_copies"] == {in_use: "in_use", unused: "removed"}
        left = run_as(user, f"cd {base}/.supervisor && echo *").stdout.split()
        assert sorted(left) == sorted([ours, in_use])

        hook.cancel(hook.job_dir("old-version-job"), grace=1)
        wait_for_states(hook, {"old-version-job": "cancelled"})
        code, out, _ = run_cli(capsysbinary, "gc", conn, "--older-than", "7d", "--async-dir", async_dir, "--json")
        assert json.loads(out)["supervisor_copies"] == {in_use: "removed"}
        assert run_as(user, f"cd {base}/.supervisor && echo *").stdout.split() == [ours]
        hook.launch("after-gc", "true")  # this version's copy was kept and still runs jobs
        wait_for_states(hook, {"after-gc": "succeeded"})
    finally:
        remove_async_dir(user, async_dir)


@pytest.mark.timeout(120)
def test_job_folders_are_absolute_paths_in_every_json_output(server, capsysbinary) -> None:
    user, async_dir = "asyncash", new_async_dir("asyncash")
    conn = "cli_asyncash"
    hook = SSHAsyncJobHook(conn, async_dir=async_dir)
    absolute = f"/home/{user}/{async_dir[2:]}/"
    try:
        hook.launch("done", "echo hi")
        hook.launch("victim", "sleep 60")
        wait_for_states(hook, {"done": "succeeded", "victim": "running"})
        dirs = []
        code, out, _ = run_cli(capsysbinary, "jobs", conn, "--async-dir", async_dir, "--json")
        dirs += [j["job_dir"] for j in json.loads(out)["jobs"]]
        code, out, _ = run_cli(capsysbinary, "status", conn, "done", "--async-dir", async_dir, "--json")
        dirs.append(json.loads(out)["job_dir"])
        code, out, _ = run_cli(capsysbinary, "logs", conn, "done", "-f", "--async-dir", async_dir, "--json")
        dirs.append(json.loads(out.splitlines()[-1])["job_dir"])
        code, out, _ = run_cli(
            capsysbinary, "kill", conn, "victim", "--grace", "1", "--wait", "--async-dir", async_dir, "--json"
        )
        dirs.append(json.loads(out)["job_dir"])
        code, out, _ = run_cli(
            capsysbinary, "gc", conn, "--older-than", "0s", "--dry-run", "--async-dir", async_dir, "--json"
        )
        dirs += [c["job_dir"] for c in json.loads(out)["candidates"]]
        assert len(dirs) == 7 and all(d.startswith(absolute) for d in dirs), dirs
    finally:
        remove_async_dir(user, async_dir)


def plain_connection(server: SSHServer, conn: str, monkeypatch: pytest.MonkeyPatch, **extra: object) -> None:
    """A connection with no host_key extra: the host is trusted only through known_hosts."""
    body = json.loads(server.conn_uri_json("asyncdash", **extra))
    body["extra"].pop("host_key", None) if "host_key" not in extra else None
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn.upper()}", json.dumps(body))


@pytest.mark.timeout(120)
def test_host_key_prints_the_key_to_pin_and_trusts_nothing(server, capsysbinary, tmp_path, monkeypatch) -> None:
    import asyncssh

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/known_hosts: a first contact
    plain_connection(server, "cli_first", monkeypatch)
    plain_connection(server, "cli_first_nokey", monkeypatch, key_file="/nonexistent/key")
    fingerprint = asyncssh.import_public_key(server.host_key_line).get_fingerprint()
    line = f"[127.0.0.1]:{server.port} {server.host_key_line}"

    code, out, err = run_cli(capsysbinary, "host-key", "cli_first_nokey")  # it never authenticates
    assert code == 10, err
    assert f"key:         ssh-ed25519 {fingerprint}" in out
    assert f"host_key:    {server.host_key_line}\n" in out and f"known_hosts: {line}\n" in out
    assert "nothing trusts this key yet, and this command wrote nothing" in err
    assert "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub" in err
    assert not (tmp_path / ".ssh").exists()
    code, _, err = run_cli(capsysbinary, "status", "cli_first", "x")
    assert code == 3 and "host key unknown" in err and "airflow-ssh-async host-key cli_first" in err

    # What it printed is what to paste: as the host_key extra, or into known_hosts.
    code, out, _ = run_cli(capsysbinary, "host-key", "cli_first", "--json")
    printed = json.loads(out)
    assert code == 10 and printed["trusted_by"] is None and printed["fingerprint"] == fingerprint
    plain_connection(server, "cli_pinned", monkeypatch, host_key=printed["host_key"])
    code, _, err = run_cli(capsysbinary, "status", "cli_pinned", "x")
    assert code == 9, err  # connected: no such job
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(printed["known_hosts_line"] + "\n")
    plain_connection(server, "cli_known", monkeypatch)
    code, _, err = run_cli(capsysbinary, "status", "cli_known", "x")
    assert code == 9, err
    code, out, err = run_cli(capsysbinary, "host-key", "cli_known")
    assert code == 10 and "~/.ssh/known_hosts of the user running Airflow already trusts this key" in err


@pytest.mark.timeout(60)
def test_host_key_of_an_unreachable_host_is_a_connection_error(capsysbinary, monkeypatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLI_NOWHERE",
        json.dumps({"conn_type": "ssh", "host": "127.0.0.1", "port": free_port(), "login": "x"}),
    )
    code, out, err = run_cli(capsysbinary, "host-key", "cli_nowhere")
    assert code == 3 and out == ""
    assert_one_line_error(err, "cannot connect", "connection 'cli_nowhere'")
