"""The commands of `airflow-ssh-async`: each asks the hook, then prints.

Every remote question goes through :class:`SSHAsyncJobHook` (listing,
status, output, cancel, archive), so what the console shows is what a
trigger sees; cli_output.py does the printing, cli.py the arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import time
from typing import TYPE_CHECKING, Any

from airflow_ssh_async.cli_output import (
    PROG,
    LogSink,
    Sweep,
    error_line,
    kill_text,
    note,
    print_gc,
    print_jobs,
    print_json,
    print_json_line,
    print_status,
)
from airflow_ssh_async.client import RemoteHost, presented_host_key
from airflow_ssh_async.errors import JobNotFoundError, SSHAsyncJobError, SSHConnectError
from airflow_ssh_async.job import JobFacts, JobRef, JobState, JobStatus, ListedJob, gc_candidate, job_record

if TYPE_CHECKING:  # the hook imports airflow.sdk: only load it when a command runs
    from airflow_ssh_async.hooks import SSHAsyncJobHook

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


# --- what the commands share -------------------------------------------------------------


async def one_status(hook: SSHAsyncJobHook, host: RemoteHost, job_id: str) -> tuple[JobStatus, JobFacts]:
    d = hook.job_dir(job_id)
    return (await hook.astatus([d], host=host))[d]


def folder_of(hook: SSHAsyncJobHook, job_id: str, facts: JobFacts | None) -> str:
    """A job's folder as an absolute path: what launch recorded, else as status.sh resolved it."""
    if facts is not None:
        return str((facts.job_json or {}).get("job_dir") or facts.path or hook.job_dir(job_id))
    return hook.job_dir(job_id)


def record_of(host: RemoteHost, name: str, job_dir: str, status: JobStatus, now: float) -> dict[str, Any]:
    """The JSON of one job: the result dict's shape (job.job_record)."""
    return job_record(JobRef(host.options.conn_id, name, job_dir, host.options.address), status, now)


def listed_record(host: RemoteHost, e: ListedJob, now: float) -> dict[str, Any]:
    """A listed job's JSON; one whose files are damaged has state `error` and the reason."""
    if e.status is None:
        return {"job_id": e.name, "job_dir": e.job_dir, "state": "error", "reason": e.error}
    return record_of(host, e.name, e.job_dir, e.status, now)


def missing_error(hook: SSHAsyncJobHook, job_id: str, label: str) -> JobNotFoundError:
    return JobNotFoundError(
        f"no job directory {hook.job_dir(job_id)}",
        job_id=job_id,
        host=label,
        hint=f"Check the id with `{PROG} jobs {hook.ssh_conn_id}`, and --async-dir if the job "
        "was started with another async_dir.",
    )


# --- commands ----------------------------------------------------------------------------


def _oldest_first(e: ListedJob) -> tuple[float, str]:
    start = e.status.start_time if e.status and e.status.start_time is not None else float("inf")
    return (start, e.name)


async def cmd_jobs(args: argparse.Namespace, hook: SSHAsyncJobHook, host: RemoteHost) -> int:
    """List every job of the async_dir with state, age, pid and exit code."""
    listing = await hook.alist_jobs(host=host)
    entries = sorted(listing.jobs, key=_oldest_first)
    if args.state:
        entries = [e for e in entries if (e.status.state.value if e.status else "error") in args.state]
    if args.json:
        jobs = [listed_record(host, e, listing.now) for e in entries]
        print_json({"host": host.options.label, "async_dir": listing.async_dir, "now": listing.now, "jobs": jobs})
    elif not entries:
        where = listing.async_dir if listing.exists else f"{listing.async_dir} (does not exist)"
        print(f"no jobs in {where} on {host.options.label}")
    else:
        print_jobs(entries, listing.now)
    return Exit.OK


async def cmd_status(args: argparse.Namespace, hook: SSHAsyncJobHook, host: RemoteHost) -> int:
    """One job's state; the exit code says it too."""
    status, facts = await one_status(hook, host, args.job)
    # job.json has the absolute path that launch resolved; show that when there is one.
    job_dir = folder_of(hook, args.job, facts)
    # astatus does not return the host's clock; the local one is close enough for spans.
    now = time.time()
    if args.json:
        print_json(record_of(host, args.job, job_dir, status, now))
    else:
        print_status(args.job, host.options.label, job_dir, status, now)
    if status.state is JobState.MISSING:
        error_line(str(missing_error(hook, args.job, host.options.label)))
    return STATE_EXIT[status.state]


