"""Reading Ansible's async result files (pure), and ansible_status.sh under each shell.

The file contents below are what ansible-core 2.19 wrote in real runs
(tests/integration/test_ansible.py runs them for real).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from airflow_ssh_async.ansible import (
    AnsibleFacts,
    ansible_output,
    ansible_request,
    classify_ansible,
    load_ansible_result,
    parse_ansible_status,
    parse_delta,
)
from airflow_ssh_async.client import program
from airflow_ssh_async.job import JobState, ProtocolError

JID = "j125688791004.32741"
RUNNING = b'{"started": true, "finished": false, "ansible_job_id": "j125688791004.32741"}'
SUCCEEDED = (
    b'{"changed": true, "stdout": "hi", "stderr": "err", "rc": 0, "cmd": ["sh", "-c", "echo hi"], '
    b'"start": "2026-11-27 01:04:05.897838", "end": "2026-11-27 01:04:08.906633", "delta": "0:00:03.008795", "msg": ""}'
)
FAILED = (
    b'{"changed": true, "stdout": "bad", "stderr": "", "rc": 3, "delta": "0:00:00.003374", '
    b'"failed": true, "msg": "non-zero return code"}'
)
KILLED = b'{"stdout": "", "stderr": "", "rc": -9, "failed": true, "msg": "non-zero return code"}'
TIMED_OUT = b'{"msg": "Timeout exceeded", "failed": true, "child_pid": 807}'
NOT_FOUND = (
    b'{"rc": 2, "stdout": "", "stderr": "", "cmd": "/nonexistent/cmd", "failed": true, '
    b'"msg": "Error executing command."}'
)
PATH = f"/home/u/.ansible_async/{JID}"


def facts(data: bytes | None, alive: bool | None = False, **kw: object) -> AnsibleFacts:
    return AnsibleFacts(JID, PATH, exists=data is not None, data=data, mtime=1000, wrapper_alive=alive, **kw)


@pytest.mark.parametrize(
    ("data", "state", "code", "sig"),
    [
        (SUCCEEDED, JobState.SUCCEEDED, 0, None),
        (FAILED, JobState.FAILED, 3, None),
        (KILLED, JobState.KILLED, None, 9),
        (TIMED_OUT, JobState.TIMED_OUT, None, 9),
        (NOT_FOUND, JobState.FAILED, 2, None),
        (b'{"changed": false, "ping": "pong"}', JobState.SUCCEEDED, None, None),
        (b'{"failed": true, "msg": "module crashed"}', JobState.FAILED, None, None),
    ],
)
def test_finished_files(data, state, code, sig) -> None:
    status = classify_ansible(facts(data))
    assert (status.state, status.exit_code, status.signal, status.end_time) == (state, code, sig, 1000)


def test_times_and_details() -> None:
    assert classify_ansible(facts(SUCCEEDED)).start_time == 997  # mtime less delta
    timed_out = classify_ansible(facts(TIMED_OUT), time_limit=5)
    assert timed_out.pid == 807 and "time limit of 5 s" in timed_out.reason
    assert "non-zero return code" in classify_ansible(facts(FAILED)).reason
    assert ansible_output(load_ansible_result(facts(SUCCEEDED))) == (b"hi", b"err")
    assert ansible_output({}) == (b"", b"")
    assert parse_delta("1 day, 2:03:04.5") == 86400 + 7384.5 and parse_delta(None) is None


def test_running_needs_a_live_wrapper() -> None:
    alive = classify_ansible(facts(RUNNING, alive=True))
    assert alive.state is JobState.RUNNING and alive.start_time == 1000
    lost = classify_ansible(facts(RUNNING, alive=False))
    assert lost.state is JobState.LOST and "no async_wrapper process" in lost.reason
    unknown = classify_ansible(facts(RUNNING, alive=None, liveness_unknown="this host has no /proc"))
    assert unknown.state is JobState.RUNNING and "liveness unknown: this host has no /proc" in unknown.reason


def test_missing_file() -> None:
    assert classify_ansible(facts(None)).state is JobState.MISSING
    assert classify_ansible(facts(None, alive=True)).state is JobState.STARTING


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (RUNNING[: len(RUNNING) // 2], "half-written"),
        (SUCCEEDED[:-1], "half-written"),
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"[1, 2]", "not a JSON object"),
        (RUNNING.replace(b"32741", b"1"), "belongs to job"),
    ],
)
def test_damaged_files_are_errors_naming_the_file_never_running(data, words) -> None:
    for alive in (True, False, None):
        with pytest.raises(ProtocolError, match=words) as err:
            classify_ansible(facts(data, alive=alive))
        assert PATH in str(err.value)


def test_unreadable_file() -> None:
    with pytest.raises(ProtocolError, match="cannot read"):
        classify_ansible(AnsibleFacts(JID, PATH, exists=True, unreadable=True))


def test_request_keeps_the_default_dir_open_to_the_hosts_env() -> None:
    assert ansible_request("~/.ansible_async", JID) == ("", JID)
    assert ansible_request("/srv/async", JID) == ("/srv/async", JID)
    assert ansible_request("~/.ansible_async", "ignored", f"/x/y/{JID}") == ("/x/y", JID)
    with pytest.raises(ValueError):
        ansible_request("", "../etc/passwd")


def test_trigger_round_trips_with_the_ansible_kwargs() -> None:
    from airflow_ssh_async.triggers import SSHAsyncJobTrigger

    trigger = SSHAsyncJobTrigger("c", JID, source="ansible", ansible_async_dir="/srv/async", poll_interval=2.0)
    path, kwargs = trigger.serialize()
    assert kwargs["source"] == "ansible" and kwargs["ansible_async_dir"] == "/srv/async"
    assert SSHAsyncJobTrigger(**kwargs).serialize() == (path, kwargs)
    assert SSHAsyncJobTrigger("c", "j").serialize()[1]["source"] == "airflow-ssh-async"
    with pytest.raises(ValueError, match="source"):
        SSHAsyncJobTrigger("c", "j", source="salt")


def test_sensor_refuses_kill_on_cancel_for_ansible_jobs() -> None:
    from airflow_ssh_async.sensors import SSHAsyncJobSensor

    with pytest.raises(ValueError, match="Ansible has no way to cancel"):
        SSHAsyncJobSensor(task_id="s", ssh_conn_id="c", job_id=JID, source="ansible", kill_on_cancel=True)
    sensor = SSHAsyncJobSensor(task_id="s2", ssh_conn_id="c", job_id=JID, source="ansible", start_from_trigger=True)
    assert sensor.start_trigger_args.trigger_kwargs["source"] == "ansible"


# --- ansible_status.sh, run locally under each shell ---------------------------------------

SHELLS = {"dash": ["dash"], "bash": ["bash", "--posix"], "busybox": ["busybox", "sh"]}


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_ansible_status_script(shell: str, tmp_path: Path) -> None:
    argv = SHELLS[shell]
    assert shutil.which(argv[0]), f"{argv[0]} must be installed"
    adir = tmp_path / ".ansible_async"
    adir.mkdir()
    (adir / "j1.100").write_bytes(RUNNING.replace(JID.encode(), b"j1.100"))
    (adir / "j2.200").write_bytes(RUNNING.replace(JID.encode(), b"j2.200"))
    (adir / "j3.300").write_bytes(SUCCEEDED)
    # A stand-in for async_wrapper: its argv names the wrapper, the jid prefix, the limit.
    fake = subprocess.Popen(["sh", "-c", "sleep 30; :", f"{tmp_path}/tmp/async_wrapper.py", "j1", "45", "mod", "_"])
    try:
        time.sleep(0.2)
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
        args = ["", "j1.100", "~/.ansible_async", "j2.200", str(adir), "j3.300", "", "j4.400"]
        out = subprocess.run(
            [*argv, "-c", program("ansible_status"), "x", *args], capture_output=True, env=env, timeout=30
        )
        assert out.returncode == 0, out.stderr
        j1, j2, j3, j4 = parse_ansible_status(out.stdout).jobs
        assert (j1.path, j1.wrapper_alive, j1.time_limit) == (str(adir / "j1.100"), True, 45)
        assert classify_ansible(j1).state is JobState.RUNNING
        assert classify_ansible(j2).state is JobState.LOST  # its wrapper is not running
        assert j3.data == SUCCEEDED and classify_ansible(j3).state is JobState.SUCCEEDED
        assert abs(j3.mtime - time.time()) < 60
        assert classify_ansible(j4).state is JobState.MISSING
        # The host's own ANSIBLE_ASYNC_DIR is used for the default dir only.
        other = tmp_path / "elsewhere"
        other.mkdir()
        (other / "j3.300").write_bytes(FAILED)
        env["ANSIBLE_ASYNC_DIR"] = str(other)
        out = subprocess.run(
            [*argv, "-c", program("ansible_status"), "x", "", "j3.300", "~/.ansible_async", "j3.300"],
            capture_output=True, env=env, timeout=30,
        )  # fmt: skip
        a, b = parse_ansible_status(out.stdout).jobs
        assert classify_ansible(a).state is JobState.FAILED and classify_ansible(b).state is JobState.SUCCEEDED
    finally:
        fake.kill()
        fake.wait()
