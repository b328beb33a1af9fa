"""Jump hosts and host keys: through a bastion (a second sshd) a job launches,
streams and cancels exactly like a direct one; host keys follow SSHHook's rules.

Both sshds listen on 127.0.0.1, so "reachable only through the bastion"
cannot be enforced by the network; the tests prove the path instead: the
bastion has an SSH session open while the job is watched, and a bastion that
is down (or has the wrong host key) makes the connection fail, naming it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from airflow_ssh_async import SSHAsyncJobTrigger
from airflow_ssh_async.errors import HostKeyError, SSHConnectError
from airflow_ssh_async.hooks import SSHAsyncJobHook
from airflow_ssh_async.job import JobRef
from airflow_ssh_async.watch import watch_job
from tests.harness.logs import ListLog
from tests.harness.sshd import SSHServer, free_port, start_server

pytestmark = pytest.mark.timeout(180)

USER = "asyncdash"
ROUTES = ("direct", "jump_host", "proxy_command")


@pytest.fixture(scope="module")
def bastion(sshd: SSHServer, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A second sshd; the target (the session sshd) is reached through it."""
    server = start_server(tmp_path_factory.mktemp("bastion"))
    jump = f"{USER}@127.0.0.1:{server.port}"
    sshd.set_connection(
        "test_via_jump",
        USER,
        jump_host=jump,
        jump_host_key_file=str(server.client_key),
        jump_host_host_key=server.host_key_line,
    )
    proxy = (
        f"ssh -W %h:%p -p {server.port} -i {server.client_key} -o IdentitiesOnly=yes -o BatchMode=yes "
        f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={server.workdir / 'known_hosts'} {USER}@127.0.0.1"
    )
    sshd.set_connection("test_via_proxy", USER, proxy_command=proxy)
    try:
        yield server
    finally:
        server.stop()


def conn_id(route: str) -> str:
    return {"direct": f"test_{USER}", "jump_host": "test_via_jump", "proxy_command": "test_via_proxy"}[route]


def bastion_sessions(server: SSHServer) -> list[str]:
    """The per-connection sshd processes the bastion runs now."""
    assert server.process is not None
    out = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True).stdout
    return out.split()


@pytest.mark.parametrize("route", ROUTES)
def test_launch_stream_and_cancel_like_a_direct_connection(route, sshd, bastion, job_id) -> None:
    conn = conn_id(route)
    hook = SSHAsyncJobHook(conn)
    launched = hook.launch(job_id, "echo start; sleep 1; echo middle; sleep 100")
    log = ListLog()

    async def scenario() -> tuple[dict[str, Any], list[str]]:
        watch = asyncio.create_task(
            watch_job(SSHAsyncJobHook(conn), JobRef(conn, job_id, launched.job_dir), log=log, poll_interval=0.3)
        )
        for _ in range(100):
            if "middle" in log.lines:
                break
            await asyncio.sleep(0.1)
        sessions = bastion_sessions(bastion)
        trigger = SSHAsyncJobTrigger(conn, job_id, job_dir=launched.job_dir, grace=1)
        await trigger.on_kill()  # what a user's mark-failed does, over the same route
        return await asyncio.wait_for(watch, 30), sessions

    event, sessions = asyncio.run(scenario())
    result = event["result"]
    assert event["status"] == "finished", event
    assert (result["state"], result["stdout_tail"], log.lines[:2]) == (
        "cancelled",
        "start\nmiddle\n",
        ["start", "middle"],
    )
    assert result["host"] == f"{USER}@127.0.0.1:{sshd.port}" and result["job_dir"] == launched.job_dir
    if route != "direct":
        assert sessions, "the bastion must carry the connection while the job is watched"


def test_operator_dag_through_the_jump_host(sshd, bastion, dag_bag, capfd) -> None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dag_run = dag_bag.dags["ssh_async_via_jump_host"].test()
    [ti] = [t for t in dag_run.get_task_instances() if t.task_id == "job"]
    assert ti.state == "success"
    out = capfd.readouterr().out
    assert "Pausing task as DEFERRED" in out and "through the bastion 2" in out
    with create_session() as session:
        [row] = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids="job", key="return_value")
        ).all()
    assert XComModel.deserialize_value(row)["stdout_tail"] == "through the bastion 1\nthrough the bastion 2\n"


