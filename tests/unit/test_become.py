"""become_user's pure parts: the elevated command, sudo's refusals, survivors in a result."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from airflow_ssh_async.become import BOOTSTRAP, BecomeError, become_error, elevate, validate_become
from airflow_ssh_async.client import remote_command
from airflow_ssh_async.connection import SSHOptions, options_from_connection
from airflow_ssh_async.job import JobFacts, JobState, classify


def test_validate_become_defaults_and_refusals() -> None:
    assert validate_become(None, None) == (None, "sudo")
    assert validate_become("", "") == (None, "sudo")
    assert validate_become("postgres", "DOAS") == ("postgres", "doas")
    with pytest.raises(ValueError, match="become_method must be one of"):
        validate_become("postgres", "su")
    with pytest.raises(ValueError, match="is not a user name"):
        validate_become("post gres; rm -rf /", None)


def test_elevate_wraps_the_script_command_once() -> None:
    argv = ["sh", "-c", "PROGRAM", "airflow-ssh-async-status", "a b"]
    assert elevate("sudo", "pg", argv) == [
        "sudo", "-n", "-H", "-u", "pg", "--", "/bin/sh", "-c", BOOTSTRAP, "PROGRAM", "airflow-ssh-async-status", "a b"
    ]  # fmt: skip
    assert elevate("doas", "pg", argv)[:5] == ["doas", "-n", "-u", "pg", "/bin/sh"]


def test_remote_command_elevates_only_with_a_become_user() -> None:
    plain = SSHOptions("c", "h")
    assert shlex.split(remote_command("status", ["x"], plain))[:2] == ["sh", "-c"]
    become = SSHOptions("c", "h", become_user="pg")
    words = shlex.split(remote_command("status", ["x"], become))
    assert words[:7] == ["sudo", "-n", "-H", "-u", "pg", "--", "/bin/sh"]
    assert words[-2:] == ["airflow-ssh-async-status", "x"]
    assert SSHOptions("c", "h").pool_key != become.pool_key


def test_the_bootstrap_starts_the_script_with_its_name_args_and_a_clean_environment() -> None:
    script = 'printf "%s|" "$0" "$@"; env | sort | tr "\\n" " "'
    out = subprocess.run(
        ["/bin/sh", "-c", BOOTSTRAP, script, "name", "a b", ""],
        capture_output=True, text=True, env={"HOME": "/h", "PATH": "/usr/bin:/bin", "LEAK": "x", "USER": "u"},
        check=True,
    ).stdout  # fmt: skip
    assert out.startswith("name|a b||")
    assert "LEAK" not in out and "HOME=/h" in out and "PATH=/usr/bin:/bin" in out


@pytest.mark.parametrize(
    ("stderr", "words"),
    [
        ("sudo: a password is required", ["a password", "`deploy ALL=(pg) NOPASSWD: /bin/sh`"]),
        ("sudo: sorry, you must have a tty to run sudo", ["requiretty", "Defaults>pg !requiretty"]),
        ("sudo: unknown user pg\nsudo: error initializing audit plugin", ["'pg' does not exist"]),
    ],
)
def test_become_error_names_user_host_and_the_missing_line(stderr: str, words: list[str]) -> None:
    error = become_error("sudo", "deploy", "pg", 1, stderr, host="deploy@db:22")
    assert isinstance(error, BecomeError) and error.permanent
    for word in [*words, "cannot run as 'pg'", "deploy@db:22"]:
        assert word in str(error)


def test_become_error_leaves_our_own_errors_alone() -> None:
    assert become_error("sudo", "d", "pg", 1, "airflow-ssh-async: error: x", host="h") is None
    assert become_error("sudo", "d", "pg", 68, "sudo: looks like sudo", host="h") is None
    missing = become_error("sudo", "d", "pg", 127, "sh: 1: sudo: not found", host="h")
    assert missing is not None and "no sudo command" in str(missing)
    doas = become_error("doas", "d", "pg", 1, "doas: Authorization required", host="h")
    assert doas is not None and "permit nopass d as pg cmd /bin/sh" in str(doas)


class _Conn:
    conn_id, host, port, login, password = "c", "h", 22, "deploy", None

    def __init__(self, extra: dict) -> None:
        self.extra_dejson = extra
        self.extra = "x"


def test_connection_extras_set_the_default_become() -> None:
    options = options_from_connection(_Conn({"become_user": "pg", "become_method": "doas"}))
    assert (options.become_user, options.become_method) == ("pg", "doas")
    assert "as 'pg' via doas" in options.label
    with pytest.raises(ValueError, match="become_method"):
        options_from_connection(_Conn({"become_user": "pg", "become_method": "runas"}))


def test_survivors_are_in_the_state_reason_and_result() -> None:
    job = {"pid": 10, "start_time": 1, "timeout": 2, "boot_id": "b"}
    result = {
        "reason": "timed_out", "exit_code": None, "signal": 15, "limit": "job_timeout", "end_time": 3,
        "group_left": True, "survivors": [{"pid": 12, "uid": 1008, "user": "other"}],
    }  # fmt: skip
    facts = JobFacts(job="j", exists=True, job_json=job, result_json=result)
    status = classify(facts, "b", 4)
    assert status.state is JobState.TIMED_OUT
    assert status.survivors == ({"pid": 12, "uid": 1008, "user": "other"},)
    assert "NOT everything ended" in status.reason and "pid 12 (user other)" in status.reason
    plain = classify(JobFacts(job="j", exists=True, job_json=job, result_json={**result, "survivors": []}), "b", 4)
    assert "NOT everything ended" in plain.reason and plain.survivors == ()
