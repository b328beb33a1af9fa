"""airflow-ssh-async: the ops console for jobs started by this provider.

It reads the same Airflow connections as the Airflow CLI (env vars, secrets
backends, the metadata DB) and drives the hook's async API over one SSH
connection per invocation, so what an operator sees here is exactly what the
trigger sees. Exit codes follow the job's state, so shell scripts can branch
on them without parsing output.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import enum
import json
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow_ssh_async import __version__
from airflow_ssh_async.client import (
    RemoteHost,
    presented_host_key,
    remote_host,
)
from airflow_ssh_async.connection import ConnectionConfigError, SSHOptions
from airflow_ssh_async.errors import (
    ConnectionNotFoundError,
    HostKeyError,
    JobNotFoundError,
    SSHAsyncJobError,
    SSHAuthError,
    SSHConnectError,
)
from airflow_ssh_async.job import (
    DEFAULT_ASYNC_DIR,
    JobFacts,
    JobIdError,
    JobState,
    JobStatus,
    ListedJob,
    ProtocolError,
    gc_candidate,
    validate_job_id,
)

if TYPE_CHECKING:  # the hook imports airflow.sdk: only load it when a command runs
    from airflow_ssh_async.hooks import SSHAsyncJobHook

PROG = "airflow-ssh-async"
STATUS_BATCH = 200  # job dirs per status.sh call: stays far below ARG_MAX
READ_CHUNK = 1024 * 1024
KILL_WAIT_EXTRA = 30  # seconds beyond the grace period that `kill --wait` waits


class Exit(enum.IntEnum):
    """Process exit codes; the job-state ones are what `status` returns."""

    OK = 0
    ERROR = 1
    USAGE = 2
    CONNECTION = 3
    FAILED = 4
    KILLED = 5
    TIMED_OUT = 6
    CANCELLED = 7
    LOST = 8
    MISSING = 9
    UNTRUSTED = 10  # host-key printed a key that nothing trusts yet
    INTERRUPTED = 130


STATE_EXIT: dict[JobState, Exit] = {
    JobState.STARTING: Exit.OK,
    JobState.RUNNING: Exit.OK,
    JobState.SUCCEEDED: Exit.OK,
    JobState.FAILED: Exit.FAILED,
    JobState.KILLED: Exit.KILLED,
    JobState.TIMED_OUT: Exit.TIMED_OUT,
    JobState.CANCELLED: Exit.CANCELLED,
    JobState.LOST: Exit.LOST,
    JobState.MISSING: Exit.MISSING,
}

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


# --- small pure helpers ---------------------------------------------------------------

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


def fmt_span(seconds: float | None) -> str:
    """A short human span: 45s, 12m, 3h05m, 2d04h."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_time(epoch: int | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def fmt_exit(status: JobStatus) -> str:
    """What the EXIT column shows: the code, or the signal that ended the job."""
    if status.exit_code is not None:
        return str(status.exit_code)
    if status.signal is not None:
        return signal_name(status.signal)
    return "-"


def job_record(job_id: str, job_dir: str, status: JobStatus, now: float) -> dict[str, Any]:
    """One job as the JSON output shows it (and the text output reads from)."""
    start, end = status.start_time, status.end_time
    return {
        "job_id": job_id,
        "job_dir": job_dir,
        "state": status.state.value,
        "reason": status.reason,
        "pid": status.pid,
        "exit_code": status.exit_code,
        "signal": status.signal,
        "signal_name": signal_name(status.signal) if status.signal is not None else None,
        "start_time": start,
        "end_time": end,
        "age": int(now - start) if start is not None else None,
        "ended_ago": int(now - end) if end is not None else None,
        "duration": int((end if end is not None else now) - start) if start is not None else None,
        "stdout_size": status.sizes.get("stdout"),
        "stderr_size": status.sizes.get("stderr"),
        "progress_size": status.sizes.get("progress"),
    }


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def error_line(message: str) -> None:
    """Every failure is one line on stderr, never a traceback."""
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)


# --- remote queries shared by the commands ------------------------------------------------


async def one_status(hook: SSHAsyncJobHook, host: RemoteHost, job_id: str) -> JobStatus:
    return (await one_status_facts(hook, host, job_id))[0]


async def one_status_facts(hook: SSHAsyncJobHook, host: RemoteHost, job_id: str) -> tuple[JobStatus, JobFacts]:
    d = hook.job_dir(job_id)
    return (await hook.astatus([d], host=host))[d]


def folder_of(hook: SSHAsyncJobHook, job_id: str, facts: JobFacts | None) -> str:
    """A job's folder as an absolute path: what launch recorded, else as status.sh resolved it."""
    if facts is not None:
        return str((facts.job_json or {}).get("job_dir") or facts.path or hook.job_dir(job_id))
    return hook.job_dir(job_id)


