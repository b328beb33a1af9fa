"""The SSH session: run a remote script with stdin on a shared connection, map its errors.

Opening a connection is connect.py's, which host keys are trusted
host_keys.py's, what a script's command line and exit codes are
remote_scripts.py's (all re-exported here). Connections are shared: within
one event loop, every user of the same host and credentials
(:attr:`SSHOptions.pool_key`) borrows one asyncssh connection, opened on
first use, re-opened after a drop and closed when the last user leaves.
That is what lets one triggerer watch many jobs on one host over a single
SSH session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

import asyncssh

from airflow_ssh_async.become import become_error
from airflow_ssh_async.connect import (
    HOST_KEY_CHANGE_WARNING,
    NO_HOST_KEY_CHECK_WARNING,
    open_connection,
    presented_host_key,
)
from airflow_ssh_async.connection import SSHOptions
from airflow_ssh_async.errors import SSHAsyncJobError, SSHConnectError
from airflow_ssh_async.host_keys import connect_kwargs
from airflow_ssh_async.per_loop import SharedPerLoop
from airflow_ssh_async.remote_scripts import (
    ARG_SEPARATOR,
    exit_error,
    program,
    remote_command,
    script,
    stdin_args,
    supervisor_program,
)

__all__ = [
    "ARG_SEPARATOR",
    "CHANNEL_RETRY_DELAYS",
    "DEFAULT_COMMAND_TIMEOUT",
    "HOST_KEY_CHANGE_WARNING",
    "MAX_CHANNELS",
    "NO_HOST_KEY_CHECK_WARNING",
    "RemoteHost",
    "connect_kwargs",
    "open_connection",
    "open_connections",
    "presented_host_key",
    "program",
    "remote_command",
    "remote_host",
    "script",
    "stdin_args",
    "supervisor_program",
]


# sshd's default MaxSessions is 10 channels a connection; stay under it.
MAX_CHANNELS = 8
DEFAULT_COMMAND_TIMEOUT = 300.0
# The most one read of a streamed stdout takes at a time.
STREAM_READ = 65536
# Waits between tries of a channel open that sshd refused (see _run_channel).
CHANNEL_RETRY_DELAYS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


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
        error = exit_error(status)
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
