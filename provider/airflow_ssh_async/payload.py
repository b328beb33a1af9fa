"""The launch payload: what launch.sh reads on stdin (working folder, environment, supervisor, command)."""

from __future__ import annotations

import hashlib
import re
import shlex

from airflow_ssh_async.frames import PROTOCOL

ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def validate_env_name(name: object) -> str:
    """Refuse a variable name that `export` would not take (or would run as code)."""
    if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid environment variable name {name!r}: use letters, digits and '_', not starting with a digit"
        )
    return name


def env_exports(environment: dict[str, str]) -> bytes:
    """The env file: one `export NAME='value'` a variable, one quoting layer."""
    lines = [f"export {validate_env_name(name)}={shlex.quote(str(value))}\n" for name, value in environment.items()]
    return "".join(lines).encode()


def supervisor_id(supervisor: bytes) -> str:
    """The name of a supervisor's shared copy: ASYNC_DIR/.supervisor/ID/supervise.sh."""
    return hashlib.sha256(supervisor).hexdigest()[:16]


def launch_payload(command: str, environment: dict[str, str], cwd: str, supervisor: bytes) -> bytes:
    """What the launcher reads on stdin: a header of lengths, then the parts.

    The header ends with the supervisor's content hash: the host keeps one
    copy of each supervisor per async_dir under that name, so a launch
    writes it only the first time (every process there is launch latency).
    """
    cwd_b = cwd.encode()
    env_b = env_exports(environment)
    cmd_b = command.encode()  # verbatim: the command file is exactly what the user wrote
    sup_id = supervisor_id(supervisor)
    lengths = f"{len(cwd_b)} {len(env_b)} {len(supervisor)} {len(cmd_b)}"
    header = f"airflow-ssh-async-payload {PROTOCOL} {lengths} {sup_id}\n"
    return header.encode() + cwd_b + env_b + supervisor + cmd_b
