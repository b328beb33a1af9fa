"""The only asyncssh import: connect, run a remote script with stdin, map errors.

Connections are shared: within one event loop, every user of the same host
and credentials (:attr:`SSHOptions.pool_key`) borrows one asyncssh connection,
opened on first use, re-opened after a drop and closed when the last user
leaves. That is what lets one triggerer watch many jobs on one host over a
single SSH session.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import shlex
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import asyncssh

from airflow_ssh_async.connection import SSHOptions, jump_options
from airflow_ssh_async.errors import (
    AsyncDirError,
    CwdError,
    HostKeyError,
    JobExistsError,
    JobNotFoundError,
    JobRunningError,
    MissingToolError,
    RemoteCommandError,
    RemoteShellError,
    RemoteWriteError,
    SSHAsyncJobError,
    SSHAuthError,
    SSHConnectError,
)
from airflow_ssh_async.handshakes import admitted

# asyncssh logs every connect and channel at INFO; in a task log that is noise.
logging.getLogger("asyncssh").setLevel(logging.WARNING)
log = logging.getLogger(__name__)

# SSHHook's own warnings (apache-airflow-providers-ssh, SSHHook.get_conn),
# word for word and at its level, logged on every connection that skips a
# host key check.
HOST_KEY_CHANGE_WARNING = (
    "Remote Identification Change is not verified. This won't protect against Man-In-The-Middle attacks"
)
NO_HOST_KEY_CHECK_WARNING = "No Host Key Verification. This won't protect against Man-In-The-Middle attacks"

# sshd's default MaxSessions is 10 channels a connection; stay under it.
MAX_CHANNELS = 8
DEFAULT_COMMAND_TIMEOUT = 300.0
# Waits between tries of a channel open that sshd refused (see _run_channel).
CHANNEL_RETRY_DELAYS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)

# Exit codes of scripts/lib.sh (E_USAGE 64 to E_NEED 71).
_OUR_CODES = range(64, 72)
_EXIT_ERRORS: dict[int, type[RemoteCommandError]] = {
    65: JobExistsError,
    66: JobNotFoundError,
    67: CwdError,
    68: AsyncDirError,
    69: RemoteWriteError,
    70: JobRunningError,
    71: MissingToolError,
}


@cache
def script(name: str) -> bytes:
    """A remote script as shipped in the package."""
    return resources.files("airflow_ssh_async").joinpath("scripts", f"{name}.sh").read_bytes()


@cache
def program(name: str) -> str:
    """lib.sh followed by one action script: what `sh -c` runs on the host."""
    return (script("lib") + b"\n" + script(name)).decode()


@cache
def supervisor_program() -> bytes:
    """What a launch ships as the supervisor: lib.sh and supervise.sh."""
    return script("lib") + b"\n" + script("supervise")


def remote_command(name: str, args: Sequence[str]) -> str:
    """One quoting layer: the login shell splits this back into sh's argv."""
    return shlex.join(["sh", "-c", program(name), f"airflow-ssh-async-{name}", *args])


# Ends each argument sent on stdin (lib.sh's --stdin-args).
ARG_SEPARATOR = "\x1f"


def stdin_args(args: Sequence[str]) -> bytes:
    """ARGS as lib.sh's --stdin-args reads them: no count or length of
    arguments can then reach the kernel's limit on a command line.

    :raises ValueError: an argument holds the separator (0x1f).
    """
    for arg in args:
        if ARG_SEPARATOR in arg:
            raise ValueError(f"an argument holds the ASCII unit separator (0x1f): {arg!r}")
    return "".join(f"{a}{ARG_SEPARATOR}" for a in args).encode("utf-8", "surrogateescape")


def _default_known_hosts(options: SSHOptions) -> str:
    return options.known_hosts or os.path.expanduser("~/.ssh/known_hosts")


def _known_hosts(options: SSHOptions, trust: _Trust | None = None) -> object:
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
    trust = trust or _load_trust(options)
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


def _trusted_keys(options: SSHOptions) -> list[asyncssh.SSHKey] | None:
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


def _host_key_error(
    options: SSHOptions, label: str, key_source: str, reason: str, key: asyncssh.SSHKey | None
) -> HostKeyError:
    """Unknown host (first contact) and changed key are different stories: tell which."""
    shown = f"{key.get_algorithm()} key {key.get_fingerprint()}" if key is not None else "key"
    source = key_source or host_key_source(options)
    trusted = _trusted_keys(options)
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


