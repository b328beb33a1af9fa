"""Airflow `ssh` connection -> one options object, parsed once.

The only reader of connection extras in this package, so a connection means
the same thing at launch, at poll time and in the ops command. It follows
``SSHHook`` (apache-airflow-providers-ssh 7): the same extras, the same
defaults, the same host key rules.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from getpass import getuser
from typing import Any

SSH_PORT = 22


class ConnectionConfigError(ValueError):
    """A connection that cannot be used as given; the message says what to change."""


def _true(value: Any) -> bool:
    return str(value).strip().lower() == "true"


@dataclass(frozen=True)
class SSHOptions:
    """Everything needed to open an SSH connection, and nothing Airflow-specific."""

    conn_id: str
    host: str
    port: int = SSH_PORT
    username: str = ""
    password: str | None = field(default=None, repr=False)
    key_file: str | None = None
    private_key: str | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)
    host_key: str | None = None  # "ssh-ed25519 AAAA..." from the connection extra
    known_hosts: str | None = None  # a known_hosts file path (our extra)
    no_host_key_check: bool = False
    allow_host_key_change: bool = False
    look_for_keys: bool = True
    conn_timeout: float | None = None
    compress: bool = True
    proxy_command: str | None = None
    jump_host: str | None = None  # "user@host:port" (our extra, like ssh -J)
    ciphers: tuple[str, ...] | None = None

    @property
    def address(self) -> str:
        """user@host:port: what a result names as the job's host."""
        return f"{self.username}@{self.host}:{self.port}"

    @property
    def label(self) -> str:
        """How messages name the host: user@host:port (conn id)."""
        return f"{self.username}@{self.host}:{self.port} (connection {self.conn_id!r})"

    @property
    def pool_key(self) -> str:
        """Connections with equal keys may share one SSH connection."""
        material = repr(
            (
                self.host,
                self.port,
                self.username,
                self.password,
                self.key_file,
                self.private_key,
                self.host_key,
                self.known_hosts,
                self.no_host_key_check,
                self.proxy_command,
                self.jump_host,
            )
        )
        return hashlib.sha256(material.encode()).hexdigest()


def _ssh_config_lookup(host: str) -> dict[str, Any]:
    """ProxyCommand and IdentityFile from ~/.ssh/config, as SSHHook reads them."""
    path = os.path.expanduser("~/.ssh/config")
    if not os.path.isfile(path):
        return {}
    import paramiko  # SSHHook's own parser, so both read the file alike

    config = paramiko.SSHConfig()
    with open(path) as fh:
        config.parse(fh)
    return dict(config.lookup(host))


def options_from_connection(conn: Any) -> SSHOptions:
    """Build :class:`SSHOptions` from an Airflow ``Connection`` (sync or async fetched)."""
    extra: dict[str, Any] = conn.extra_dejson if conn.extra else {}
    conn_id = conn.conn_id
    if not conn.host:
        raise ConnectionConfigError(f"connection {conn_id!r} has no host: set its Host field")
    key_file = extra.get("key_file")
    private_key = extra.get("private_key")
    if key_file and private_key:
        raise ConnectionConfigError(
            f"connection {conn_id!r} sets both key_file and private_key: keep one of them"
        )
    host_key = extra.get("host_key")
    no_check_raw = extra.get("no_host_key_check", extra.get("ignore_hostkey_verification"))
    no_host_key_check = _true(no_check_raw) if no_check_raw is not None else False
    if host_key:
        host_key = " ".join(str(host_key).strip().split()[:2])
        if no_host_key_check:
            raise ConnectionConfigError(
                f"connection {conn_id!r} sets host_key and no_host_key_check: a given host key "
                "must be checked; drop one of them"
            )
        if len(host_key.split()) < 2:
            raise ConnectionConfigError(
                f"connection {conn_id!r}: host_key must be '<type> <base64 key>', such as the "
                "second and third fields of a known_hosts line"
            )
    ssh_config = _ssh_config_lookup(conn.host)
    if not (conn.password or key_file or private_key) and ssh_config.get("identityfile"):
        key_file = ssh_config["identityfile"][0]
    conn_timeout = extra.get("conn_timeout")
    ciphers = extra.get("ciphers")
    return SSHOptions(
        conn_id=conn_id,
        host=conn.host,
        port=int(conn.port or SSH_PORT),
        username=conn.login or getuser(),
        password=conn.password or None,
        key_file=os.path.expanduser(key_file) if key_file else None,
        private_key=private_key,
        passphrase=extra.get("private_key_passphrase"),
        host_key=host_key or None,
        known_hosts=extra.get("known_hosts"),
        no_host_key_check=no_host_key_check,
        allow_host_key_change=_true(extra.get("allow_host_key_change", False)),
        look_for_keys=not (str(extra.get("look_for_keys", "true")).lower() == "false"),
        conn_timeout=float(conn_timeout) if conn_timeout not in (None, "") else None,
        compress=str(extra.get("compress", "true")).lower() != "false",
        proxy_command=extra.get("proxy_command") or ssh_config.get("proxycommand"),
        jump_host=extra.get("jump_host"),
        ciphers=tuple(ciphers) if ciphers else None,
    )
