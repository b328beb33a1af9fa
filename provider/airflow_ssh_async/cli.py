"""airflow-ssh-async: the ops console for jobs started by this provider.

It reads the same Airflow connections as the Airflow CLI (env vars, secrets
backends, the metadata DB) and drives the hook's async API over one SSH
connection per invocation, so what an operator sees here is exactly what the
trigger sees. Exit codes follow the job's state, so shell scripts can branch
on them without parsing output.

This module parses the arguments and maps errors to exit codes; the
commands are in cli_commands.py and the printing in cli_output.py.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from airflow_ssh_async import __version__
from airflow_ssh_async.become import BecomeError
from airflow_ssh_async.cli_commands import (
    Exit,
    cmd_gc,
    cmd_host_key,
    cmd_jobs,
    cmd_kill,
    cmd_logs,
    cmd_status,
)
from airflow_ssh_async.cli_output import PROG, error_line
from airflow_ssh_async.client import RemoteHost, remote_host
from airflow_ssh_async.connection import ConnectionConfigError, SSHOptions
from airflow_ssh_async.errors import (
    ConnectionNotFoundError,
    HostKeyError,
    JobNotFoundError,
    SSHAsyncJobError,
    SSHAuthError,
    SSHConnectError,
)
from airflow_ssh_async.job import DEFAULT_ASYNC_DIR, JobIdError, JobState, ProtocolError, validate_job_id

if TYPE_CHECKING:  # the hook imports airflow.sdk: only load it when a command runs
    from airflow_ssh_async.hooks import SSHAsyncJobHook


EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "jobs": [
        ("jobs ssh_batch", "list jobs, newest last"),
        ("jobs ssh_batch --state running", "only the running ones"),
        ("jobs ssh_batch --async-dir /data/async --json", ""),
    ],
    "status": [("status ssh_batch nightly-migrate", "state, pid, exit code, times")],
    "logs": [
        ("logs ssh_batch nightly-migrate --follow", "until it ends; exits with its state"),
        ("logs ssh_batch nightly-migrate --stderr", ""),
    ],
    "kill": [
        ("kill ssh_batch nightly-migrate --wait", "SIGKILL 10 s after SIGTERM"),
        ("kill ssh_batch nightly-migrate --grace 1", "SIGKILL after 1 s, whatever the launch said"),
    ],
    "gc": [
        ("gc ssh_batch --older-than 7d --dry-run", "what would go"),
        ("gc ssh_batch --older-than 7d", ""),
    ],
    "host-key": [("host-key ssh_batch", "print the host's key to check and pin; trusts nothing")],
}

ABOUT = f"""\
CONN is an Airflow connection id of type ssh, looked up like the Airflow CLI
does (AIRFLOW_CONN_<ID>, secrets backends, the metadata DB). JOB is a job id;
its folder is ASYNC_DIR/JOB on the host (default --async-dir {DEFAULT_ASYNC_DIR}).
"""

EXIT_CODES = """\
exit codes:
  0  success; for status and logs --follow: the job succeeded (status: or is
     still running or starting)
  1  other error (a remote script failed, a job file is damaged)
  2  usage error (bad arguments, invalid job id)
  3  SSH or connection error (unknown connection, unreachable host, auth,
     host key)
  4  the job failed (exited non-zero)
  5  the job was killed by a signal
  6  the job hit its time limit (timed_out)
  7  the job was cancelled
  8  the job is lost (no result and its supervisor is gone, or the host
     rebooted)
  9  no such job (missing)
  10 host-key: the key was printed, and nothing trusts it yet
  130 interrupted (Ctrl-C)
jobs, logs (without --follow), kill and gc exit 0 on success; kill also when
the job had already ended; kill --wait exits 1 if the job still runs after
the grace period plus 30 s; gc exits 1 if a folder could not be removed.
"""


def examples(*commands: str) -> str:
    """The examples of COMMANDS, aligned, as the help's epilog starts."""
    rows = [(f"{PROG} {line}", note) for c in commands for line, note in EXAMPLES[c]]
    width = max(len(line) for line, _ in rows) + 2
    return "examples:\n" + "".join(f"  {line:<{width}}{note}".rstrip() + "\n" for line, note in rows)


EPILOG = f"{examples(*EXAMPLES)}\n{ABOUT}\n{EXIT_CODES}"


# --- argument types ------------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """`7d`, `12h`, `30m`, `45s`, `2w` or plain seconds -> seconds (argparse type)."""
    match = _DURATION_RE.fullmatch(text.strip().lower())
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use a number and s, m, h, d or w, e.g. 7d")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def job_id_arg(text: str) -> str:
    """Refuse a bad job id as a usage error, before any SSH call."""
    try:
        return validate_job_id(text)
    except JobIdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --- argument parsing and the run loop -------------------------------------------------------


Command = Callable[[argparse.Namespace, "SSHAsyncJobHook", RemoteHost], Awaitable[int]]