class _HostKeyWitness(asyncssh.SSHClient):
    """Remembers the key a host presented that no trusted source listed."""

    presented: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.presented = key
        return False


@dataclass(frozen=True)
class _Trust:
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
    """(cache key, loader) of each piece of _Trust: a key changes when its file or secret does."""
    if options.private_key:
        private_key, passphrase = options.private_key, options.passphrase
        keys = (
            ("inline", _secret_digest(private_key, passphrase)),
            lambda: [asyncssh.import_private_key(private_key, passphrase)],
        )
    elif options.key_file:
        path, passphrase = options.key_file, options.passphrase
        keys = (
            ("file", _stat(path), _stat(path + "-cert.pub"), _stat(path + ".pub"), _secret_digest(passphrase)),
            lambda: list(asyncssh.load_keypairs([path], passphrase)),
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


def _load_trust(options: SSHOptions) -> _Trust:
    """As :func:`aload_trust`, blocking (benchmarks and sync callers)."""
    keys, hosts = (_trust_future(k, f).result() for k, f in _trust_parts(options))
    return _Trust(keys, hosts)  # type: ignore[arg-type]


async def aload_trust(options: SSHOptions) -> _Trust:
    """Client keys and known hosts, read and decrypted in a thread, cached while their files are unchanged.

    Decrypting a passphrase-protected key (bcrypt KDF) and parsing a
    known_hosts file take tens to hundreds of milliseconds: never on the
    event loop, and once per key and file, not per (re)connect.

    :raises OSError, asyncssh.KeyImportError: as reading the key or file does.
    """
    keys, hosts = await asyncio.gather(
        *(asyncio.shield(asyncio.wrap_future(_trust_future(k, f))) for k, f in _trust_parts(options))
    )
    return _Trust(keys, hosts)  # type: ignore[arg-type]


def connect_kwargs(options: SSHOptions, trust: _Trust | None = None) -> dict[str, object]:
    """asyncssh.connect's arguments; TRUST (from :func:`aload_trust`) or a blocking load."""
    trust = trust or _load_trust(options)
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


async def open_connection(options: SSHOptions) -> asyncssh.SSHClientConnection:
    """Open one SSH connection, through the connection's jump host if it has one.

    :raises SSHAuthError: the host refused the credentials.
    :raises HostKeyError: the host key is unknown or changed.
    :raises SSHConnectError: the host could not be reached (may pass).
    """
    jump = jump_options(options)
    if jump is None:
        return await _connect(options, options.label)
    source = (
        f"the jump_host_host_key extra of connection {options.conn_id!r}"
        if options.jump_host_host_key
        else host_key_source(jump)
    )
    tunnel = await _connect(jump, f"jump host {jump.address} of connection {options.conn_id!r}", source)
    try:
        conn = await _connect(options, f"{options.label} via jump host {jump.address}", tunnel=tunnel)
    except BaseException:
        tunnel.close()
        raise
    conn.set_tunnel(tunnel)  # closing the connection closes the tunnel, as asyncssh does for its own
    return conn


async def _connect(
    options: SSHOptions, label: str, key_source: str = "", **extra: object
) -> asyncssh.SSHClientConnection:
    """One asyncssh.connect, its errors mapped to ours; LABEL names the host in them."""
    witness = _HostKeyWitness()
    if options.allow_host_key_change:
        log.warning("%s (%s)", HOST_KEY_CHANGE_WARNING, label)
    if options.no_host_key_check:
        log.warning("%s (%s)", NO_HOST_KEY_CHECK_WARNING, label)
    try:
        kwargs = connect_kwargs(options, await aload_trust(options))
        return await admitted(asyncssh.connect(**kwargs, client_factory=lambda: witness, **extra))
    except asyncssh.PermissionDenied as exc:
        raise SSHAuthError(
            f"authentication failed ({exc.reason})",
            host=label,
            hint="Check the login, key file or password of the connection, and that the key is in "
            "the user's authorized_keys on the host.",
        ) from None
    except asyncssh.HostKeyNotVerifiable as exc:
        # It reads the known_hosts file again: not on the loop either.
        error = await asyncio.to_thread(_host_key_error, options, label, key_source, exc.reason, witness.presented)
        raise error from None
    except asyncssh.KeyImportError as exc:
        raise SSHAuthError(
            f"cannot read the private key {options.key_file or 'in the private_key extra'} ({exc})",
            host=label,
            hint="Check the key file or private_key extra and its private_key_passphrase.",
        ) from None
    except OSError as exc:
        if options.key_file and exc.filename == options.key_file:
            raise _key_file_error(options, label, exc) from None
        raise _connect_error(label, exc) from None
    except (asyncio.TimeoutError, asyncssh.Error) as exc:
        raise _connect_error(label, exc) from None


def _key_file_error(options: SSHOptions, label: str, exc: OSError) -> SSHAuthError:
    """A key file that is not there or not readable: no retry will fix it."""
    return SSHAuthError(
        f"cannot read the private key {options.key_file} ({exc.strerror or exc})",
        host=label,
        hint="The key_file extra must name a private key file that the Airflow user (on every worker "
        "and triggerer) can read.",
    )


def _connect_error(label: str, exc: BaseException) -> SSHConnectError:
    return SSHConnectError(
        f"cannot connect ({type(exc).__name__}: {exc})",
        host=label,
        hint="Check that the host is up and sshd listens on that port.",
    )


@dataclass(frozen=True)
class PresentedKey:
    """A host key as the host presented it, not trusted: what `host-key` prints."""

    algorithm: str
    host_key: str  # "<type> <base64>": the host_key extra's value
    fingerprint: str  # "SHA256:...", as ssh-keygen -l shows it
    known_hosts_line: str
    trusted_by: str = ""  # the source that already lists this key, if one does


async def presented_host_key(options: SSHOptions) -> PresentedKey:
    """Fetch the key the host presents, trusting nothing.

    The key exchange runs and the connection is closed before any
    authentication: no credential is sent to the host and nothing is
    written. A jump host is connected to as usual (its own key is checked).

    :raises SSHConnectError: the host (or jump host) could not be reached.
    :raises HostKeyError: the jump host's key is not trusted.
    """
    jump = jump_options(options)
    tunnel = None
    if jump is not None:
        tunnel = await _connect(jump, f"jump host {jump.address} of connection {options.conn_id!r}")
    try:
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(
                options.host,
                options.port,
                tunnel=tunnel if tunnel is not None else (),
                proxy_command=options.proxy_command or (),
                config=None,
            ),
            options.conn_timeout or 30,
        )
    except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
        raise _connect_error(options.label, exc) from None
    finally:
        if tunnel is not None:
            tunnel.close()
    if key is None:
        raise SSHConnectError("the host presented no host key", host=options.label)
    value = " ".join(key.export_public_key("openssh").decode().split()[:2])
    fingerprint = key.get_fingerprint("sha256")
    trusted = fingerprint in {k.get_fingerprint("sha256") for k in _trusted_keys(options) or []}
    return PresentedKey(
        key.get_algorithm(),
        value,
        fingerprint,
        known_hosts_line(options, value),
        host_key_source(options) if trusted else "",
    )