def test_a_bastion_that_is_down_fails_naming_the_jump_host(sshd, bastion) -> None:
    closed = free_port()
    sshd.set_connection(
        "test_jump_down", USER, jump_host=f"{USER}@127.0.0.1:{closed}", jump_host_key_file=str(bastion.client_key)
    )
    with pytest.raises(SSHConnectError, match=rf"jump host {USER}@127.0.0.1:{closed} of connection 'test_jump_down'"):
        SSHAsyncJobHook("test_jump_down").status(["~/.airflow_async/x"])


def test_a_wrong_jump_host_key_is_refused_naming_its_source(sshd, bastion) -> None:
    sshd.set_connection(
        "test_jump_badkey",
        USER,
        jump_host=f"{USER}@127.0.0.1:{bastion.port}",
        jump_host_key_file=str(bastion.client_key),
        jump_host_host_key=sshd.host_key_line,  # the target's key, not the bastion's
    )
    with pytest.raises(HostKeyError) as err:
        SSHAsyncJobHook("test_jump_badkey").status(["~/.airflow_async/x"])
    message = str(err.value)
    assert "jump_host_host_key extra of connection 'test_jump_badkey'" in message
    assert f"jump host {USER}@127.0.0.1:{bastion.port}" in message
    assert fingerprint(bastion.host_key_line) in message  # what the bastion presented
    assert fingerprint(sshd.host_key_line) in message  # what we expected


# --- host keys -------------------------------------------------------------------------


def fingerprint(key_line: str) -> str:
    import asyncssh

    return asyncssh.import_public_key(key_line).get_fingerprint()


def test_a_changed_host_key_is_refused_saying_which_key_and_from_where(sshd, bastion) -> None:
    sshd.set_connection("test_changed_key", USER, host_key=bastion.host_key_line)
    with pytest.raises(HostKeyError) as err:
        SSHAsyncJobHook("test_changed_key").status(["~/.airflow_async/x"])
    message = str(err.value)
    assert "host_key extra of connection 'test_changed_key'" in message
    assert f"presented the ssh-ed25519 key {fingerprint(sshd.host_key_line)}" in message
    assert f"which has ssh-ed25519 {fingerprint(bastion.host_key_line)}" in message
    assert f"127.0.0.1:{sshd.port}" in message


def set_plain_connection(server: SSHServer, conn: str, **extra: object) -> None:
    """A connection without the harness's host_key extra."""
    os.environ[f"AIRFLOW_CONN_{conn.upper()}"] = json.dumps(
        {
            "conn_type": "ssh",
            "host": "127.0.0.1",
            "port": server.port,
            "login": USER,
            "extra": {"key_file": str(server.client_key), "conn_timeout": 10, "look_for_keys": "false", **extra},
        }
    )


# (extras, ~/.ssh/known_hosts of the Airflow user: "right", "wrong" or None, accepted?)
MATRIX = [
    ({"host_key": "right"}, None, True),
    ({"host_key": "wrong"}, None, False),
    ({"no_host_key_check": "true"}, None, True),
    ({"no_host_key_check": "true"}, "right", True),
    ({"no_host_key_check": "true"}, "wrong", False),  # paramiko: BadHostKeyException
    ({"no_host_key_check": "false"}, None, False),
    ({"no_host_key_check": "false"}, "right", True),
    ({"no_host_key_check": "false"}, "wrong", False),
    ({}, "right", True),
    ({"allow_host_key_change": "true"}, "wrong", True),
]


