"""The remote scripts as shipped, and how one is called: its command line, its arguments on stdin, its exit codes.

Pure (no SSH): scripts/*.sh are the only code run on a host; client.py runs
what :func:`remote_command` builds and maps a failed exit with :func:`exit_error`.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from functools import cache
from importlib import resources

from airflow_ssh_async.become import elevate
from airflow_ssh_async.connection import SSHOptions
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
)

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


def exit_error(status: int) -> type[RemoteCommandError]:
    """The error a script's exit STATUS names: a code of ours (lib.sh) its own; any
    other is the shell or the host itself ("Cannot fork", a command not found),
    worth another poll."""
    return _EXIT_ERRORS.get(status, RemoteCommandError if status in _OUR_CODES else RemoteShellError)
