"""Which host keys a connection trusts, and what asyncssh.connect is given.

SSHHook's rules for the host key (the ``host_key`` extra, a known_hosts
file, ``no_host_key_check``, ``allow_host_key_change``), the messages that
tell an unknown host from a changed key, and the client keys and known
hosts read from disk (in a thread, cached while their files are
unchanged). Connecting itself is client.py's, as asyncssh keeps
known_hosts.py apart from connection.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import asyncssh

from airflow_ssh_async import client_keys
from airflow_ssh_async.connection import SSHOptions
from airflow_ssh_async.errors import HostKeyError


def _default_known_hosts(options: SSHOptions) -> str:
    return options.known_hosts or os.path.expanduser("~/.ssh/known_hosts")


def _known_hosts(options: SSHOptions, trust: Trust | None = None) -> object:
    """What asyncssh checks the host key against: SSHHook's rules.

    - ``host_key`` extra: exactly that key.
    - ``allow_host_key_change``: no check (SSHHook loads no known hosts then).
    - ``no_host_key_check``: a host listed in the known_hosts file must still
      present the listed key (paramiko raises BadHostKeyException there); an
      unlisted host is accepted.
    - otherwise: the ``known_hosts`` extra's file, or ~/.ssh/known_hosts; a
      host not in it is refused.
    """
    if options.host_key:
        return asyncssh.import_known_hosts(known_hosts_line(options, options.host_key) + "\n")
    if options.allow_host_key_change:
        return None
    trust = trust or load_trust(options)
    if options.no_host_key_check:
        listed = trust.known_hosts is not None and _match(options, trust.known_hosts)
        return trust.known_hosts if listed else None
    # A missing ~/.ssh/known_hosts trusts nothing, as asyncssh's default does.
    return trust.known_hosts if trust.known_hosts is not None else asyncssh.import_known_hosts("")


def _match(options: SSHOptions, known: asyncssh.SSHKnownHosts) -> list[asyncssh.SSHKey]:
    port = options.port if options.port != 22 else None
    return list(known.match(options.host, options.host, port)[0])


def _listed(options: SSHOptions, path: str) -> list[asyncssh.SSHKey]:
    """The keys PATH lists for the host (none if the file is missing)."""
    if not os.path.isfile(path):
        return []
    port = options.port if options.port != 22 else None
    return list(asyncssh.match_known_hosts(path, options.host, options.host, port)[0])


def host_key_source(options: SSHOptions) -> str:
    if options.host_key:
        return f"the host_key extra of connection {options.conn_id!r}"
    if options.known_hosts:
        return f"the known_hosts file {options.known_hosts}"
    return "~/.ssh/known_hosts of the user running Airflow"


def trusted_keys(options: SSHOptions) -> list[asyncssh.SSHKey] | None:
    """The keys the trusted source holds for the host; None if it cannot be read."""
    try:
        if options.host_key:
            return [asyncssh.import_public_key(options.host_key)]
        return _listed(options, _default_known_hosts(options))
    except (OSError, ValueError, asyncssh.Error):
        return None


def known_hosts_line(options: SSHOptions, key: str) -> str:
    """KEY ("<type> <base64>") as a known_hosts line for the host, as ssh writes it."""
    pattern = options.host if options.port == 22 else f"[{options.host}]:{options.port}"
    return f"{pattern} {key}"


def host_key_error(
    options: SSHOptions, label: str, key_source: str, reason: str, key: asyncssh.SSHKey | None
) -> HostKeyError:
    """Unknown host (first contact) and changed key are different stories: tell which."""
    shown = f"{key.get_algorithm()} key {key.get_fingerprint()}" if key is not None else "key"
    source = key_source or host_key_source(options)
    trusted = trusted_keys(options)
    if trusted == []:
        where = options.known_hosts or "~/.ssh/known_hosts"
        return HostKeyError(
            f"host key unknown: the host presented the {shown}, and {source} has no entry for "
            f"{options.host}:{options.port}",
            host=label,
            hint=f"Check that fingerprint with the host's administrator (`ssh-keygen -lf "
            f"/etc/ssh/ssh_host_*_key.pub` on the host), then add the host to {where} or pin its key in the "
            f"connection's host_key extra; `airflow-ssh-async host-key {options.conn_id}` prints both.",
        )
    expected = "which has " + ", ".join(f"{k.get_algorithm()} {k.get_fingerprint()}" for k in trusted or [])
    return HostKeyError(
        f"host key not trusted ({reason}): the host presented the {shown}, which is not the key in "
        f"{source}" + (f" ({expected})" if trusted else ""),
        host=label,
        hint="If the host was reinstalled, update that entry; otherwise do not connect: someone may be in between.",
    )


class HostKeyWitness(asyncssh.SSHClient):
    """Remembers the key a host presented that no trusted source listed."""

    presented: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.presented = key
        return False


@dataclass(frozen=True)
class Trust:
    """What a connect reads from disk: the client keys (decrypted) and the known hosts.

    ``client_keys`` None: let asyncssh pick (agent, ~/.ssh/id_*).
    """

    client_keys: list[object] | None
    known_hosts: asyncssh.SSHKnownHosts | None


def _stat(path: str) -> tuple[object, ...]:
    try:
        st = os.stat(path)
    except OSError:
        return (path, None)
    return (path, st.st_ino, st.st_size, st.st_mtime_ns)


def _secret_digest(*parts: str | None) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _read_known_hosts(path: str) -> asyncssh.SSHKnownHosts | None:
    """PATH parsed; None for a missing default file. A missing known_hosts extra raises (OSError)."""
    return asyncssh.read_known_hosts(path) if os.path.isfile(path) else None


def _trust_parts(options: SSHOptions) -> list[tuple[tuple[object, ...], Callable[[], object]]]:
    """(cache key, loader) of each piece of Trust: a key changes when its file or secret does."""
    keys: tuple[tuple[object, ...], Callable[[], object]]
    if options.private_key:
        private_key, passphrase = options.private_key, options.passphrase
        keys = (
            ("inline", _secret_digest(private_key, passphrase)),
            lambda: client_keys.import_key(private_key, passphrase),
        )
    elif options.key_file:
        path, passphrase = options.key_file, options.passphrase
        keys = (
            ("file", _stat(path), _stat(path + "-cert.pub"), _stat(path + ".pub"), _secret_digest(passphrase)),
            lambda: client_keys.load_key_file(path, passphrase),
        )
    else:
        keys = (("none",), lambda: None)
    if options.host_key or options.allow_host_key_change:
        hosts: tuple[tuple[object, ...], Callable[[], object]] = (("none",), lambda: None)
    else:
        kh = _default_known_hosts(options)
        must_exist = bool(options.known_hosts) and not options.no_host_key_check
        hosts = (
            ("known_hosts", _stat(kh), must_exist),
            lambda: asyncssh.read_known_hosts(kh) if must_exist else _read_known_hosts(kh),
        )
    return [keys, hosts]


# Decrypted keys and parsed known_hosts files, shared by every event loop of
# the process: a reconnect storm reads and decrypts nothing again. Futures,
# so that concurrent connects with one key wait for a single load.
_TRUST_CACHE_SIZE = 64
_trust_cache: dict[tuple[object, ...], concurrent.futures.Future[object]] = {}
_trust_lock = threading.Lock()
_trust_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _trust_future(key: tuple[object, ...], load: Callable[[], object]) -> concurrent.futures.Future[object]:
    global _trust_pool
    with _trust_lock:
        fut = _trust_cache.get(key)
        if fut is None or fut.cancelled() or (fut.done() and fut.exception() is not None):
            if _trust_pool is None:
                _trust_pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="ssh-async-keys")
            fut = _trust_cache[key] = _trust_pool.submit(load)
            while len(_trust_cache) > _TRUST_CACHE_SIZE:
                _trust_cache.pop(next(iter(_trust_cache)))
        return fut


def load_trust(options: SSHOptions) -> Trust:
    """As :func:`aload_trust`, blocking (benchmarks and sync callers)."""
    keys, hosts = (_trust_future(k, f).result() for k, f in _trust_parts(options))
    return Trust(keys, hosts)  # type: ignore[arg-type]


async def aload_trust(options: SSHOptions) -> Trust:
    """Client keys and known hosts, read and decrypted in a thread, cached while their files are unchanged.

    Decrypting a passphrase-protected key (bcrypt KDF) and parsing a
    known_hosts file take tens to hundreds of milliseconds: never on the
    event loop, and once per key and file, not per (re)connect.

    :raises OSError, asyncssh.KeyImportError: as reading the key or file does.
    """
    keys, hosts = await asyncio.gather(
        *(asyncio.shield(asyncio.wrap_future(_trust_future(k, f))) for k, f in _trust_parts(options))
    )
    return Trust(keys, hosts)  # type: ignore[arg-type]


def connect_kwargs(options: SSHOptions, trust: Trust | None = None) -> dict[str, object]:
    """asyncssh.connect's arguments; TRUST (from :func:`aload_trust`) or a blocking load."""
    trust = trust or load_trust(options)
    kwargs: dict[str, object] = {
        "host": options.host,
        "port": options.port,
        "username": options.username,
        "known_hosts": _known_hosts(options, trust),
        # connection.py already read ~/.ssh/config the way SSHHook does.
        "config": None,
        "keepalive_interval": 30,
        "keepalive_count_max": 3,
    }
    if not options.compress:  # SSHHook's compress=false: no compression negotiated
        kwargs["compression_algs"] = None
    if options.password:
        kwargs["password"] = options.password
    if trust.client_keys is not None:
        kwargs["client_keys"] = trust.client_keys
    elif not options.look_for_keys:
        kwargs["client_keys"] = None
    if options.conn_timeout:
        kwargs["connect_timeout"] = options.conn_timeout
    if options.proxy_command:
        kwargs["proxy_command"] = options.proxy_command
    # A jump host is opened by open_connection (with its own key and host
    # key) and passed as the tunnel.
    if options.ciphers:
        kwargs["encryption_algs"] = list(options.ciphers)
    return kwargs


@dataclass(frozen=True)
class PresentedKey:
    """A host key as the host presented it, not trusted: what `host-key` prints."""

    algorithm: str
    host_key: str  # "<type> <base64>": the host_key extra's value
    fingerprint: str  # "SHA256:...", as ssh-keygen -l shows it
    known_hosts_line: str
    trusted_by: str = ""  # the source that already lists this key, if one does


def presented_key(options: SSHOptions, key: asyncssh.SSHKey) -> PresentedKey:
    """KEY, as the host presented it, in the forms a person pins it by, and
    which trusted source (if any) already lists it."""
    value = " ".join(key.export_public_key("openssh").decode().split()[:2])
    fingerprint = key.get_fingerprint("sha256")
    trusted = fingerprint in {k.get_fingerprint("sha256") for k in trusted_keys(options) or []}
    return PresentedKey(
        key.get_algorithm(),
        value,
        fingerprint,
        known_hosts_line(options, value),
        host_key_source(options) if trusted else "",
    )