@pytest.mark.parametrize(("extras", "known", "accepted"), MATRIX, ids=lambda v: str(v))
def test_host_key_rules_agree_with_sshhook(extras, known, accepted, sshd, bastion, tmp_path, monkeypatch) -> None:
    import paramiko
    from airflow.providers.ssh.hooks.ssh import SSHHook

    keys = {"right": sshd.host_key_line, "wrong": bastion.host_key_line}
    home_dir = tmp_path / "home"
    (home_dir / ".ssh").mkdir(parents=True)
    if known:
        (home_dir / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {keys[known]}\n")
    monkeypatch.setenv("HOME", str(home_dir))
    extra = {k: keys.get(v, v) if k == "host_key" else v for k, v in extras.items()}
    conn = f"test_matrix_{abs(hash((json.dumps(extras), known))) % 10**8}"
    set_plain_connection(sshd, conn, **extra)

    their_error = ""
    try:
        client = SSHHook(ssh_conn_id=conn, conn_retry_attempts=1).get_conn()
        client.close()
        theirs = True
    except paramiko.SSHException as exc:  # BadHostKeyException, "not found in known_hosts"
        theirs = False
        their_error = repr(exc)
    try:
        SSHAsyncJobHook(conn).status(["~/.airflow_async/x"])
        ours = True
    except HostKeyError:
        ours = False
    assert (theirs, ours) == (accepted, accepted), their_error
    # Neither side wrote the accepted key anywhere.
    assert not known or (home_dir / ".ssh" / "known_hosts").read_text().count("\n") == 1
    shutil.rmtree(home_dir)


@pytest.mark.parametrize("pin", ["right", "wrong"])
def test_a_pinned_host_key_wins_over_known_hosts_where_sshhook_lets_known_hosts_win(
    pin, sshd, bastion, tmp_path, monkeypatch
) -> None:
    """The one deliberate difference from SSHHook, when both name the host.

    paramiko consults ~/.ssh/known_hosts (its "system" host keys) before the
    key SSHHook adds from the host_key extra, so for SSHHook known_hosts wins
    over the connection's pinned key, either way. We check the pinned key:
    a pin that known_hosts could override would not be a pin.
    """
    import paramiko
    from airflow.providers.ssh.hooks.ssh import SSHHook

    right, wrong = sshd.host_key_line, bastion.host_key_line
    pinned, known = (right, wrong) if pin == "right" else (wrong, right)
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {known}\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    conn = f"test_pin_{pin}"
    set_plain_connection(sshd, conn, host_key=pinned)
    if pin == "right":
        with pytest.raises(paramiko.BadHostKeyException):
            SSHHook(ssh_conn_id=conn, conn_retry_attempts=1).get_conn()
        SSHAsyncJobHook(conn).status(["~/.airflow_async/x"])  # accepted: the pin is right
    else:
        SSHHook(ssh_conn_id=conn, conn_retry_attempts=1).get_conn().close()  # accepted by known_hosts
        with pytest.raises(HostKeyError, match=f"host_key extra of connection '{conn}'"):
            SSHAsyncJobHook(conn).status(["~/.airflow_async/x"])


def test_no_host_key_check_connects_to_an_unknown_host(sshd, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/known_hosts at all
    set_plain_connection(sshd, "test_nocheck", no_host_key_check="true")
    status, facts = SSHAsyncJobHook("test_nocheck").status(["~/.airflow_async/x"])["~/.airflow_async/x"]
    assert status.state.value == "missing" and facts.path.startswith("/home/")


# --- host key forms, first contact, key files -------------------------------------------


def key_forms(sshd: SSHServer) -> dict[str, str]:
    kind, blob = sshd.host_key_line.split()
    return {
        "type_base64": f"{kind} {blob}",
        "type_base64_comment": f"{kind} {blob} root@db1",
        "bare_base64": blob,
        "known_hosts_line": f"[127.0.0.1]:{sshd.port} {kind} {blob}",
        "keyscan_line_other_name": f"db1.example.com,10.0.0.5 {kind} {blob}",
    }


@pytest.mark.parametrize(
    "form", ["type_base64", "type_base64_comment", "bare_base64", "known_hosts_line", "keyscan_line_other_name"]
)
def test_a_host_key_extra_in_every_form_sshhook_takes_or_a_pasted_known_hosts_line_connects(
    form, sshd, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no known_hosts: only the pin can let us in
    conn = f"test_form_{form}"
    set_plain_connection(sshd, conn, host_key=key_forms(sshd)[form])
    status, _ = SSHAsyncJobHook(conn).status(["~/.airflow_async/x"])["~/.airflow_async/x"]
    assert status.state.value == "missing"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("AAAA", "is not a base64 SSH public key"),
        ("ssh-ed25519", "is not a base64 SSH public key"),
        ("ssh-ed25519 not*base64", "is not a base64 SSH public key"),
        ("@revoked * ssh-ed25519 {blob}", "known_hosts @revoked line"),
        ("ssh-rsa {blob}", "says 'ssh-rsa' but the key is a ssh-ed25519 key"),
        ("x" * 100_000, "is not a base64 SSH public key"),
        ("'\"$(reboot)` ;\n\x00", "must be '<type> <base64 key>'"),
    ],
)
def test_a_host_key_extra_that_is_no_key_is_refused_saying_what_it_must_be(value, says, sshd) -> None:
    from airflow_ssh_async.connection import ConnectionConfigError

    blob = sshd.host_key_line.split()[1]
    conn = "test_bad_pin"
    set_plain_connection(sshd, conn, host_key=value.replace("{blob}", blob))
    with pytest.raises(ConnectionConfigError) as err:
        SSHAsyncJobHook(conn).get_options()
    message = str(err.value)
    assert says in message and "connection 'test_bad_pin'" in message
    assert "mismatch" not in message and len(message) < 600


def test_first_contact_with_an_unknown_host_says_how_to_trust_it_not_that_someone_is_in_between(
    sshd, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/known_hosts
    set_plain_connection(sshd, "test_first_contact")
    with pytest.raises(HostKeyError) as err:
        SSHAsyncJobHook("test_first_contact").status(["~/.airflow_async/x"])
    message = str(err.value)
    assert "host key unknown" in message
    assert f"has no entry for 127.0.0.1:{sshd.port}" in message
    assert fingerprint(sshd.host_key_line) in message
    assert "add the host to ~/.ssh/known_hosts or pin its key in the connection's host_key extra" in message
    assert "airflow-ssh-async host-key test_first_contact" in message
    assert "in between" not in message and "update that entry" not in message


def test_a_changed_key_in_known_hosts_still_warns_that_someone_may_be_in_between(
    sshd, bastion, tmp_path, monkeypatch
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {bastion.host_key_line}\n")
    set_plain_connection(sshd, "test_changed_known", known_hosts=str(known))
    with pytest.raises(HostKeyError) as err:
        SSHAsyncJobHook("test_changed_known").status(["~/.airflow_async/x"])
    assert "someone may be in between" in str(err.value)
    assert f"which has ssh-ed25519 {fingerprint(bastion.host_key_line)}" in str(err.value)


# "unreadable": root (the tests' user) reads it anyway, and finds no key in it.
@pytest.mark.parametrize("path", ["/nonexistent/id_ed25519", "{tmp}/unreadable", "{tmp}"])
def test_a_key_file_that_cannot_be_read_is_a_permanent_credential_error_naming_it(
    path, sshd, tmp_path, monkeypatch
) -> None:
    from airflow_ssh_async.errors import SSHAuthError

    unreadable = tmp_path / "unreadable"
    unreadable.write_text("x")
    unreadable.chmod(0)
    key = path.replace("{tmp}", str(tmp_path))
    os.environ["AIRFLOW_CONN_TEST_NO_KEY"] = json.dumps(
        {
            "conn_type": "ssh",
            "host": "127.0.0.1",
            "port": sshd.port,
            "login": USER,
            "extra": {"key_file": key, "host_key": sshd.host_key_line},
        }
    )
    with pytest.raises(SSHAuthError) as err:
        SSHAsyncJobHook("test_no_key").status(["~/.airflow_async/x"])
    assert err.value.permanent
    assert f"cannot read the private key {key}" in str(err.value)
    assert "check that the host is up" not in str(err.value).lower()
