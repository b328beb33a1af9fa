"""SSHAsyncJobHook: launch, status, output, cancel and clean up remote jobs.

Async first (the trigger's path); the operator and the ops command use the
same coroutines through thin sync wrappers, so there is one SSH stack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, TypeVar

from airflow.sdk.bases.hook import BaseHook

from airflow_ssh_async.client import (
    ARG_SEPARATOR,
    DEFAULT_COMMAND_TIMEOUT,
    RemoteHost,
    remote_host,
    supervisor_program,
)
from airflow_ssh_async.connection import SSHOptions, become_options, options_from_connection
from airflow_ssh_async.errors import ConnectionNotFoundError, RemoteWriteError, SSHAsyncJobError
from airflow_ssh_async.job import (
    ARCHIVE_DIR,
    DEFAULT_ASYNC_DIR,
    DEFAULT_OUTPUT_LIMIT,
    TAIL_BYTES,
    JobFacts,
    JobListing,
    JobRef,
    JobStatus,
    ListedJob,
    ProtocolError,
    build_result,
    classify,
    job_dir_in,
    launch_payload,
    parse_frames,
    parse_listing,
    parse_status,
    parse_supervisor_copies,
    supervisor_id,
    validate_job_id,
)
from airflow_ssh_async.masking import Masker

T = TypeVar("T")
STREAMS = ("stdout", "stderr", "progress")
DEFAULT_GRACE = 10
# What a cancel may take beyond its grace: connecting, and signal.sh's own
# work. signal.sh itself waits up to grace (when the supervisor is gone)
# before its SIGKILL, so a bound on the whole cancel must follow grace.
CANCEL_MARGIN = 25.0
DEFAULT_CHUNK = 4 * 1024 * 1024
# One output call's reply holds at most this much, shared fairly between its
# requests (never less than MIN_SHARE each: a batch of more requests than
# REPLY_BUDGET // MIN_SHARE is read in several calls). A backlog is read
# over several calls.
REPLY_BUDGET = 8 * 1024 * 1024
MIN_SHARE = 16 * 1024


def cancel_bound(grace: float) -> float:
    """How long to wait for a cancel with this grace before giving up on it."""
    return max(0.0, float(grace)) + CANCEL_MARGIN


@dataclass(frozen=True)
class Launched:
    """What a successful launch tells: where the job lives and its pids.

    The supervisor reports before it writes job.json (launch latency), so
    this is what a caller may rely on at once; job.json follows shortly.
    """

    job_id: str
    job_dir: str
    pid: int
    start_time: int
    supervisor_pid: int


class ReadRequest(NamedTuple):
    """Bytes of one stream of one job from OFFSET, at most MAX_BYTES.

    With a LOG_KEY (the task log the bytes go to) the host records how far
    that log got (LOGGED: the lines the watcher has handed to the log, never
    what it is being sent) and what was read, so a watcher that starts again
    continues where it stopped (see output.sh).
    """

    job_dir: str
    stream: str
    offset: int
    max_bytes: int = DEFAULT_CHUNK
    log_key: str = ""
    logged: int = 0


@dataclass(frozen=True)
class Chunk:
    """Bytes of one stream from an offset, and the stream's size when read.

    ``shrunk``: the file is shorter than the offset (the job rewrote it);
    ``size`` is then its size now.
    """

    data: bytes
    size: int
    missing: bool = False
    shrunk: bool = False


@dataclass(frozen=True)
class StatusWait:
    """How long a status call may wait on the host (status.sh --wait).

    It returns when a watched job ends, after ``max_seconds``, or, once
    ``grow_after`` seconds have passed (None: never), when the jobs'
    streams together are no longer ``known_total`` bytes (None: their size
    when the wait began).
    """

    max_seconds: int
    grow_after: int | None = None
    known_total: int | None = None

    def args(self) -> list[str]:
        grow = "-1" if self.grow_after is None else str(max(0, int(self.grow_after)))
        known = "-" if self.known_total is None else str(int(self.known_total))
        return ["--wait", str(max(0, int(self.max_seconds))), grow, known]


def share_budget(requests: Sequence[ReadRequest], budget: int = REPLY_BUDGET) -> list[list[ReadRequest]]:
    """REQUESTS in calls whose replies stay within BUDGET bytes, each request
    capped at an equal share (at least MIN_SHARE) of its call's budget."""
    per_call = max(1, budget // MIN_SHARE)
    calls = [list(requests[i : i + per_call]) for i in range(0, len(requests), per_call)]
    return [[r._replace(max_bytes=min(r.max_bytes, budget // len(call))) for r in call] for call in calls]


def _folder_id(job_dir: str) -> str:
    """The job id a folder is named by; ASYNC_DIR/.archive/ID/N is an earlier attempt of ID."""
    parts = job_dir.rstrip("/").split("/")
    if len(parts) >= 3 and parts[-3] == ARCHIVE_DIR:
        return f"{parts[-2]} (archived attempt {parts[-1]})"
    return parts[-1]


def _ids(job_dirs: Iterable[str]) -> str:
    """The job ids that errors about these folders name."""
    return ", ".join(dict.fromkeys(_folder_id(d) for d in job_dirs))


class SSHAsyncJobHook(BaseHook):
    """Drive detached jobs on a host named by an Airflow `ssh` connection.

    :param ssh_conn_id: an Airflow connection of type ``ssh``.
    :param async_dir: where job folders live on the host; ``~`` is the SSH
        user's home (the become user's, with one), resolved on the host.
    :param become_user: run every remote script, and so the job, as this
        user (``sudo -n`` / ``doas -n``; see become.py); None or "" takes the
        connection's ``become_user`` extra, if any.
    :param become_method: ``sudo`` (default) or ``doas``; None takes the
        connection's extra.
    """

    conn_name_attr = "ssh_conn_id"
    default_conn_name = "ssh_default"
    conn_type = "ssh"
    hook_name = "SSH async job"

    def __init__(
        self,
        ssh_conn_id: str = default_conn_name,
        async_dir: str = DEFAULT_ASYNC_DIR,
        become_user: str | None = None,
        become_method: str | None = None,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.async_dir = async_dir or DEFAULT_ASYNC_DIR
        self.become_user = become_user or None
        self.become_method = become_method or None
        # Checked before any connection lookup: a typo fails at once.
        become_options(self.become_user, self.become_method, ssh_conn_id)
        if ARG_SEPARATOR in self.async_dir:
            # Batches carry job folders on stdin, one ended by this byte.
            raise SSHAsyncJobError(
                f"async_dir {self.async_dir!r} holds the control byte 0x1f (connection {ssh_conn_id!r})",
                hint="Any other byte may be in async_dir: choose one without 0x1f.",
            )
        self._options: SSHOptions | None = None

    # --- connection -------------------------------------------------------------

    def _not_found(self, exc: Exception) -> ConnectionNotFoundError:
        return ConnectionNotFoundError(
            f"Airflow connection {self.ssh_conn_id!r} is not defined ({exc})",
            hint="Create it (type ssh) in the UI, with `airflow connections add`, or as "
            f"AIRFLOW_CONN_{self.ssh_conn_id.upper()}.",
        )

    def get_options(self) -> SSHOptions:
        if self._options is None:
            try:
                conn = self.get_connection(self.ssh_conn_id)
            except Exception as exc:  # the SDK raises AirflowNotFoundException; keep the cause
                raise self._not_found(exc) from exc
            self._options = self._with_become(options_from_connection(conn))
        return self._options

    def _with_become(self, options: SSHOptions) -> SSHOptions:
        """The connection's options with this hook's become_user/become_method, which win over its extras."""
        if self.become_user is None and self.become_method is None:
            return options
        user = self.become_user or options.become_user
        method = self.become_method or options.become_method
        return replace(options, **become_options(user, method, self.ssh_conn_id))

    async def aget_options(self) -> SSHOptions:
        """The options, fetched without blocking the event loop."""
        if self._options is None:
            try:
                conn = await self.aget_connection(self.ssh_conn_id)
            except Exception as exc:
                raise self._not_found(exc) from exc
            self._options = self._with_become(options_from_connection(conn))
        return self._options

    def job_dir(self, job_id: str) -> str:
        return job_dir_in(self.async_dir, job_id)

    async def _with_host(self, fn: Callable[[RemoteHost], Awaitable[T]]) -> T:
        async with remote_host(await self.aget_options()) as host:
            return await fn(host)

    # --- async API --------------------------------------------------------------

    async def alaunch(
        self,
        job_id: str,
        command: str,
        *,
        environment: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout: int = 0,
        grace: int = DEFAULT_GRACE,
        origin: str = "",
        execution_left: int = 0,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        host: RemoteHost | None = None,
    ) -> Launched:
        """Start COMMAND as job JOB_ID, detached.

        ``timeout`` (job_timeout) counts from the job's start; ``execution_left``
        is what is left of the task's execution_timeout (0: none). The host
        ends the job at the sooner of the two (limits.py). ``output_limit``:
        the bytes each of stdout and stderr may store on the host (0: no
        cap); past it the job runs on and the rest is counted, not stored.

        :raises JobIdError: the id is invalid (before any SSH call).
        :raises JobExistsError: a job with this id exists already.
        :raises CwdError, AsyncDirError, RemoteWriteError: as their names say.
        """
        validate_job_id(job_id)
        if not command or not command.strip():
            raise SSHAsyncJobError("the command is empty", job_id=job_id, hint="Give the operator a command.")
        try:
            payload = launch_payload(command, environment or {}, cwd or "", supervisor_program())
        except ValueError as exc:  # a bad environment variable name
            raise SSHAsyncJobError(str(exc), job_id=job_id, hint="Fix the operator's environment.") from None
        if not isinstance(output_limit, int) or isinstance(output_limit, bool) or output_limit < 0:
            raise SSHAsyncJobError(
                f"output_limit must be a whole number of bytes, 0 or more, not {output_limit!r}",
                job_id=job_id,
                hint="Give output_limit in bytes (0: no cap).",
            )
        args = [self.async_dir, job_id, str(int(timeout or 0)), str(int(grace)), origin]
        if execution_left or output_limit:
            args.append(str(int(execution_left)))
        if output_limit:
            args.append(str(output_limit))

        async def go(h: RemoteHost) -> Launched:
            out = dict(parse_frames(await h.run("launch", args, stdin=payload, job_id=job_id)))
            if "pid" not in out:
                # The supervisor reports on the channel itself: silence means it never ran.
                where = self.job_dir(job_id)
                raise RemoteWriteError(
                    f"the supervisor of '{where}' did not start: see {where}/supervisor.log",
                    host=h.options.label,
                    job_id=job_id,
                )
            return Launched(
                job_id=job_id,
                job_dir=out["job_dir"].decode(),
                pid=int(out["pid"]),
                start_time=int(out["start_time"]),
                supervisor_pid=int(out["supervisor_pid"]),
            )

        return await (go(host) if host else self._with_host(go))

    async def astatus(
        self,
        job_dirs: Sequence[str],
        *,
        cached_job_json: dict[str, dict[str, Any]] | None = None,
        host: RemoteHost | None = None,
    ) -> dict[str, tuple[JobStatus, JobFacts]]:
        """States of many jobs in one remote command, keyed by job dir.

        ``cached_job_json`` (job dir -> job.json) spares re-sending job.json.

        :raises ProtocolError: a job's file is damaged (the message names it).
        """
        out: dict[str, tuple[JobStatus, JobFacts]] = {}
        for d, value in (await self.astatus_each(job_dirs, cached_job_json=cached_job_json, host=host)).items():
            if isinstance(value, ProtocolError):
                raise value
            out[d] = value
        return out

    async def astatus_each(
        self,
        job_dirs: Sequence[str],
        *,
        cached_job_json: dict[str, dict[str, Any]] | None = None,
        host: RemoteHost | None = None,
    ) -> dict[str, tuple[JobStatus, JobFacts] | ProtocolError]:
        """As :meth:`astatus`, with a damaged job's error in place of its state.

        For batches of unrelated watchers: one job's damaged file must not
        fail the poll of every other job on the host.
        """
        out, _ = await self.astatus_wait(job_dirs, None, cached_job_json=cached_job_json, host=host)
        return out

    async def astatus_wait(
        self,
        job_dirs: Sequence[str],
        wait: StatusWait | None,
        *,
        cached_job_json: dict[str, dict[str, Any]] | None = None,
        host: RemoteHost | None = None,
    ) -> tuple[dict[str, tuple[JobStatus, JobFacts] | ProtocolError], str]:
        """As :meth:`astatus_each`, the report held on the host until WAIT says
        (see :class:`StatusWait`); also why it returned (``StatusReport.woke``).

        :raises SSHConnectError: the connection dropped, also during the wait.
        """
        cached = cached_job_json or {}
        args = [f"+{d}" if d in cached else d for d in job_dirs]
        head: list[str] = wait.args() if wait else []
        timeout = DEFAULT_COMMAND_TIMEOUT + (wait.max_seconds if wait else 0)

        async def go(h: RemoteHost) -> tuple[dict[str, tuple[JobStatus, JobFacts] | ProtocolError], str]:
            raw = await h.run("status", head + args, args_on_stdin=True, job_id=_ids(job_dirs), timeout=timeout)
            report = parse_status(raw)
            out: dict[str, tuple[JobStatus, JobFacts] | ProtocolError] = {}
            for arg, d in zip(args, job_dirs, strict=True):
                facts = report.jobs[arg]
                try:
                    out[d] = (classify(facts, report.boot_id, report.now, cached.get(d)), facts)
                except ProtocolError as exc:
                    out[d] = exc
            return out, report.woke

        return await (go(host) if host else self._with_host(go))

    async def alist_jobs(self, *, attempts: bool = False, host: RemoteHost | None = None) -> JobListing:
        """Every job folder of the async_dir, with its state, in two remote commands.

        list.sh names the folders and one status.sh call reads them all
        (:meth:`astatus_each`), whatever their number: a job whose files are
        damaged comes with its ``error`` instead of failing the listing.
        With ``attempts``, the archived attempts (``.archive/ID/N``) that
        retries moved aside follow the jobs. Jobs come in name order. An
        async_dir that does not exist lists no jobs (``exists`` False).

        :raises AsyncDirError: async_dir is not a directory, or cannot be read.
        :raises ProtocolError: a reply cannot be read at all.
        """

        async def go(h: RemoteHost) -> JobListing:
            listing = parse_listing(await h.run("list", [self.async_dir]), self.async_dir)
            folders = listing.folders(attempts=attempts)
            jobs = await self._listed(folders, h)
            return JobListing(listing.now, listing.async_dir, listing.exists, jobs)

        return await (go(host) if host else self._with_host(go))

    async def astatus_listed(self, jobs: Sequence[ListedJob], *, host: RemoteHost | None = None) -> list[ListedJob]:
        """JOBS (from :meth:`alist_jobs`) with their states read again, in one remote command."""

        async def go(h: RemoteHost) -> list[ListedJob]:
            return await self._listed({j.name: j.job_dir for j in jobs}, h)

        return await (go(host) if host else self._with_host(go))

    async def _listed(self, folders: dict[str, str], h: RemoteHost) -> list[ListedJob]:
        """Name -> folder, as listed jobs with their states: one status.sh call."""
        found = await self.astatus_each(list(folders.values()), host=h) if folders else {}
        out: list[ListedJob] = []
        for name, d in folders.items():
            value = found[d]
            if isinstance(value, ProtocolError):
                out.append(ListedJob(name, d, None, None, str(value)))
            else:
                out.append(ListedJob(name, d, *value))
        return out

    async def asupervisor_copies(
        self, async_dir: str = "", *, remove: bool, host: RemoteHost | None = None
    ) -> dict[str, str]:
        """The shared supervisor copies of other provider versions in the
        async_dir (``.supervisor/<id>``) -> what became of each (supervisors.sh):
        with REMOVE, removed unless a running job's supervisor runs it. This
        version's copy is always kept. ASYNC_DIR: another spelling of the
        hook's (the resolved path a listing returned).
        """
        keep = supervisor_id(supervisor_program())
        args = [async_dir or self.async_dir, keep, "1" if remove else "0"]

        async def go(h: RemoteHost) -> dict[str, str]:
            return parse_supervisor_copies(await h.run("supervisors", args))

        return await (go(host) if host else self._with_host(go))

    async def aread(
        self,
        requests: Sequence[ReadRequest | tuple[str, str, int]],
        *,
        max_bytes: int = DEFAULT_CHUNK,
        host: RemoteHost | None = None,
    ) -> list[Chunk]:
        """Read many requests, in as few remote calls as the reply budget allows.

        A (job dir, stream, offset) tuple reads at most MAX_BYTES. A job
        whose folder is gone, or whose file shrank, answers for itself.
        """
        reqs = [r if isinstance(r, ReadRequest) else ReadRequest(*r, max_bytes=max_bytes) for r in requests]
        for r in reqs:
            if r.stream not in STREAMS:
                raise ValueError(f"stream must be one of {STREAMS}, not {r.stream!r}")

        async def go(h: RemoteHost) -> list[Chunk]:
            chunks: list[Chunk] = []
            size = 0
            for call in share_budget(reqs):
                for name, value in await self._output(h, call, [str(int(r.offset)) for r in call]):
                    if name == "missing":
                        chunks.append(Chunk(b"", 0, missing=True))
                    elif name == "shrunk":
                        chunks.append(Chunk(b"", int(value), shrunk=True))
                    elif name == "size":
                        size = int(value)
                    elif name == "chunk":
                        chunks.append(Chunk(value, size))
            if len(chunks) != len(reqs):
                raise ProtocolError(f"output answered {len(chunks)} of {len(reqs)} requests")
            return chunks

        return await (go(host) if host else self._with_host(go))

    async def adelivered(
        self, requests: Sequence[tuple[str, str, str]], *, host: RemoteHost | None = None
    ) -> list[tuple[int, int] | None]:
        """For (job dir, stream, log key) requests: how far that log got
        (whole lines delivered, bytes read) as the host last recorded it."""
        reqs = [ReadRequest(d, stream, 0, 0, key) for d, stream, key in requests]

        async def go(h: RemoteHost) -> list[tuple[int, int] | None]:
            out: list[tuple[int, int] | None] = []
            for name, value in await self._output(h, reqs, ["?"] * len(reqs)):
                logged, _, read = value.decode().partition(" ")
                ok = name == "delivered" and logged.isdigit() and read.isdigit()
                out.append((int(logged), int(read)) if ok else None)
            return out

        return await (go(host) if host else self._with_host(go))

    async def arecord(self, requests: Sequence[ReadRequest], *, host: RemoteHost | None = None) -> None:
        """Tell the host how far each request's log got: LOGGED (the lines
        handed to the log) and OFFSET (read so far), in one call, reading
        nothing. The confirmation after a read's lines were logged."""
        reqs = [r for r in requests if r.log_key]
        if not reqs:
            return

        async def go(h: RemoteHost) -> None:
            answers = await self._output(h, reqs, [str(int(r.offset)) for r in reqs], max_bytes="-")
            if len(answers) != len(reqs):
                raise ProtocolError(f"output answered {len(answers)} of {len(reqs)} records")

        await (go(host) if host else self._with_host(go))

    async def _output(
        self, h: RemoteHost, reqs: Sequence[ReadRequest], offsets: Sequence[str], max_bytes: str = ""
    ) -> list[tuple[str, bytes]]:
        args: list[str] = []
        for r, offset in zip(reqs, offsets, strict=True):
            if r.log_key and not r.log_key.isalnum():
                raise ValueError(f"a log key is letters and digits, not {r.log_key!r}")
            limit = max_bytes or str(int(r.max_bytes))
            args += [r.job_dir, r.stream, offset, limit, r.log_key or "-", str(int(r.logged))]
        raw = await h.run("output", args, args_on_stdin=True, job_id=_ids(r.job_dir for r in reqs))
        return parse_frames(raw)

    async def afinished_result(
        self,
        ref: JobRef,
        status: JobStatus,
        *,
        tail_bytes: int = TAIL_BYTES,
        host: RemoteHost | None = None,
        masker: Masker | None = None,
    ) -> dict[str, Any]:
        """The result dict of a job found finished, with its output tails read in one call.

        What a trigger collects while streaming, read at once for a job that
        ended while nobody watched (a retry taking a result, a sensor's first poke).
        With MASKER, its secrets are masked, also one cut off where a tail begins.
        """
        masker = masker or Masker()
        streams = ("stdout", "stderr", "progress")
        starts = [max(0, status.sizes.get(s, 0) - tail_bytes) for s in streams]
        requests = [(ref.job_dir, s, start) for s, start in zip(streams, starts, strict=True)]
        chunks = await self.aread(requests, max_bytes=tail_bytes, host=host)
        stdout, stderr, progress = (
            masker.text(c.data.decode(errors="replace" if s == "progress" else "ignore"), mid_stream=start > 0)
            for s, start, c in zip(streams, starts, chunks, strict=True)
        )
        lines = progress.splitlines()
        return masker.redact(  # type: ignore[no-any-return]
            build_result(ref, status, progress=lines[-1] if lines else "", stdout_tail=stdout, stderr_tail=stderr)
        )

    async def acancel(self, job_dir: str, *, grace: int = DEFAULT_GRACE, host: RemoteHost | None = None) -> str:
        """SIGTERM the job's process group (SIGKILL after GRACE); return the outcome.

        ``cancelled``, ``finished`` (it had ended), ``gone`` (its process is
        no longer ours) or ``pending`` (the launch had not written job.json
        yet: the cancel is recorded and the supervisor stops the job as it
        starts). Bound a wait for it with :func:`cancel_bound`, never less.
        """

        async def go(h: RemoteHost) -> str:
            out = await h.run("signal", [job_dir, str(grace)], job_id=_ids([job_dir]))
            return dict(parse_frames(out))["outcome"].decode()

        return await (go(host) if host else self._with_host(go))

    async def amove_deadline(self, job_dir: str, seconds: int, *, host: RemoteHost | None = None) -> str:
        """Set a running job's execution_timeout deadline to SECONDS from now; return the outcome.

        ``moved``, ``finished``, ``unsupported`` (a supervisor older than the
        deadline file keeps its limits) or ``gone`` (limit.sh).
        """

        async def go(h: RemoteHost) -> str:
            out = await h.run("limit", [job_dir, str(int(seconds))], job_id=_ids([job_dir]))
            return dict(parse_frames(out))["outcome"].decode()

        return await (go(host) if host else self._with_host(go))

    async def aarchive(self, job_dir: str, *, remove: bool = False, host: RemoteHost | None = None) -> str:
        """Move a finished job's folder to .archive/ (or delete it); return where it went."""

        async def go(h: RemoteHost) -> str:
            raw = await h.run("archive", [job_dir, "remove" if remove else "archive"], job_id=_ids([job_dir]))
            out = dict(parse_frames(raw))
            return (out.get("archived") or out["removed"]).decode()

        return await (go(host) if host else self._with_host(go))

    # --- sync facade (operator, CLI) ------------------------------------------------

    def run_sync(self, fn: Callable[[RemoteHost], Awaitable[T]]) -> T:
        """Run FN with one connection on a private event loop (worker side)."""
        self.get_options()  # a sync lookup: the worker has no running loop
        return asyncio.run(self._with_host(fn))

    def launch(self, job_id: str, command: str, **kwargs: Any) -> Launched:
        return self.run_sync(lambda h: self.alaunch(job_id, command, host=h, **kwargs))

    def status(self, job_dirs: Sequence[str]) -> dict[str, tuple[JobStatus, JobFacts]]:
        return self.run_sync(lambda h: self.astatus(job_dirs, host=h))

    def list_jobs(self, *, attempts: bool = False) -> JobListing:
        """As :meth:`alist_jobs`, on a connection of its own (sync callers: a UI view, scripts)."""
        return self.run_sync(lambda h: self.alist_jobs(attempts=attempts, host=h))

    def read(self, requests: Sequence[tuple[str, str, int]], max_bytes: int = DEFAULT_CHUNK) -> list[Chunk]:
        return self.run_sync(lambda h: self.aread(requests, max_bytes=max_bytes, host=h))

    def cancel(self, job_dir: str, grace: int = DEFAULT_GRACE) -> str:
        return self.run_sync(lambda h: self.acancel(job_dir, grace=grace, host=h))

    def archive(self, job_dir: str, remove: bool = False) -> str:
        return self.run_sync(lambda h: self.aarchive(job_dir, remove=remove, host=h))
