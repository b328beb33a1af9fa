"""Airflow `ssh` connection -> one options object, parsed once.

The only reader of connection extras in this package, so a connection means
the same thing at launch, at poll time and in the ops command. It follows
``SSHHook`` (apache-airflow-providers-ssh 7): the same extras, the same
defaults, the same host key rules.

Extras of our own, on top of SSHHook's:

- ``known_hosts``: a known_hosts file to check the host key against
  (instead of ``~/.ssh/known_hosts``).
- ``proxy_command``: like ``ProxyCommand`` in ``~/.ssh/config`` (which is
  read too), e.g. ``ssh -W %h:%p bastion``; ``%h``, ``%p``, ``%r`` and
  ``%%`` are expanded.
- ``jump_host``: ``[user@]host[:port]`` of a bastion to tunnel through (like
  ``ssh -J``); the user defaults to the connection's login, the port to 22.
  The bastion is authenticated with the connection's key unless
  ``jump_host_key_file`` names another private key file; its host key is
  checked against ``jump_host_host_key`` (``<type> <base64>``) when given,
  else like the target's host key (``known_hosts`` extra or
  ``~/.ssh/known_hosts``; ``no_host_key_check`` and
  ``allow_host_key_change`` apply to both hosts).
- ``become_user`` and ``become_method`` (``sudo`` or ``doas``): the default
  target user of every job on this connection (see become.py); an operator,
  sensor or command-line ``become_user`` wins.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import struct
from dataclasses import dataclass, field, replace
from getpass import getuser
from typing import Any

from airflow_ssh_async.errors import SSHAsyncJobError

SSH_PORT = 22


class ConnectionConfigError(SSHAsyncJobError, ValueError):
    """A connection that cannot be used as given; the message says what to change."""


def _key_type_in(blob_b64: str) -> str | None:
    """The key type an SSH public key blob names (its first string), or None."""
    try:
        blob = base64.b64decode(blob_b64, validate=True)
        (size,) = struct.unpack(">I", blob[:4])
        name = blob[4 : 4 + size].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError, ValueError):
        return None
    return name if size and len(blob) > 4 + size and re.fullmatch(r"[a-z0-9@.-]+", name) else None


def normalize_host_key(value: Any, conn_id: str, extra: str = "host_key") -> str:
    """A host key extra in any form SSHHook takes, as ``<type> <base64>``.

    - ``ssh-ed25519 AAAA...`` (``<type> <base64>``, a trailing comment ignored);
    - a bare ``AAAA...`` (SSHHook reads it as ssh-rsa; the blob names its type,
      so any type works);
    - a whole known_hosts or ``ssh-keyscan`` line, ``[host]:port ssh-ed25519
      AAAA...``: the host names are dropped, the key kept.
    Anything else is refused saying what the extra must look like.
    """
    fields = str(value).split()
    wanted = (
        f"connection {conn_id!r}: {extra} must be '<type> <base64 key>' (the second and third fields of a "
        "known_hosts line, e.g. 'ssh-ed25519 AAAAC3Nza...'), a bare base64 key, or a whole known_hosts line"
    )
    if fields and fields[0].startswith("@"):
        raise ConnectionConfigError(
            f"connection {conn_id!r}: {extra} is a known_hosts {fields[0]} line; give the host's own key instead"
        )
    if len(fields) >= 3 and _key_type_in(fields[2]) == fields[1]:
        fields = fields[1:]  # a known_hosts line: drop the host names
    if len(fields) == 1:
        kind = _key_type_in(fields[0])
        if kind is None:
            raise ConnectionConfigError(f"{wanted}; {fields[0][:20]!r}... is not a base64 SSH public key")
        return f"{kind} {fields[0]}"
    if len(fields) < 2:
        raise ConnectionConfigError(wanted)
    kind = _key_type_in(fields[1])
    if kind is None:
        raise ConnectionConfigError(f"{wanted}; the part after {fields[0]!r} is not a base64 SSH public key")
    if kind != fields[0]:
        raise ConnectionConfigError(f"{wanted}; it says {fields[0]!r} but the key is a {kind} key")
    return f"{fields[0]} {fields[1]}"


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
    jump_host_key_file: str | None = None  # private key for the jump host (default: the connection's)
    jump_host_host_key: str | None = None  # "ssh-ed25519 AAAA..." of the jump host
    ciphers: tuple[str, ...] | None = None
    # The trigger's status call may wait on the host for a job's end (our
    # extra; status.sh --wait). False: one plain status call per poll.
    wait_on_host: bool = True
    become_user: str | None = None  # run every remote script as this user (become.py)
    become_method: str = "sudo"

    @property
    def address(self) -> str:
        """user@host:port: what a result names as the job's host."""
        return f"{self.username}@{self.host}:{self.port}"

    @property
    def label(self) -> str:
        """How messages name the host: user@host:port (conn id), and the become user."""
        become = f", as {self.become_user!r} via {self.become_method}" if self.become_user else ""
        return f"{self.username}@{self.host}:{self.port} (connection {self.conn_id!r}{become})"

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
                self.jump_host_key_file,
                self.jump_host_host_key,
                self.allow_host_key_change,
                # Another target user is another set of jobs: its own lease,
                # batches and status calls (one more SSH connection per user).
                self.become_user,
                self.become_method if self.become_user else None,
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