def missing_error(hook: SSHAsyncJobHook, job_id: str, label: str) -> JobNotFoundError:
    return JobNotFoundError(
        f"no job directory {hook.job_dir(job_id)}",
        job_id=job_id,
        host=label,
        hint=f"Check the id with `{PROG} jobs {hook.ssh_conn_id}`, and --async-dir if the job "
        "was started with another async_dir.",
    )


# --- commands ----------------------------------------------------------------------------


def _sort_key(e: ListedJob) -> tuple[int, str]:
    start = e.status.start_time if e.status and e.status.start_time is not None else sys.maxsize
    return (start, e.name)


async def cmd_jobs(args: argparse.Namespace, hook: SSHAsyncJobHook, host: RemoteHost) -> int:
    """List every job of the async_dir with state, age, pid and exit code."""
    listing = await hook.alist_jobs(host=host)
    entries = sorted(listing.jobs, key=_sort_key)
    if args.state:
        entries = [e for e in entries if (e.status.state.value if e.status else "error") in args.state]
    if args.json:
        print_json(
            {
                "host": host.options.label,
                "async_dir": listing.async_dir,
                "now": listing.now,
                "jobs": [
                    job_record(e.name, e.job_dir, e.status, listing.now)
                    if e.status
                    else {"job_id": e.name, "job_dir": e.job_dir, "state": "error", "reason": e.error}
                    for e in entries
                ],
            }
        )
        return Exit.OK
    if not entries:
        where = listing.async_dir if listing.exists else f"{listing.async_dir} (does not exist)"
        print(f"no jobs in {where} on {host.options.label}")
        return Exit.OK
    rows = []
    for e in entries:
        if e.status is None:
            rows.append([e.name, "error", "-", "-", "-", "-", e.error])
            continue
        rec = job_record(e.name, e.job_dir, e.status, listing.now)
        rows.append(
            [
                e.name,
                e.status.state.value,
                fmt_span(rec["age"]),
                fmt_span(rec["ended_ago"]),
                str(e.status.pid) if e.status.pid is not None else "-",
                fmt_exit(e.status),
                e.status.reason,
            ]
        )
    print_table(["JOB", "STATE", "AGE", "ENDED", "PID", "EXIT", "REASON"], rows)
    return Exit.OK


async def cmd_status(args: argparse.Namespace, hook: SSHAsyncJobHook, host: RemoteHost) -> int:
    """One job's state; the exit code says it too."""
    status, facts = await one_status_facts(hook, host, args.job)
    # job.json has the absolute path that launch resolved; show that when there is one.
    job_dir = folder_of(hook, args.job, facts)
    # astatus does not return the host's clock; the local one is close enough for spans.
    rec = job_record(args.job, job_dir, status, time.time())
    if args.json:
        print_json({"host": host.options.label, **rec})
    else:
        lines = [
            ("job", args.job),
            ("host", host.options.label),
            ("dir", rec["job_dir"]),
            ("state", f"{status.state.value} ({status.reason})"),
        ]
        if status.state is not JobState.MISSING:
            lines += [
                ("pid", str(status.pid) if status.pid is not None else "-"),
                ("exit", fmt_exit(status)),
                ("started", f"{fmt_time(status.start_time)} ({fmt_span(rec['age'])} ago)"),
                (
                    "ended",
                    f"{fmt_time(status.end_time)} ({fmt_span(rec['ended_ago'])} ago)"
                    if status.end_time is not None
                    else "-",
                ),
                ("duration", fmt_span(rec["duration"])),
                (
                    "output",
                    f"stdout {rec['stdout_size'] or 0} B, stderr {rec['stderr_size'] or 0} B, "
                    f"progress {rec['progress_size'] or 0} B",
                ),
            ]
        for key, value in lines:
            print(f"{key + ':':<10}{value}")
    if status.state is JobState.MISSING:
        error_line(str(missing_error(hook, args.job, host.options.label)))
    return STATE_EXIT[status.state]


class _Sink:
    """Where log bytes go: raw to stdout (byte exact), or JSON lines (UTF-8 safe across reads)."""

    def __init__(self, stream: str, as_json: bool) -> None:
        self.stream = stream
        self.as_json = as_json
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, data: bytes, offset: int) -> None:
        if self.as_json:
            text = self.decoder.decode(data)
            if text:
                print(json.dumps({"stream": self.stream, "offset": offset, "data": text}), flush=True)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    def close(self, offset: int) -> None:
        if self.as_json:
            text = self.decoder.decode(b"", final=True)
            if text:
                print(json.dumps({"stream": self.stream, "offset": offset, "data": text}), flush=True)


