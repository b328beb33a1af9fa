"""The hook's remote calls, async: launch, status, listing, output, cancel, deadline, archive.

Each call is one script run on one host connection (the caller's, or one of
its own); what the call sends and how its reply is read is hook_protocol.py,
the state rules are states.py. The trigger uses these coroutines directly;
the operator and the CLI through the sync facade (hooks.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from airflow_ssh_async.client import DEFAULT_COMMAND_TIMEOUT, RemoteHost, supervisor_program
from airflow_ssh_async.errors import RemoteWriteError, SSHAsyncJobError
from airflow_ssh_async.frames import ProtocolError, parse_frames
from airflow_ssh_async.hook_connection import ConnectionHook
from airflow_ssh_async.hook_protocol import (
    DEFAULT_CHUNK,
    DEFAULT_GRACE,
    Chunk,
    Launched,
    ReadRequest,
    StatusWait,
    folder_ids,
    launch_args,
    output_args,
    read_chunks,
    read_delivered,
    read_launched,
    read_requests,
    share_budget,
)
from airflow_ssh_async.job_ids import JobRef, validate_job_id
from airflow_ssh_async.listing import JobListing, ListedJob, parse_listing, parse_supervisor_copies
from airflow_ssh_async.masking import Masker
from airflow_ssh_async.output_cuts import DEFAULT_OUTPUT_LIMIT
from airflow_ssh_async.payload import launch_payload, supervisor_id
from airflow_ssh_async.results import TAIL_BYTES, build_result
from airflow_ssh_async.states import JobStatus, classify
from airflow_ssh_async.status_report import JobFacts, StatusParts, StatusReport, parse_status


class AsyncJobCalls(ConnectionHook):
    """The remote API, as coroutines; ``host``: run on that connection instead of opening one."""

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
        args = launch_args(self.async_dir, job_id, timeout, grace, origin, execution_left, output_limit)

        async def go(h: RemoteHost) -> Launched:
            launched = read_launched(job_id, await h.run("launch", args, stdin=payload, job_id=job_id))
            if launched is None:
                # The supervisor reports on the channel itself: silence means it never ran.
                where = self.job_dir(job_id)
                raise RemoteWriteError(
                    f"the supervisor of '{where}' did not start: see {where}/supervisor.log",
                    host=h.options.label,
                    job_id=job_id,
                )
            return launched

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
        on_part: Callable[[dict[str, tuple[JobStatus, JobFacts] | ProtocolError]], None] | None = None,
    ) -> tuple[dict[str, tuple[JobStatus, JobFacts] | ProtocolError], str]:
        """As :meth:`astatus_each`, the report held on the host until WAIT says
        (see :class:`StatusWait`); also why it returned (``StatusReport.woke``).

        With ``wait.parts``, ON_PART gets the statuses of jobs that ended
        while the call goes on waiting, as they come; the result holds them too.

        :raises SSHConnectError: the connection dropped, also during the wait.
        """
        cached = cached_job_json or {}
        args = [f"+{d}" if d in cached else d for d in job_dirs]
        dir_of = dict(zip(args, job_dirs, strict=True))
        head: list[str] = wait.args() if wait else []
        timeout = DEFAULT_COMMAND_TIMEOUT + (wait.max_seconds if wait else 0)
        got: dict[str, tuple[JobStatus, JobFacts] | ProtocolError] = {}

        def classified(report: StatusReport) -> dict[str, tuple[JobStatus, JobFacts] | ProtocolError]:
            out: dict[str, tuple[JobStatus, JobFacts] | ProtocolError] = {}
            for arg, facts in report.jobs.items():
                d = dir_of.get(arg)
                if d is None:
                    continue
                try:
                    out[d] = (classify(facts, report.boot_id, report.now, cached.get(d)), facts)
                except ProtocolError as exc:
                    out[d] = exc
            return out

        parts = StatusParts()

        def part(data: bytes) -> None:
            for report in parts.feed(data):
                values = classified(report)
                got.update(values)
                if on_part is not None and values:
                    on_part(values)

        streamed = part if wait is not None and wait.parts else None

        async def go(h: RemoteHost) -> tuple[dict[str, tuple[JobStatus, JobFacts] | ProtocolError], str]:
            raw = await h.run(
                "status",
                head + args,
                args_on_stdin=True,
                job_id=folder_ids(job_dirs),
                timeout=timeout,
                on_stdout=streamed,
            )
            report = parse_status(raw)
            out = {**got, **classified(report)}
            missing = [d for d in job_dirs if d not in out]
            if missing:
                raise ProtocolError(f"status answered {len(out)} of {len(job_dirs)} jobs (no {missing[0]})")
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
        reqs = read_requests(requests, max_bytes)

        async def go(h: RemoteHost) -> list[Chunk]:
            records: list[tuple[str, bytes]] = []
            for call in share_budget(reqs):
                records += await self._output(h, call, [str(int(r.offset)) for r in call])
            return read_chunks(records, len(reqs))

        return await (go(host) if host else self._with_host(go))

    async def adelivered(
        self, requests: Sequence[tuple[str, str, str]], *, host: RemoteHost | None = None
    ) -> list[tuple[int, int] | None]:
        """For (job dir, stream, log key) requests: how far that log got
        (whole lines delivered, bytes read) as the host last recorded it."""
        reqs = [ReadRequest(d, stream, 0, 0, key) for d, stream, key in requests]

        async def go(h: RemoteHost) -> list[tuple[int, int] | None]:
            return read_delivered(await self._output(h, reqs, ["?"] * len(reqs)))

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
        args = output_args(reqs, offsets, max_bytes)
        raw = await h.run("output", args, args_on_stdin=True, job_id=folder_ids(r.job_dir for r in reqs))
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
            out = await h.run("signal", [job_dir, str(grace)], job_id=folder_ids([job_dir]))
            return dict(parse_frames(out))["outcome"].decode()

        return await (go(host) if host else self._with_host(go))

    async def amove_deadline(self, job_dir: str, seconds: int, *, host: RemoteHost | None = None) -> str:
        """Set a running job's execution_timeout deadline to SECONDS from now; return the outcome.

        ``moved``, ``finished``, ``unsupported`` (a supervisor older than the
        deadline file keeps its limits) or ``gone`` (limit.sh).
        """

        async def go(h: RemoteHost) -> str:
            out = await h.run("limit", [job_dir, str(int(seconds))], job_id=folder_ids([job_dir]))
            return dict(parse_frames(out))["outcome"].decode()

        return await (go(host) if host else self._with_host(go))

    async def aarchive(self, job_dir: str, *, remove: bool = False, host: RemoteHost | None = None) -> str:
        """Move a finished job's folder to .archive/ (or delete it); return where it went."""

        async def go(h: RemoteHost) -> str:
            raw = await h.run("archive", [job_dir, "remove" if remove else "archive"], job_id=folder_ids([job_dir]))
            out = dict(parse_frames(raw))
            return (out.get("archived") or out["removed"]).decode()

        return await (go(host) if host else self._with_host(go))