class _Shared:
    """One pooled connection and how many users hold it."""

    def __init__(self, options: SSHOptions) -> None:
        self.options = options
        self.conn: asyncssh.SSHClientConnection | None = None
        self.users = 0
        self.lock = asyncio.Lock()
        self.channels = asyncio.Semaphore(MAX_CHANNELS)
        self.opened = 0  # how many times we connected, for tests and benchmarks

    async def connection(self) -> asyncssh.SSHClientConnection:
        async with self.lock:
            if self.conn is None or self.conn.is_closed():
                self.conn = await open_connection(self.options)
                self.opened += 1
            return self.conn

    def drop(self, conn: asyncssh.SSHClientConnection) -> None:
        if self.conn is conn:
            self.conn = None
        conn.close()


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Shared]] = weakref.WeakKeyDictionary()


def _pool() -> dict[str, _Shared]:
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = _pools[loop] = {}
    return pool


def open_connections() -> int:
    """How many pooled SSH connections this event loop has open now."""
    return sum(1 for s in _pool().values() if s.conn is not None and not s.conn.is_closed())


class RemoteHost:
    """A lease on the shared connection to one host; runs the remote scripts."""

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self.options = shared.options

    async def run(
        self,
        name: str,
        args: Sequence[str],
        *,
        stdin: bytes = b"",
        args_on_stdin: bool = False,
        job_id: str = "",
        timeout: float = DEFAULT_COMMAND_TIMEOUT,
    ) -> bytes:
        """Run scripts/NAME.sh with ARGS and STDIN; return its stdout.

        ``args_on_stdin``: ARGS travel on stdin (a batch of any size), which
        then carries nothing else.

        :raises RemoteCommandError: (or a subclass by exit code) the script failed.
        :raises SSHConnectError: the connection dropped or timed out; the next
            call reconnects.
        """
        if args_on_stdin:
            if stdin:
                raise ValueError("stdin carries the arguments or data, not both")
            try:
                args, stdin = ["--stdin-args"], stdin_args(args)
            except ValueError as exc:
                raise SSHAsyncJobError(
                    str(exc), host=self.options.label, job_id=job_id, hint="Name job folders without the byte 0x1f."
                ) from None
        conn = await self._shared.connection()
        try:
            async with self._shared.channels:
                result = await self._run_channel(conn, remote_command(name, args), stdin, timeout)
        except asyncssh.ChannelOpenError as exc:
            self._shared.drop(conn)
            raise SSHConnectError(
                f"cannot open an SSH channel ({exc.reason})", host=self.options.label, job_id=job_id
            ) from None
        except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
            self._shared.drop(conn)
            raise SSHConnectError(
                f"connection lost while running {name} ({type(exc).__name__}: {exc})",
                host=self.options.label,
                job_id=job_id,
            ) from None
        status = result.exit_status
        # encoding=None: asyncssh hands back bytes (its type says bytes | str).
        stdout, stderr_b = _bytes(result.stdout), _bytes(result.stderr)
        stderr = stderr_b.decode("utf-8", "replace").strip()
        if status == 0:
            return stdout
        if status is None or status < 0:
            raise SSHConnectError(
                f"remote {name} ended without an exit status (signal {result.exit_signal})",
                host=self.options.label,
                job_id=job_id,
            )
        # A code of ours names the error; any other is the shell or the host
        # itself ("Cannot fork", a command not found): worth another poll.
        error = _EXIT_ERRORS.get(status, RemoteCommandError if status in _OUR_CODES else RemoteShellError)
        message = stderr.removeprefix("airflow-ssh-async: error: ") or f"remote {name} exited {status}"
        raise error(message, code=status, stderr=stderr, host=self.options.label, job_id=job_id)

    @staticmethod
    async def _run_channel(
        conn: asyncssh.SSHClientConnection, command: str, stdin: bytes, timeout: float
    ) -> asyncssh.SSHCompletedProcess:
        """conn.run, with a refused channel open tried again a few times.

        sshd frees a session slot only once it has reaped the session's
        process, a moment after the client saw the channel close; with many
        commands in a row on one shared connection it can refuse an open
        (MaxSessions) although we never have more than MAX_CHANNELS open.
        The connection is fine: wait a little and open again, and only
        give up (and drop the connection) when the refusal persists.
        """
        for delay in CHANNEL_RETRY_DELAYS:
            try:
                return await _run_once(conn, command, stdin, timeout)
            except asyncssh.ChannelOpenError:
                if conn.is_closed():
                    raise
                await asyncio.sleep(delay)
        return await _run_once(conn, command, stdin, timeout)