async def drain(hook: SSHAsyncJobHook, host: RemoteHost, args: argparse.Namespace, offset: int, sink: _Sink) -> int:
    """Print the stream from OFFSET to its current end; return the new offset."""
    d = hook.job_dir(args.job)
    while True:
        (chunk,) = await hook.aread([(d, args.stream, offset)], max_bytes=READ_CHUNK, host=host)
        if chunk.missing:
            raise missing_error(hook, args.job, host.options.label)
        if chunk.data:
            sink.write(chunk.data, offset)
            offset += len(chunk.data)
        if not chunk.data or offset >= chunk.size:
            return offset


async def cmd_logs(args: argparse.Namespace, hook: SSHAsyncJobHook, host: RemoteHost) -> int:
    """Print a job's output; with --follow, as it grows until the job ends."""
    sink = _Sink(args.stream, args.json)
    offset = 0
    if not args.follow:
        sink.close(await drain(hook, host, args, offset, sink))
        return Exit.OK
    while True:
        # State first, then output: once a finished state is seen, everything
        # the job wrote is on disk, so this drain is the last one needed.
        status, facts = await one_status_facts(hook, host, args.job)
        if status.state is JobState.MISSING:
            raise missing_error(hook, args.job, host.options.label)
        offset = await drain(hook, host, args, offset, sink)
        if status.state.finished:
            sink.close(offset)
            break
        await asyncio.sleep(args.interval)
    summary = f"job {args.job!r} {status.state.value} ({status.reason}) on {host.options.label}"
    if args.json:
        record = job_record(args.job, folder_of(hook, args.job, facts), status, time.time())
        print(json.dumps({"final": True, **record}))
    else:
        print(f"{PROG}: {summary}", file=sys.stderr)
    return STATE_EXIT[status.state]


async def cmd_kill(args: argparse.Namespace, hook: SSHAsyncJobHook, host: RemoteHost) -> int:
    """Cancel a job (SIGTERM to its process group, SIGKILL after the grace period)."""
    outcome = await hook.acancel(hook.job_dir(args.job), grace=args.grace, host=host)
    status: JobStatus | None = None
    facts: JobFacts | None = None
    if args.wait and outcome in ("cancelled", "pending"):
        deadline = time.monotonic() + args.grace + KILL_WAIT_EXTRA
        while True:
            status, facts = await one_status_facts(hook, host, args.job)
            if status.state.finished or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    still_running = status is not None and not status.state.finished
    if args.json:
        record = job_record(args.job, folder_of(hook, args.job, facts), status, time.time()) if status else {}
        print_json({"host": host.options.label, "job_id": args.job, "outcome": outcome, **record})
    else:
        text = {
            "cancelled": f"cancel requested (SIGTERM sent to its process group, SIGKILL after {args.grace} s "
            "if it still runs)",
            "finished": "had already finished; nothing to kill",
            "gone": "is lost: its process is gone or no longer ours; nothing to kill",
            "pending": "had not finished launching: the cancel is recorded and its supervisor stops it as it starts",
        }.get(outcome, outcome)
        print(f"job {args.job!r} on {host.options.label}: {text}")
        if status is not None:
            print(f"job {args.job!r}: {status.state.value} ({status.reason})")
    if still_running:
        error_line(
            f"job {args.job!r} on {host.options.label} is still running {args.grace + KILL_WAIT_EXTRA} s "
            f"after the cancel; check it with `{PROG} status {hook.ssh_conn_id} {args.job}`"
        )
        return Exit.ERROR
    return Exit.OK


