"""The SSH session: connect, run a remote script with stdin, map errors.

Which host keys are trusted, and what asyncssh.connect is given, is
host_keys.py's. Connections are shared: within one event loop, every user of the same host
and credentials (:attr:`SSHOptions.pool_key`) borrows one asyncssh connection,
opened on first use, re-opened after a drop and closed when the last user
leaves. That is what lets one triggerer watch many jobs on one host over a
single SSH session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections.abc import AsyncIterator, Callable, Sequence
from functools import cache
from importlib import resources

import asyncssh

from airflow_ssh_async.become import become_error, elevate
from airflow_ssh_async.connection import SSHOptions, jump_options
from airflow_ssh_async.errors import (
    AsyncDirError,
    CwdError,
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
from airflow_ssh_async.host_keys import (
    HostKeyWitness,
    PresentedKey,
    aload_trust,
    connect_kwargs,
    host_key_error,
    host_key_source,
    presented_key,
)
from airflow_ssh_async.per_loop import SharedPerLoop

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
# The most one read of a streamed stdout takes at a time.
STREAM_READ = 65536
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


def remote_command(name: str, args: Sequence[str], options: SSHOptions | None = None) -> str:
    """One quoting layer: the login shell splits this back into sh's argv.

    The one place that elevates: with a ``become_user`` in OPTIONS the script
    runs as that user (become.py), whichever script it is.
    """
    argv = ["sh", "-c", program(name), f"airflow-ssh-async-{name}", *args]
    if options is not None and options.become_user:
        argv = elevate(options.become_method, options.become_user, argv)
    return shlex.join(argv)


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
    witness = HostKeyWitness()
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
        error = await asyncio.to_thread(host_key_error, options, label, key_source, exc.reason, witness.presented)
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
    return presented_key(options, key)


class _Shared:
    """One pooled connection: what every user of a host in one event loop shares."""

    def __init__(self, options: SSHOptions) -> None:
        self.options = options
        self.conn: asyncssh.SSHClientConnection | None = None
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


_pools: SharedPerLoop[_Shared] = SharedPerLoop()


def open_connections() -> int:
    """How many pooled SSH connections this event loop has open now."""
    return sum(1 for s in _pools.values() if s.conn is not None and not s.conn.is_closed())


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
        on_stdout: Callable[[bytes], None] | None = None,
    ) -> bytes:
        """Run scripts/NAME.sh with ARGS and STDIN; return its stdout.

        ``args_on_stdin``: ARGS travel on stdin (a batch of any size), which
        then carries nothing else. ``on_stdout``: also called with the
        stdout's bytes as they arrive (a status call that reports parts
        while it waits on the host).

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
                result = await self._run_channel(
                    conn, remote_command(name, args, self.options), stdin, timeout, on_stdout
                )
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
        if self.options.become_user and status is not None:
            refused = become_error(
                self.options.become_method,
                self.options.username,
                self.options.become_user,
                status,
                stderr,
                host=self.options.label,
                job_id=job_id,
            )
            if refused is not None:
                raise refused
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
        conn: asyncssh.SSHClientConnection,
        command: str,
        stdin: bytes,
        timeout: float,
        on_stdout: Callable[[bytes], None] | None = None,
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
                return await _run_once(conn, command, stdin, timeout, on_stdout)
            except asyncssh.ChannelOpenError:
                if conn.is_closed():
                    raise
                await asyncio.sleep(delay)
        return await _run_once(conn, command, stdin, timeout, on_stdout)


async def _run_once(
    conn: asyncssh.SSHClientConnection,
    command: str,
    stdin: bytes,
    timeout: float,
    on_stdout: Callable[[bytes], None] | None = None,
) -> asyncssh.SSHCompletedProcess:
    """conn.run, whose channel is closed when the caller gives up on it: a
    status call that waits on the host (status.sh --wait) is cut short that
    way, and its script ends at its next write."""
    process = await conn.create_process(command, input=stdin, encoding=None)
    try:
        if on_stdout is None:
            return await process.wait(check=False, timeout=timeout)
        return await asyncio.wait_for(_streamed(process, on_stdout), timeout)
    except (asyncio.CancelledError, asyncio.TimeoutError):
        process.close()
        raise


async def _streamed(
    process: asyncssh.SSHClientProcess[bytes], on_stdout: Callable[[bytes], None]
) -> asyncssh.SSHCompletedProcess:
    """PROCESS to its end, its stdout handed to ON_STDOUT as it comes (and kept)."""
    chunks: list[bytes] = []
    while data := await process.stdout.read(STREAM_READ):
        chunks.append(data)
        on_stdout(data)
    result = await process.wait(check=False)
    result.stdout = b"".join(chunks) + _bytes(result.stdout)
    return result


def _bytes(data: bytes | str | None) -> bytes:
    return data.encode() if isinstance(data, str) else data or b""


@contextlib.asynccontextmanager
async def remote_host(options: SSHOptions) -> AsyncIterator[RemoteHost]:
    """Borrow the shared connection for OPTIONS for the length of the block.

    The connection opens lazily on the first command, so entering never
    raises; it closes when the last user of this loop leaves.
    """
    async with _pools.borrow(options.pool_key, lambda: _Shared(options), _close) as shared:
        yield RemoteHost(shared)


async def _close(shared: _Shared) -> None:
    """The last user left: close the connection, waiting a little for it to go."""
    if shared.conn is not None:
        shared.conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(shared.conn.wait_closed(), 5)
