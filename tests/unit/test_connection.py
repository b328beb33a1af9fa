"""Connection extras to options: jump hosts, proxy commands, host key forms (no network)."""

from __future__ import annotations

import json
import subprocess


def test_jump_options_are_parsed_from_the_extras() -> None:
    from airflow_ssh_async.connection import SSHOptions, jump_options

    base = SSHOptions("c", "target", 2222, "me", key_file="/k", host_key="ssh-ed25519 AAAA")
    assert jump_options(base) is None
    jump = jump_options(SSHOptions("c", "target", 22, "me", key_file="/k", jump_host="bastion"))
    assert (jump.host, jump.port, jump.username, jump.key_file, jump.host_key) == ("bastion", 22, "me", "/k", None)
    jump = jump_options(
        SSHOptions(
            "c", "t", 22, "me", key_file="/k", jump_host="u@b:2200", jump_host_key_file="/j", jump_host_host_key="x y"
        )
    )
    assert (jump.host, jump.port, jump.username, jump.key_file, jump.host_key, jump.jump_host) == (
        "b",
        2200,
        "u",
        "/j",
        "x y",
        None,
    )


def test_proxy_command_expands_host_and_port() -> None:
    from airflow.models.connection import Connection

    from airflow_ssh_async.connection import options_from_connection

    conn = Connection(
        conn_id="p", conn_type="ssh", host="10.0.0.5", port=2022, login="u",
        extra=json.dumps({"proxy_command": "ssh -W %h:%p -l %r bastion # 100%%"}),
    )  # fmt: skip
    assert options_from_connection(conn).proxy_command == "ssh -W 10.0.0.5:2022 -l u bastion # 100%"


def test_a_bare_base64_host_key_is_read_as_the_type_its_blob_names_as_sshhook_reads_rsa(tmp_path) -> None:
    from airflow_ssh_async.connection import normalize_host_key

    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(tmp_path / "k")], check=True)
    kind, blob = (tmp_path / "k.pub").read_text().split()[:2]
    assert kind == "ssh-rsa"
    assert normalize_host_key(blob, "c") == f"ssh-rsa {blob}"
    assert normalize_host_key(f"  {kind}   {blob}  comment words ", "c") == f"ssh-rsa {blob}"