async def cmd_gc(args: argparse.Namespace, hook: SSHAsyncJobHook, host: RemoteHost) -> int:
    """Remove finished job folders, and archived attempts, whose end is older than --older-than."""
    listing = await hook.alist_jobs(attempts=True, host=host)
    cutoff = listing.now - args.older_than
    entries = listing.jobs
    candidates = [(e, st) for e in entries if (st := e.status) is not None and gc_candidate(e, cutoff)]
    removed: list[str] = []
    skipped: dict[str, str] = {}
    if not args.dry_run and candidates:
        # Ask again right before deleting: a job relaunched under the same id
        # since the listing is a new attempt, and must be left alone.
        again = {e.name: e for e in await hook.astatus_listed([e for e, _ in candidates], host=host)}
        for e, status in candidates:
            fresh = again.get(e.name)
            if fresh is None or not gc_candidate(fresh, cutoff) or _started(fresh) != status.start_time:
                skipped[e.name] = "changed since the listing"
                continue
            try:
                await hook.aarchive(e.job_dir, remove=True, host=host)
                removed.append(e.name)
            except SSHConnectError:
                raise
            except SSHAsyncJobError as exc:  # e.g. it was relaunched and runs: archive.sh refuses
                skipped[e.name] = str(exc)
    copies = (
        await hook.asupervisor_copies(listing.async_dir, remove=not args.dry_run, host=host) if listing.exists else {}
    )
    if args.json:
        print_json(
            {
                "host": host.options.label,
                "async_dir": listing.async_dir,
                "older_than": args.older_than,
                "dry_run": args.dry_run,
                "candidates": [job_record(e.name, e.job_dir, status, listing.now) for e, status in candidates],
                "removed": removed,
                "skipped": skipped,
                "supervisor_copies": copies,
            }
        )
    else:
        verb = "would remove" if args.dry_run else "removed"
        for e, status in candidates:
            if args.dry_run or e.name in removed:
                print(f"{verb} {e.name} ({status.state.value}, ended {fmt_span(_ended_ago(e, listing.now))} ago)")
        for job_id, why in skipped.items():
            print(f"skipped {job_id}: {why}")
        for copy_id, state in copies.items():
            folder = f"{listing.async_dir}/{SUPERVISOR_DIR}/{copy_id}"
            print(f"{COPY_STATES.get(state, state)}: {folder} (the supervisor of another version)")
        count = len(candidates) if args.dry_run else len(removed)
        print(
            f"{verb} {count} job folder(s) older than {fmt_span(args.older_than)} in {listing.async_dir} "
            f"on {host.options.label}"
        )
    failed = any(why != "changed since the listing" for why in skipped.values()) or "failed" in copies.values()
    return Exit.ERROR if failed else Exit.OK


SUPERVISOR_DIR = ".supervisor"
COPY_STATES = {
    "unused": "would remove",
    "removed": "removed",
    "in_use": "kept, a running job uses it",
    "unknown": "kept, this host has no /proc to tell whether a job uses it",
    "failed": "could not remove",
}


def _started(e: ListedJob) -> int | None:
    return e.status.start_time if e.status else None


def _ended_ago(e: ListedJob, now: int) -> int | None:
    """Age that gc measures: from the end, or from the start for a lost job."""
    status = e.status
    ref = None if status is None else status.end_time if status.end_time is not None else status.start_time
    return now - ref if ref is not None else None


async def cmd_host_key(args: argparse.Namespace, hook: SSHAsyncJobHook, host: RemoteHost) -> int:
    """Print the key the host presents, to be checked and pinned; never trust it here."""
    options = host.options
    key = await presented_host_key(options)
    if args.json:
        print_json(
            {
                "host": options.label,
                "algorithm": key.algorithm,
                "fingerprint": key.fingerprint,
                "host_key": key.host_key,
                "known_hosts_line": key.known_hosts_line,
                "trusted_by": key.trusted_by or None,
            }
        )
    else:
        print(f"host:        {options.label}")
        print(f"key:         {key.algorithm} {key.fingerprint}")
        print(f"host_key:    {key.host_key}")
        print(f"known_hosts: {key.known_hosts_line}")
    if key.trusted_by:
        note = f"{key.trusted_by} already trusts this key; this command changed nothing."
    else:
        where = options.known_hosts or "~/.ssh/known_hosts of the user running Airflow"
        note = (
            "nothing trusts this key yet, and this command wrote nothing. Check the fingerprint "
            f"{key.fingerprint} against the host's own (run `ssh-keygen -lf /etc/ssh/ssh_host_{_key_file_type(key)}"
            "_key.pub` on the host, or ask its administrator), then set the connection's host_key extra to the "
            f"host_key value above, or append the known_hosts line to {where}."
        )
    print(f"{PROG}: {note}", file=sys.stderr)
    return Exit.UNTRUSTED


def _key_file_type(key: Any) -> str:
    """ssh-ed25519 -> ed25519, ecdsa-sha2-nistp256 -> ecdsa: the host key file's name part."""
    algorithm = str(key.algorithm)
    return "ecdsa" if algorithm.startswith("ecdsa") else algorithm.removeprefix("ssh-")


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


def make_hook(conn_id: str, async_dir: str) -> SSHAsyncJobHook:
    from airflow_ssh_async.hooks import SSHAsyncJobHook

    return SSHAsyncJobHook(conn_id, async_dir=async_dir)


async def run_command(fn: Command, args: argparse.Namespace, hook: SSHAsyncJobHook, options: SSHOptions) -> int:
    """One SSH connection for the whole invocation."""
    async with remote_host(options) as host:
        return await fn(args, hook, host)


def exit_code_for(exc: BaseException) -> Exit:
    if isinstance(exc, (ConnectionNotFoundError, SSHConnectError, SSHAuthError, HostKeyError, ConnectionConfigError)):
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
        hook = make_hook(args.conn_id, getattr(args, "async_dir", DEFAULT_ASYNC_DIR))
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
