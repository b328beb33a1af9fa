"""Opening one SSH connection: through a jump host if the connection has one, host keys checked, errors mapped to ours.

Which host keys are trusted, and what asyncssh.connect is given, is
host_keys.py's; sharing the connection between users is client.py's.
"""

from __future__ import annotations

import asyncio
import logging

import asyncssh

from airflow_ssh_async.connection import SSHOptions, jump_options
from airflow_ssh_async.errors import SSHAuthError, SSHConnectError
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