async def drain(hook: SSHAsyncJobHook, host: RemoteHost, args: argparse.Namespace, offset: int, sink: LogSink) -> int:
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
    sink = LogSink(args.stream, args.json)
    offset = 0
    if not args.follow:
        sink.close(await drain(hook, host, args, offset, sink))
        return Exit.OK
    while True:
        # State first, then output: once a finished state is seen, everything
        # the job wrote is on disk, so this drain is the last one needed.
        status, facts = await one_status(hook, host, args.job)
        if status.state is JobState.MISSING:
            raise missing_error(hook, args.job, host.options.label)
        offset = await drain(hook, host, args, offset, sink)
        if status.state.finished:
            sink.close(offset)
            break
        await asyncio.sleep(args.interval)
    if args.json:
        record = record_of(host, args.job, folder_of(hook, args.job, facts), status, time.time())
        print_json_line({"final": True, **record})
    else:
        note(f"job {args.job!r} {status.state.value} ({status.reason}) on {host.options.label}")
    return STATE_EXIT[status.state]


async def cmd_kill(args: argparse.Namespace, hook: SSHAsyncJobHook, host: RemoteHost) -> int:
    """Cancel a job (SIGTERM to its process group, SIGKILL after the grace period)."""
    outcome = await hook.acancel(hook.job_dir(args.job), grace=args.grace, host=host)
    status: JobStatus | None = None
    facts: JobFacts | None = None
    if args.wait and outcome in ("cancelled", "pending"):
        deadline = time.monotonic() + args.grace + KILL_WAIT_EXTRA
        while True:
            status, facts = await one_status(hook, host, args.job)
            if status.state.finished or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    still_running = status is not None and not status.state.finished
    if args.json:
        record = record_of(host, args.job, folder_of(hook, args.job, facts), status, time.time()) if status else {}
        print_json({"job_id": args.job, "host": host.options.address, "outcome": outcome, **record})
    else:
        print(f"job {args.job!r} on {host.options.label}: {kill_text(outcome, args.grace)}")
        if status is not None:
            print(f"job {args.job!r}: {status.state.value} ({status.reason})")
    if still_running:
        error_line(
            f"job {args.job!r} on {host.options.label} is still running {args.grace + KILL_WAIT_EXTRA} s "
            f"after the cancel; check it with `{PROG} status {hook.ssh_conn_id} {args.job}`"
        )
        return Exit.ERROR
    return Exit.OK


CHANGED = "changed since the listing"


async def cmd_gc(args: argparse.Namespace, hook: SSHAsyncJobHook, host: RemoteHost) -> int:
    """Remove finished job folders, and archived attempts, whose end is older than --older-than."""
    listing = await hook.alist_jobs(attempts=True, host=host)
    cutoff = listing.now - args.older_than
    sweep = Sweep([e for e in listing.jobs if gc_candidate(e, cutoff)])
    if not args.dry_run and sweep.candidates:
        # Ask again right before deleting: a job relaunched under the same id
        # since the listing is a new attempt, and must be left alone.
        again = {e.name: e for e in await hook.astatus_listed(sweep.candidates, host=host)}
        for e in sweep.candidates:
            fresh = again.get(e.name)
            if fresh is None or not gc_candidate(fresh, cutoff) or _started(fresh) != _started(e):
                sweep.skipped[e.name] = CHANGED
                continue
            try:
                await hook.aarchive(e.job_dir, remove=True, host=host)
                sweep.removed.append(e.name)
            except SSHConnectError:
                raise
            except SSHAsyncJobError as exc:  # e.g. it was relaunched and runs: archive.sh refuses
                sweep.skipped[e.name] = str(exc)
    if listing.exists:
        sweep.copies = await hook.asupervisor_copies(listing.async_dir, remove=not args.dry_run, host=host)
    if args.json:
        print_json(
            {
                "host": host.options.label,
                "async_dir": listing.async_dir,
                "older_than": args.older_than,
                "dry_run": args.dry_run,
                "candidates": [listed_record(host, e, listing.now) for e in sweep.candidates],
                "removed": sweep.removed,
                "skipped": sweep.skipped,
                "supervisor_copies": sweep.copies,
            }
        )
    else:
        print_gc(sweep, listing, dry_run=args.dry_run, older_than=args.older_than, label=host.options.label)
    failed = any(why != CHANGED for why in sweep.skipped.values()) or "failed" in sweep.copies.values()
    return Exit.ERROR if failed else Exit.OK


def _started(e: ListedJob) -> int | None:
    return e.status.start_time if e.status else None


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
        note(f"{key.trusted_by} already trusts this key; this command changed nothing.")
    else:
        where = options.known_hosts or "~/.ssh/known_hosts of the user running Airflow"
        note(
            "nothing trusts this key yet, and this command wrote nothing. Check the fingerprint "
            f"{key.fingerprint} against the host's own (run `ssh-keygen -lf /etc/ssh/ssh_host_{_key_file_type(key)}"
            "_key.pub` on the host, or ask its administrator), then set the connection's host_key extra to the "
            f"host_key value above, or append the known_hosts line to {where}."
        )
    return Exit.UNTRUSTED


def _key_file_type(key: Any) -> str:
    """ssh-ed25519 -> ed25519, ecdsa-sha2-nistp256 -> ecdsa: the host key file's name part."""
    algorithm = str(key.algorithm)
    return "ecdsa" if algorithm.startswith("ecdsa") else algorithm.removeprefix("ssh-")
