"""Run the remote scripts as another user (Ansible's ``become``): pure logic.

With a ``become_user``, every remote script (launch, the supervisor it
starts, status, output, cancel, archive, list, gc) runs as that user, through
``sudo -n`` (or ``doas -n``) at the one place that builds the remote command
(client.py). The whole job then belongs to the target user: its folder under
that user's async_dir, its supervisor, its process group, so time limits,
cancels and liveness work exactly as for the login user.

Non-interactive only: ``-n`` makes sudo fail at once where it would ask for a
password (a rule without NOPASSWD, no rule at all), and a ``requiretty`` rule
or an unknown target user fail at once too; :func:`become_error` turns what
sudo said into an error that names the host, the user and the line to add.

The environment is reset twice over: sudo's ``env_reset`` keeps a few of the
login session's variables (LANG, TERM) and adds its own (SUDO_*), so the
command first runs :data:`BOOTSTRAP`, which starts the script with only
HOME, USER, LOGNAME, SHELL and PATH as the elevation set them. The job's
own variables travel on stdin as always (never through sudo), so env_reset
cannot drop them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from airflow_ssh_async.errors import SSHAsyncJobError

METHODS = ("sudo", "doas")
DEFAULT_METHOD = "sudo"
# The shell the rule must allow: absolute, so that sudo's secure_path and the
# rule's command match whatever the login user's PATH.
SHELL = "/bin/sh"
# A user name as useradd takes it (and a trailing $ of a machine account).
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,31}\$?")

# What the elevated /bin/sh runs first ($0: the script, "$@": its name and
# arguments): the script, with an environment of the target user's identity
# and PATH only.
BOOTSTRAP = (
    'exec env -i HOME="${HOME-}" USER="${USER-}" LOGNAME="${LOGNAME-}" SHELL="${SHELL-}" PATH="${PATH-}" '
    '/bin/sh -c "$0" "$@"'
)


class BecomeError(SSHAsyncJobError):
    """sudo (or doas) refused to run our script as the target user; no retry will fix it."""


def validate_become(user: object, method: object) -> tuple[str | None, str]:
    """(become_user or None, become_method) as given; "" and None mean not set.

    :raises ValueError: an unknown method, or a user name no host can have.
    """
    name = str(user).strip() if user not in (None, "") else ""
    how = str(method).strip().lower() if method not in (None, "") else DEFAULT_METHOD
    if how not in METHODS:
        raise ValueError(f"become_method must be one of {list(METHODS)}, not {method!r}")
    if name and not _USER.fullmatch(name):
        raise ValueError(f"become_user {name!r} is not a user name (letters, digits, '.', '_', '-')")
    return name or None, how


def elevate(method: str, user: str, argv: Sequence[str]) -> list[str]:
    """ARGV (``sh -c PROGRAM NAME ARGS``) run as USER with METHOD, non-interactively."""
    if argv[:2] != ["sh", "-c"]:
        raise ValueError(f"not a remote script command: {list(argv[:2])}")
    rest = list(argv[2:])
    if method == "doas":
        return ["doas", "-n", "-u", user, SHELL, "-c", BOOTSTRAP, *rest]
    return ["sudo", "-n", "-H", "-u", user, "--", SHELL, "-c", BOOTSTRAP, *rest]


def rule_line(method: str, login: str, user: str) -> str:
    """The line the host needs so that LOGIN may run our shell as USER without a password."""
    if method == "doas":
        return f"permit nopass {login} as {user} cmd {SHELL}"
    return f"{login} ALL=({user}) NOPASSWD: {SHELL}"


def rule_file(method: str) -> str:
    return "/etc/doas.conf" if method == "doas" else "/etc/sudoers.d/airflow-ssh-async (visudo -f)"


def become_error(
    method: str, login: str, user: str, status: int, stderr: str, *, host: str, job_id: str = ""
) -> BecomeError | None:
    """The error sudo's (doas's) own refusal means, or None when STDERR is not from it.

    sudo and doas exit 1 and say why on stderr, prefixed with their name;
    a login shell that finds no such command exits 127.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = next((line for line in lines if line.startswith(f"{method}: ")), "")
    if status == 127 and not said and any(method in line and "not found" in line for line in lines):
        return BecomeError(
            f"cannot run as {user!r}: the host has no {method} command",
            host=host,
            job_id=job_id,
            hint=f"Install {method} on the host and add `{rule_line(method, login, user)}` to {rule_file(method)}, "
            "or drop become_user.",
        )
    if status != 1 or not said:
        return None
    line = rule_line(method, login, user)
    words = said.lower()
    if "unknown user" in words or "no passwd entry" in words or "unknown login" in words:
        why = f"the user {user!r} does not exist on the host"
        hint = f"Create {user!r} there or fix become_user; then {login!r} needs `{line}` in {rule_file(method)}."
    elif "tty" in words:
        why = f"{method} wants a terminal (requiretty), and jobs run without one"
        hint = (
            f"Add `Defaults>{user} !requiretty` and `{line}` to {rule_file(method)}."
            if method == "sudo"
            else f"Add `{line}` to {rule_file(method)}."
        )
    else:
        why = f"{method} asks for a password or has no rule for it, and jobs never answer a prompt"
        hint = f"Add this line to {rule_file(method)}: `{line}`."
    return BecomeError(
        f"cannot run as {user!r} with {method} -n ({said}): {why}; nothing was run",
        host=host,
        job_id=job_id,
        hint=hint,
    )


def shell_words(argv: Sequence[str]) -> str:
    """ARGV as one line for the login shell: one quoting layer."""
    return shlex.join(list(argv))