def build_parser() -> argparse.ArgumentParser:
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("conn_id", metavar="CONN", help="Airflow connection id (type ssh)")
    conn.add_argument("--json", action="store_true", help="machine-readable output")
    common = argparse.ArgumentParser(add_help=False, parents=[conn])
    common.add_argument(
        "--async-dir",
        default=DEFAULT_ASYNC_DIR,
        metavar="D",
        help=f"the job folders' parent on the host, as given to the operator (default {DEFAULT_ASYNC_DIR})",
    )
    common.add_argument(
        "--become-user",
        default=None,
        metavar="USER",
        help="the jobs' user, as given to the operator (become_user): every command runs as it through "
        "sudo -n (or doas -n); default: the connection's become_user extra",
    )
    common.add_argument(
        "--become-method",
        default=None,
        choices=["sudo", "doas"],
        help="how to become --become-user (default: the connection's become_method extra, else sudo)",
    )
    job = argparse.ArgumentParser(add_help=False)
    job.add_argument("job", metavar="JOB", type=job_id_arg, help="job id")

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect and manage detached jobs started on remote hosts by airflow-provider-ssh-async.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Command, help_text: str, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            parents=parents,
            help=help_text,
            description=help_text,
            epilog=f"{examples(name)}\n{ABOUT}\n{EXIT_CODES}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=fn)
        return p

    p = add("jobs", cmd_jobs, "list jobs with state, age, pid and exit code", [common])
    p.add_argument(
        "--state",
        action="append",
        metavar="STATE",
        choices=[s.value for s in JobState if s is not JobState.MISSING] + ["error"],
        help="show only jobs in this state (repeatable)",
    )
    add("status", cmd_status, "show one job's state; the exit code follows it", [common, job])
    p = add("logs", cmd_logs, "print a job's stdout (or stderr)", [common, job])
    p.add_argument(
        "--stderr",
        dest="stream",
        action="store_const",
        const="stderr",
        default="stdout",
        help="print stderr instead of stdout",
    )
    p.add_argument(
        "--progress",
        dest="stream",
        action="store_const",
        const="progress",
        help="print the progress file instead of stdout",
    )
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing as the output grows until the job ends; exit with its state's code",
    )
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="poll interval for --follow")
    p = add(
        "kill", cmd_kill, "cancel a job: SIGTERM to its process group, SIGKILL after the grace period", [common, job]
    )
    p.add_argument(
        "--grace",
        type=int,
        default=10,
        metavar="SECONDS",
        help="SIGTERM to SIGKILL delay (default 10); wins over the grace the job was launched with",
    )
    p.add_argument("--wait", action="store_true", help="wait until the job has ended and show its final state")
    p = add(
        "gc",
        cmd_gc,
        "remove finished job folders and archived attempts whose end is older than --older-than (never a running one)",
        [common],
    )
    p.add_argument(
        "--older-than",
        type=parse_duration,
        required=True,
        metavar="AGE",
        help="e.g. 7d, 12h, 30m, 2w; lost jobs (no end time) count from their start",
    )
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    add(
        "host-key",
        cmd_host_key,
        "print the key the host presents, its SHA256 fingerprint and the exact host_key value and known_hosts "
        "line, without trusting it (exit 10: nothing trusts it yet)",
        [conn],
    )
    return parser


def make_hook(
    conn_id: str, async_dir: str, become_user: str | None = None, become_method: str | None = None
) -> SSHAsyncJobHook:
    from airflow_ssh_async.hooks import SSHAsyncJobHook

    return SSHAsyncJobHook(conn_id, async_dir=async_dir, become_user=become_user, become_method=become_method)


async def run_command(fn: Command, args: argparse.Namespace, hook: SSHAsyncJobHook, options: SSHOptions) -> int:
    """One SSH connection for the whole invocation."""
    async with remote_host(options) as host:
        return await fn(args, hook, host)


def exit_code_for(exc: BaseException) -> Exit:
    if isinstance(
        exc,
        (ConnectionNotFoundError, SSHConnectError, SSHAuthError, HostKeyError, ConnectionConfigError, BecomeError),
    ):
        return Exit.CONNECTION
    if isinstance(exc, JobNotFoundError):
        return Exit.MISSING
    if isinstance(exc, JobIdError):
        return Exit.USAGE
    return Exit.ERROR


def with_job(exc: SSHAsyncJobError, args: argparse.Namespace) -> SSHAsyncJobError:
    """Add what a person at a shell can do about an unknown job."""
    if not isinstance(exc, JobNotFoundError) or exc.hint:
        return exc
    message = exc.stderr.removeprefix("airflow-ssh-async: error: ") or f"remote command exited {exc.code}"
    hint = f"Check the id with `{PROG} jobs {args.conn_id}`, and --async-dir."
    job_id = exc.job_id or getattr(args, "job", None) or ""
    return type(exc)(message, code=exc.code, stderr=exc.stderr, host=exc.host, job_id=job_id, hint=hint)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    label = f"connection {args.conn_id!r}"
    try:
        hook = make_hook(
            args.conn_id,
            getattr(args, "async_dir", DEFAULT_ASYNC_DIR),
            getattr(args, "become_user", None),
            getattr(args, "become_method", None),
        )
        options = hook.get_options()  # sync lookup, before the event loop starts
        label = options.label
        return int(asyncio.run(run_command(args.func, args, hook, options)))
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except BrokenPipeError:
        # `... | head` closed the pipe: not an error; keep Python from complaining at exit.
        sys.stdout = open("/dev/null", "w")  # noqa: SIM115
        return Exit.OK
    except SSHAsyncJobError as exc:
        error_line(str(with_job(exc, args)))
        return exit_code_for(exc)
    except (ConnectionConfigError, ProtocolError, JobIdError) as exc:
        job = f", job {args.job!r}" if getattr(args, "job", None) else ""
        hint = ". Fix the job's files on the host, or remove the folder" if isinstance(exc, ProtocolError) else ""
        error_line(f"{exc}{job}, on {label}{hint}")
        return exit_code_for(exc)
    except Exception as exc:  # an ops tool prints one line, never a traceback
        job = f", job {args.job!r}" if getattr(args, "job", None) else ""
        error_line(f"unexpected {type(exc).__name__}: {exc}{job}, on {label}")
        return Exit.ERROR


if __name__ == "__main__":
    sys.exit(main())