def _expand_proxy(command: str | None, host: str, port: int, user: str | None) -> str | None:
    """%h, %p, %r and %% in a proxy_command extra, as ssh expands them in ProxyCommand."""
    if not command:
        return None
    values = {"h": host, "p": str(port), "r": user or getuser(), "%": "%"}
    return re.sub(r"%([hpr%])", lambda m: values[m.group(1)], str(command))


def options_from_connection(conn: Any) -> SSHOptions:
    """Build :class:`SSHOptions` from an Airflow ``Connection`` (sync or async fetched)."""
    extra: dict[str, Any] = conn.extra_dejson if conn.extra else {}
    conn_id = conn.conn_id
    if not conn.host:
        raise ConnectionConfigError(f"connection {conn_id!r} has no host: set its Host field")
    key_file = extra.get("key_file")
    private_key = extra.get("private_key")
    if key_file and private_key:
        raise ConnectionConfigError(f"connection {conn_id!r} sets both key_file and private_key: keep one of them")
    host_key = extra.get("host_key")
    no_check_raw = extra.get("no_host_key_check", extra.get("ignore_hostkey_verification"))
    no_host_key_check = _true(no_check_raw) if no_check_raw is not None else False
    if host_key:
        if no_host_key_check:
            raise ConnectionConfigError(
                f"connection {conn_id!r} sets host_key and no_host_key_check: a given host key "
                "must be checked; drop one of them"
            )
        host_key = normalize_host_key(host_key, conn_id)
    ssh_config = _ssh_config_lookup(conn.host)
    if not (conn.password or key_file or private_key) and ssh_config.get("identityfile"):
        key_file = ssh_config["identityfile"][0]
    jump_host_host_key = extra.get("jump_host_host_key")
    if jump_host_host_key:
        jump_host_host_key = normalize_host_key(jump_host_host_key, conn_id, "jump_host_host_key")
    jump_host_key_file = extra.get("jump_host_key_file")
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
        look_for_keys=str(extra.get("look_for_keys", "true")).lower() != "false",
        conn_timeout=float(conn_timeout) if conn_timeout not in (None, "") else None,
        compress=str(extra.get("compress", "true")).lower() != "false",
        proxy_command=_expand_proxy(extra.get("proxy_command"), conn.host, int(conn.port or SSH_PORT), conn.login)
        or ssh_config.get("proxycommand"),
        jump_host=extra.get("jump_host") or None,
        jump_host_key_file=os.path.expanduser(jump_host_key_file) if jump_host_key_file else None,
        jump_host_host_key=jump_host_host_key or None,
        ciphers=tuple(ciphers) if ciphers else None,
        wait_on_host=str(extra.get("wait_on_host", "true")).lower() != "false",
        **become_options(extra.get("become_user"), extra.get("become_method"), conn_id),
    )


def become_options(user: Any, method: Any, conn_id: str) -> dict[str, Any]:
    """SSHOptions' become fields from a become_user and become_method as given (None, "": not set).

    :raises ConnectionConfigError: an unknown method or a user name no host can have.
    """
    from airflow_ssh_async.become import validate_become

    try:
        user, method = validate_become(user, method)
    except ValueError as exc:
        raise ConnectionConfigError(f"connection {conn_id!r}: {exc}") from None
    return {"become_user": user, "become_method": method}


def jump_options(options: SSHOptions) -> SSHOptions | None:
    """The options of OPTIONS' jump host (the ``jump_host*`` extras), or None."""
    if not options.jump_host:
        return None
    spec = options.jump_host.strip()
    user, _, hostport = spec.rpartition("@")
    host, port = hostport, SSH_PORT
    if hostport.count(":") == 1:
        host, _, port_s = hostport.partition(":")
        if not port_s.isdigit():
            raise ConnectionConfigError(f"connection {options.conn_id!r}: jump_host {spec!r} is not [user@]host[:port]")
        port = int(port_s)
    if not host:
        raise ConnectionConfigError(f"connection {options.conn_id!r}: jump_host {spec!r} has no host")
    own_key = options.jump_host_key_file is not None
    return replace(
        options,
        host=host,
        port=port,
        username=user or options.username,
        password=None,
        key_file=options.jump_host_key_file if own_key else options.key_file,
        private_key=None if own_key else options.private_key,
        passphrase=None if own_key else options.passphrase,
        host_key=options.jump_host_host_key,
        proxy_command=None,
        jump_host=None,
        jump_host_key_file=None,
        jump_host_host_key=None,
    )