async def _run_once(
    conn: asyncssh.SSHClientConnection, command: str, stdin: bytes, timeout: float
) -> asyncssh.SSHCompletedProcess:
    """conn.run, whose channel is closed when the caller gives up on it: a
    status call that waits on the host (status.sh --wait) is cut short that
    way, and its script ends at its next write."""
    process = await conn.create_process(command, input=stdin, encoding=None)
    try:
        return await process.wait(check=False, timeout=timeout)
    except asyncio.CancelledError:
        process.close()
        raise


def _bytes(data: bytes | str | None) -> bytes:
    return data.encode() if isinstance(data, str) else data or b""


@contextlib.asynccontextmanager
async def remote_host(options: SSHOptions) -> AsyncIterator[RemoteHost]:
    """Borrow the shared connection for OPTIONS for the length of the block.

    The connection opens lazily on the first command, so entering never
    raises; it closes when the last user of this loop leaves.
    """
    pool = _pool()
    shared = pool.get(options.pool_key)
    if shared is None:
        shared = pool[options.pool_key] = _Shared(options)
    shared.users += 1
    try:
        yield RemoteHost(shared)
    finally:
        shared.users -= 1
        if shared.users == 0:
            pool.pop(options.pool_key, None)
            if shared.conn is not None:
                shared.conn.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(shared.conn.wait_closed(), 5)
