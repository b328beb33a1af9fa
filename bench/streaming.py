"""Scale and streaming without cliffs: chatty jobs, restarts, progress bars.

    .venv/bin/python bench/streaming.py --jobs 1000 --lines 30   # all sections
    .venv/bin/python bench/streaming.py --only progress

Everything runs the real watch loop (watch_job, the batcher, the shared
connection) in this one process and event loop, as the triggerer runs its
triggers, against a throwaway sshd on 127.0.0.1 (needs root: the harness).
Jobs have ids as long as the operator derives for scheduled runs (about 100
characters) and print a line a second on stdout, stderr and progress.

Sections:
  chatty    N jobs on one host, poll 10 s: events, lines logged (each must be
            logged exactly once), triggerer CPU per job per poll, peak RSS,
            SSH connections, job end to event
  restart   the same N jobs, every watcher killed half way and started again
            (a triggerer restart): bytes read again, lines logged twice
  cost      triggerer CPU per job per poll at 100 and at --many jobs, polled
            without the host wait (`wait_on_host: false`: one status call a
            poll), --ticks polls after two to warm up; --cost-poll and
            --cost-every (seconds between a job's lines) let 2,000 chatty
            jobs' polls fit in their tick on a small host
  progress  30 MB of carriage-return progress output: peak RSS growth,
            longest log record, longest event-loop stall
  upstream  the same N chatty jobs started by SSHRemoteJobOperator's wrapper
            (apache-airflow-providers-ssh 7.0.1) and watched by N
            SSHRemoteJobTrigger.run loops in this loop (one SSH connection
            each, login user asyncbash: its wrapper needs bash), in steps of
            --upstream-steps jobs until one step fails: events, errors,
            lines whole in the log, CPU per job per poll, peak RSS, SSH
            connections, job end to event

Peak RSS and SSH connections are sampled every second (connections every
5 s, from the process's sockets) within each section. Run it niced on a
shared machine: 2,000 chatty jobs fork 2,000 `sleep`s a second on the host.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import pwd
import resource
import shlex
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

from airflow_ssh_async import client, hooks  # noqa: E402
from airflow_ssh_async.hooks import SSHAsyncJobHook  # noqa: E402
from airflow_ssh_async.job import JobRef  # noqa: E402
from airflow_ssh_async.watch import watch_job  # noqa: E402
from tests.harness.sshd import start_server  # noqa: E402

USER = "asyncdash"
CONN = "bench_streaming"
UPSTREAM_USER = "asyncbash"
UPSTREAM_CONN = "bench_streaming_upstream"
CONN_NO_WAIT = "bench_streaming_no_wait"


def derived_id(tag: str, i: int) -> str:
    return f"warehouse_nightly_rebuild-nightly_partition_rebuild_{i:04d}-scheduled__2026-12-01T02_00-{tag}{i:08x}"


def gate(go: str, every: int = 1) -> str:
    """Wait for the file GO (made once every job of the section is launched): all
    jobs then chat, and end, together, and no job ends before it is watched.
    It looks every EVERY seconds (one `sleep` process a look)."""
    return f"while [ ! -e {shlex.quote(go)} ]; do sleep {every}; done; "


def chatty(lines: int, go: str = "", every: int = 1) -> str:
    """LINES lines on stdout, stderr and progress, one of each every EVERY seconds
    (each wait forks one `sleep` on the host: N jobs cost it N/EVERY a second)."""
    return (gate(go, every) if go else "") + (
        f'i=0; while [ $i -lt {lines} ]; do i=$((i+1)); echo "out $i"; echo "err $i" >&2; '
        f'echo "step $i" >>"$AIRFLOW_ASYNC_PROGRESS"; sleep {every}; done'
    )


class Calls:
    """Wall time of every remote call (status, output) made in this process."""

    def __init__(self) -> None:
        self.done: list[tuple[str, float]] = []
        # (name, wall clock, process CPU) at the start of every call: a poll's
        # cost is the CPU from one status call's start to the next one's.
        self.started: list[tuple[str, float, float]] = []
        real = client.RemoteHost.run
        me = self

        async def run(self: client.RemoteHost, name: str, args: Any, **kw: Any) -> bytes:
            t0 = time.monotonic()
            me.started.append((name, t0, time.process_time()))
            try:
                return await real(self, name, args, **kw)
            finally:
                me.done.append((name, time.monotonic() - t0))

        client.RemoteHost.run = run  # type: ignore[method-assign]

    def since(self, mark: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("status", "output"):
            walls = sorted(w for n, w in self.done[mark:] if n == name)
            if walls:
                out[f"{name}_calls"] = len(walls)
                out[f"{name}_call_s_median"] = round(walls[len(walls) // 2], 2)
                out[f"{name}_call_s_max"] = round(walls[-1], 2)
        return out


CALLS: Calls | None = None


def go_file(tag: str) -> Path:
    return Path(pwd.getpwnam(USER).pw_dir) / f"bench-streaming-go-{os.getpid()}-{tag}"


class CountingLog:
    """Counts every line; keeps no text beyond the counter (and the longest)."""

    def __init__(self) -> None:
        self.lines: collections.Counter[str] = collections.Counter()
        self.longest = 0

    def info(self, fmt: str, *args: Any) -> None:
        text = fmt % args if args else fmt
        self.longest = max(self.longest, len(text))
        self.lines[text] += 1

    warning = debug = error = info


class Reads:
    """Every output read made in this process: (job dir, stream, offset, bytes, for the log?).

    A read without a log key is a resumed watcher rebuilding the result's
    tail (at most tail_bytes before where the log stopped), not a read for the log.
    """

    def __init__(self) -> None:
        self.done: list[tuple[str, str, int, int, bool]] = []
        real = hooks.SSHAsyncJobHook.aread
        me = self

        async def aread(self: SSHAsyncJobHook, requests: Any, **kw: Any) -> list[hooks.Chunk]:
            chunks = await real(self, requests, **kw)
            for r, c in zip(requests, chunks, strict=True):
                r = r if isinstance(r, hooks.ReadRequest) else hooks.ReadRequest(*r)
                me.done.append((r.job_dir, r.stream, r.offset, len(c.data), bool(r.log_key)))
            return chunks

        hooks.SSHAsyncJobHook.aread = aread  # type: ignore[method-assign]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def mem_available_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def ssh_sockets(port: int) -> int:
    """Established TCP connections of this process to PORT."""
    import psutil

    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == port
    )


class Sampler:
    """Peak RSS (every second) and SSH connections (every 5 s) while a section runs."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.rss_start = rss_now_mb()
        self.rss_peak = self.rss_start
        self.connections = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        n = 0
        while True:
            self.rss_peak = max(self.rss_peak, rss_now_mb())
            if n % 5 == 0:
                self.connections = max(self.connections, ssh_sockets(self.port))
            n += 1
            await asyncio.sleep(1)

    def start(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    def stop(self) -> dict[str, Any]:
        if self._task:
            self._task.cancel()
        return {
            "rss_mb_at_start": round(self.rss_start, 1),
            "peak_rss_mb": round(max(self.rss_peak, rss_now_mb()), 1),
            "ssh_connections_max": self.connections,
        }


async def launch(hook: SSHAsyncJobHook, ids: list[str], command: str) -> list[JobRef]:
    async with client.remote_host(await hook.aget_options()) as host:
        out = []
        for i in range(0, len(ids), 50):
            launched = await asyncio.gather(*(hook.alaunch(j, command, host=host) for j in ids[i : i + 50]))
            out += [JobRef(CONN, j.job_id, j.job_dir) for j in launched]
        return out


async def watch_all(
    hook: SSHAsyncJobHook,
    refs: list[JobRef],
    logs: dict[str, CountingLog],
    poll: float,
    key: str,
    stop: float = 0,
    stop_when: Any = None,
) -> dict[str, tuple[dict[str, Any], float]]:
    """Watch every job; return job id -> (event, time). STOP > 0: cancel every
    watcher after STOP seconds (a killed triggerer), and once STOP_WHEN() is
    true if given; return what ended."""

    async def one(ref: JobRef) -> tuple[dict[str, Any], float]:
        event = await watch_job(hook, ref, log=logs[ref.job_id], poll_interval=poll, log_key=key)
        return event, time.time()

    tasks = {r.job_id: asyncio.create_task(one(r)) for r in refs}
    if stop:
        await asyncio.sleep(stop)
        while stop_when is not None and not stop_when():
            await asyncio.sleep(0.2)
        for t in tasks.values():
            t.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    return {j: t.result() for j, t in tasks.items() if not t.cancelled() and t.exception() is None}


def expected_lines(lines: int) -> list[str]:
    return [w for i in range(1, lines + 1) for w in (f"out {i}", f"err {i}", f"progress: step {i}")]


def check_lines(logs: dict[str, CountingLog], lines: int) -> dict[str, int]:
    want = expected_lines(lines)
    missing = twice = 0
    for log in logs.values():
        for w in want:
            n = log.lines[w]
            missing += n == 0
            twice += max(0, n - 1)
    return {"lines_expected": len(want) * len(logs), "lines_missing": missing, "lines_logged_twice": twice}


def section_chatty(hook: SSHAsyncJobHook, jobs: int, lines: int, poll: float, port: int) -> dict[str, Any]:
    ids = [derived_id("c", i) for i in range(jobs)]
    logs = {j: CountingLog() for j in ids}

    async def go() -> dict[str, Any]:
        t_launch = time.monotonic()
        go = go_file("chatty")
        refs = await launch(hook, ids, chatty(lines, str(go)))
        launch_s = time.monotonic() - t_launch
        sampler = Sampler(port).start()
        mark = len(CALLS.done) if CALLS else 0
        cpu0, t0 = time.process_time(), time.monotonic()
        go.touch()
        events = await watch_all(hook, refs, logs, poll, "chatty")
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        sampled = sampler.stop()
        go.unlink()
        lag = sorted(
            t - datetime.fromisoformat(e["result"]["end_time"]).timestamp()
            for e, t in events.values()
            if e.get("result", {}).get("end_time")
        )
        polls = wall / poll
        return {
            "jobs": jobs,
            "id_length": len(ids[0]),
            "events": sum(e["status"] == "finished" for e, _ in events.values()),
            **check_lines(logs, lines),
            "launch_s": round(launch_s, 1),
            "watch_s": round(wall, 1),
            "triggerer_cpu_ms_per_job_per_poll": round(1000 * cpu / (jobs * polls), 3),
            "triggerer_cpu_ms_per_job": round(1000 * cpu / jobs, 2),
            **sampled,
            "end_to_event_s_median": round(lag[len(lag) // 2], 2) if lag else None,
            "end_to_event_s_max": round(lag[-1], 2) if lag else None,
            **(CALLS.since(mark) if CALLS else {}),
        }

    return asyncio.run(go())


def section_restart(hook: SSHAsyncJobHook, jobs: int, lines: int, poll: float, reads: Reads) -> dict[str, Any]:
    ids = [derived_id("r", i) for i in range(jobs)]
    logs = {j: CountingLog() for j in ids}

    async def go() -> dict[str, Any]:
        go = go_file("restart")
        refs = await launch(hook, ids, chatty(lines, str(go)))
        go.touch()
        start = len(reads.done)
        dirs = {r.job_dir for r in refs}

        def every_job_read() -> bool:  # the kill comes after some output of each job was logged
            return len({d for d, _, _, n, _ in reads.done[start:] if n}) >= len(dirs)

        t_kill = time.monotonic()
        await watch_all(hook, refs, logs, poll, "restart", stop=lines / 2, stop_when=every_job_read)
        killed_after = time.monotonic() - t_kill
        first = len(reads.done)
        read_to: dict[tuple[str, str], int] = collections.defaultdict(int)
        last_read: dict[tuple[str, str], int] = {}
        for d, s, off, n, for_log in reads.done[start:first]:
            read_to[d, s] = max(read_to[d, s], off + n)
            if for_log:
                last_read[d, s] = n
        events = await watch_all(hook, refs, logs, poll, "restart")
        again = {True: collections.Counter[str](), False: collections.Counter[str]()}
        by_stream: collections.Counter[tuple[str, str]] = collections.Counter()
        for d, s, off, n, for_log in reads.done[first:]:
            if off < read_to[d, s]:
                again[for_log][d] += min(off + n, read_to[d, s]) - off
                if for_log:
                    by_stream[d, s] += min(off + n, read_to[d, s]) - off
        beyond = sum(max(0, b - last_read.get(k, 0)) for k, b in by_stream.items())
        result = {
            "jobs": jobs,
            "events": sum(e["status"] == "finished" for e, _ in events.values()),
            **check_lines(logs, lines),
            "killed_after_s": round(killed_after, 1),
            "bytes_read_before_the_kill": sum(read_to.values()),
            "bytes_read_again_for_the_log": sum(again[True].values()),
            "bytes_read_again_for_the_log_max_per_job": max(again[True].values(), default=0),
            "bytes_read_again_beyond_the_last_read_of_each_stream": beyond,
            "bytes_read_again_for_result_tails": sum(again[False].values()),
        }
        go.unlink()
        return result

    return asyncio.run(go())


def section_cost(hook: SSHAsyncJobHook, counts: list[int], poll: float, ticks: int, every: int) -> dict[str, Any]:
    """Triggerer CPU per job per poll at each of COUNTS chatty jobs on one host.

    HOOK's connection should say ``wait_on_host: false``: then every status
    call is one poll of every job (one per tick of POLL), and the CPU from
    the start of one status call to the start of the call TICKS later is
    exactly TICKS polls' work (the status report, the output reads of every
    grown stream, their log lines, the confirmations), whatever the host's
    speed. The first two polls (the watchers' start, their first backlog)
    are left out. Every count runs the same jobs: a line on each stream every
    EVERY seconds, for the same time.
    """
    out: dict[str, Any] = {}
    for n in counts:
        ids = [derived_id(f"k{n}-", i) for i in range(n)]
        out[str(n)] = asyncio.run(_cost_run(hook, ids, poll, ticks, every, f"cost{n}"))
        print(f"cost {n}: {json.dumps(out[str(n)])}", file=sys.stderr, flush=True)
        asyncio.run(cancel_all(hook, ids))
    a, b = (out[str(c)]["triggerer_cpu_ms_per_job_per_poll"] for c in (counts[0], counts[-1]))
    out["ratio"] = round(b / a, 2) if a and b else None
    return out


async def _cost_run(
    hook: SSHAsyncJobHook, ids: list[str], poll: float, ticks: int, every: int, key: str
) -> dict[str, Any]:
    """TICKS polls of the chatty jobs IDS (a line a stream every EVERY s), after two to warm up."""
    assert CALLS is not None
    logs = {j: CountingLog() for j in ids}
    go = go_file(key)
    t_launch = time.monotonic()
    # Long enough to chat through the warm-up, the window and a slow host's
    # polls (2,000 chatty jobs on 2 cores: a poll can take longer than a tick).
    length = int(max(poll * (2 * ticks + 6), 600))
    refs = await launch(hook, ids, chatty(-(-length // every), str(go), every))
    launch_s = time.monotonic() - t_launch
    go.touch()
    t_go = time.monotonic()
    print(f"{key}: launched in {launch_s:.1f} s", file=sys.stderr, flush=True)
    first = len(CALLS.started)
    seen = [0]

    def status_starts() -> list[tuple[str, float, float]]:
        return [c for c in CALLS.started[first:] if c[0] == "status"]

    def logged() -> int:
        return sum(n for log in logs.values() for n in log.lines.values())

    async def until(calls: int) -> None:
        while len(status_starts()) < calls:
            await asyncio.sleep(0.1)
            if len(status_starts()) > seen[0]:  # progress, for a slow host
                seen[0] = len(status_starts())
                print(f"{key}: status call {seen[0]} at {status_starts()[-1][1] - t_go:.1f} s", file=sys.stderr)

    async def measure() -> dict[str, Any]:
        # Lines logged in the window (to 0.1 s): the same work per job at every count?
        await until(3)
        lines0 = logged()
        await until(2 + ticks + 1)
        lines1 = logged()
        starts = status_starts()
        (_, t0, cpu0), (_, t1, cpu1) = starts[2], starts[2 + ticks]
        calls = collections.Counter(c[0] for c in CALLS.started[first:] if t0 <= c[1] < t1)
        return {
            "jobs": len(ids),
            "id_length": len(ids[0]),
            "launch_s": round(launch_s, 1),
            "polls": ticks,
            "poll_s": poll,
            "line_every_s": every,
            "window_s": round(t1 - t0, 1),
            "triggerer_cpu_ms_per_job_per_poll": round(1000 * (cpu1 - cpu0) / (len(ids) * ticks), 4),
            "calls_in_window": dict(calls),
            "lines_per_job_per_poll": round((lines1 - lines0) / (len(ids) * ticks), 1),
            "rss_mb": round(rss_now_mb(), 1),
        }

    watchers = asyncio.ensure_future(watch_all(hook, refs, logs, poll, key))
    try:
        return await asyncio.wait_for(measure(), length)
    except asyncio.TimeoutError:
        # No figure, but say how far the polls got: when each status call started.
        return {
            "jobs": len(ids),
            "launch_s": round(launch_s, 1),
            "timed_out_s": length,
            "status_call_starts_s": [round(c[1] - t_go, 1) for c in status_starts()],
            "triggerer_cpu_ms_per_job_per_poll": None,
        }
    finally:
        watchers.cancel()
        with contextlib.suppress(BaseException):
            await watchers
        go.unlink()


async def cancel_all(hook: SSHAsyncJobHook, ids: list[str]) -> None:
    async def one(j: str, host: client.RemoteHost) -> None:
        with contextlib.suppress(Exception):  # finished already
            await hook.acancel(hook.job_dir(j), grace=1, host=host)

    async with client.remote_host(await hook.aget_options()) as host:
        for i in range(0, len(ids), 50):
            await asyncio.gather(*(one(j, host) for j in ids[i : i + 50]))


def section_progress(hook: SSHAsyncJobHook, megabytes: int) -> dict[str, Any]:
    updates = megabytes * 1024 * 1024 // 100
    command = (
        f"i=0; while [ $i -lt {updates // 1000} ]; do j=0; while [ $j -lt 1000 ]; do "
        "printf '%099d\\r' $j; j=$((j+1)); done; i=$((i+1)); done; echo; echo END"
    )
    log = CountingLog()

    async def go() -> dict[str, Any]:
        [ref] = await launch(hook, [derived_id("p", 0)], command)
        stall = 0.0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal stall
            while not done.is_set():
                t = time.monotonic()
                await asyncio.sleep(0.01)
                stall = max(stall, time.monotonic() - t - 0.01)

        rss0 = rss_mb()
        tick = asyncio.create_task(ticker())
        event = await watch_job(hook, ref, log=log, poll_interval=1)
        done.set()
        await tick
        return {
            "megabytes": megabytes,
            "state": event["result"]["state"],
            "records": sum(log.lines.values()),
            "longest_record_chars": log.longest,
            "end_logged": log.lines["END"] == 1,
            "peak_rss_growth_mb": round(rss_mb() - rss0, 1),
            "longest_loop_stall_ms": round(1000 * stall, 1),
        }

    return asyncio.run(go())


# --- upstream: SSHRemoteJobTrigger (apache-airflow-providers-ssh 7.0.1) ----------------------


def upstream_chatty(lines: int, go: str) -> str:
    """chatty() without our progress file: its wrapper sends stdout and stderr to one log."""
    return gate(go) + (f'i=0; while [ $i -lt {lines} ]; do i=$((i+1)); echo "out $i"; echo "err $i" >&2; sleep 1; done')


class ChunkLog:
    """SSHRemoteJobTrigger logs each chunk it reads as one record: keep the records' lines."""

    def __init__(self) -> None:
        self.lines: collections.Counter[str] = collections.Counter()
        self.records = 0

    def info(self, fmt: str, *args: Any) -> None:
        self.records += 1
        for line in (fmt % args if args else fmt).split("\n"):
            self.lines[line] += 1

    def warning(self, *a: Any, **k: Any) -> None:
        pass

    debug = warning

    def exception(self, fmt: str, *args: Any, **k: Any) -> None:
        self.info("EXCEPTION " + fmt, *args)

    error = exception


async def upstream_launch(base: str, ids: list[str], command: str, poll: float) -> list[Any]:
    """Start each job with SSHRemoteJobOperator's own wrapper, 6 at a time over one connection
    (its operator would open one SSH connection per task; the launch is not what is compared)."""
    import asyncssh
    from airflow.providers.ssh.triggers.ssh_remote_job import SSHRemoteJobTrigger
    from airflow.providers.ssh.utils.remote_job import RemoteJobPaths, build_posix_wrapper_command

    options = await SSHAsyncJobHook(UPSTREAM_CONN).aget_options()
    triggers = []
    async with asyncssh.connect(**client.connect_kwargs(options)) as conn:
        gate = asyncio.Semaphore(6)

        async def one(job_id: str) -> Any:
            paths = RemoteJobPaths(job_id=job_id, remote_os="posix", base_dir=base)
            for delay in (0.05, 0.1, 0.2, 0.5, 1, 2, 0):
                try:
                    async with gate:
                        r = await conn.run(build_posix_wrapper_command(command, paths), check=True)
                    break
                except asyncssh.ChannelOpenError:  # sshd still counts the sessions just closed
                    if not delay:
                        raise
                    await asyncio.sleep(delay)
            assert r.stdout.strip() == job_id, r.stdout
            return SSHRemoteJobTrigger(
                ssh_conn_id=UPSTREAM_CONN,
                remote_host=None,
                job_id=job_id,
                job_dir=paths.job_dir,
                log_file=paths.log_file,
                exit_code_file=paths.exit_code_file,
                remote_os="posix",
                poll_interval=int(poll),
            )

        triggers = list(await asyncio.gather(*(one(j) for j in ids)))
    return triggers


def section_upstream(jobs: int, steps: list[int], lines: int, poll: float, port: int) -> dict[str, Any]:
    """SSHRemoteJobTrigger at growing job counts, up to JOBS, stopping after the first step
    where it does not deliver every event (where it stops working)."""
    from airflow.providers.ssh.utils.remote_job import generate_job_id

    home = pwd.getpwnam(UPSTREAM_USER).pw_dir
    out: dict[str, Any] = {}
    for n in [c for c in steps if c < jobs] + [jobs]:
        available = mem_available_mb()
        if available < 4096 + 12 * n:  # sshd keeps two processes per connection on this host
            out[str(n)] = {"skipped": f"only {available} MB of memory available on this machine"}
            break
        base = f"{home}/bench-upstream-{os.getpid()}-{n}"
        ids = [
            generate_job_id("warehouse_nightly_rebuild", f"nightly_partition_rebuild_{i:04d}", RUN_ID, 1)
            for i in range(n)
        ]
        try:
            out[str(n)] = result = asyncio.run(_upstream_run(base, ids, lines, poll, port))
        finally:
            _upstream_cleanup(base)
        print(f"upstream {n}: {json.dumps(result)}", file=sys.stderr, flush=True)
        if result["events_success"] < n:
            break
    return out


RUN_ID = "scheduled__2026-12-01T02:00:00+00:00"


async def _upstream_run(base: str, ids: list[str], lines: int, poll: float, port: int) -> dict[str, Any]:
    t_launch = time.monotonic()
    go = Path(base) / "go"
    triggers = await upstream_launch(base, ids, upstream_chatty(lines, str(go)), poll)
    launch_s = time.monotonic() - t_launch
    logs = {t.job_id: ChunkLog() for t in triggers}
    for t in triggers:
        t._log = logs[t.job_id]  # LoggingMixin.log returns _log when set
    sampler = Sampler(port).start()
    cpu0, t0 = time.process_time(), time.monotonic()
    go.touch()

    polls = 0
    real_check = type(triggers[0])._check_completion

    async def counted(self: Any, conn: Any) -> int | None:
        nonlocal polls
        polls += 1
        return await real_check(self, conn)

    for t in triggers:
        t._check_completion = counted.__get__(t)

    async def one(t: Any) -> tuple[dict[str, Any], float]:
        async for event in t.run():
            return event.payload, time.time()
        return {"status": "no event"}, time.time()

    # Deadline: the jobs' length, ten polls, and its reconnect backoff (5 tries, up to 30 s + jitter).
    done = await asyncio.wait_for(
        asyncio.gather(*(one(t) for t in triggers), return_exceptions=True), lines + 10 * poll + 300
    )
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    sampled = sampler.stop()
    events = [d for d in done if isinstance(d, tuple)]
    statuses = collections.Counter(e.get("status") for e, _ in events)
    messages = collections.Counter(
        e.get("message", "")[:120] for e, _ in events if e.get("status") not in ("success", "failed")
    )
    lag = []
    for (e, at), t in zip(events, triggers, strict=False):
        if e.get("status") == "success":
            with contextlib.suppress(OSError):
                lag.append(at - os.stat(t.exit_code_file).st_mtime)
    lag.sort()
    want = [w for i in range(1, lines + 1) for w in (f"out {i}", f"err {i}")]
    # The final chunk comes in the event, not the log (as its operator logs it): count it too.
    for (e, _), t in zip(events, triggers, strict=False):
        if e.get("log_chunk"):
            logs[t.job_id].info("%s", e["log_chunk"].rstrip())
    whole = sum(min(1, log.lines[w]) for log in logs.values() for w in want)
    return {
        "jobs": len(ids),
        "id_length": len(ids[0]),
        "launch_s": round(launch_s, 1),
        "watch_s": round(wall, 1),
        "events_success": statuses.get("success", 0),
        "events_other": {k: v for k, v in statuses.items() if k != "success"},
        "errors": dict(messages.most_common(3)),
        "exceptions": sum(not isinstance(d, tuple) for d in done),
        "lines_expected": len(want) * len(ids),
        "lines_whole_in_log": whole,
        "log_records": sum(log.records for log in logs.values()),
        "polls": polls,
        "triggerer_cpu_ms_per_job_per_poll": round(1000 * cpu / polls, 3) if polls else None,
        "triggerer_cpu_ms_per_job": round(1000 * cpu / len(ids), 2),
        **sampled,
        "end_to_event_s_median": round(lag[len(lag) // 2], 2) if lag else None,
        "end_to_event_s_max": round(lag[-1], 2) if lag else None,
    }


def _upstream_cleanup(base: str) -> None:
    """Kill what is left of the jobs (their process groups, by the pid files) and remove the folder."""
    import signal

    for pid_file in Path(base).glob("*/pid"):
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
    shutil.rmtree(base, ignore_errors=True)


def kill_leftovers(marker: str) -> None:
    """SIGKILL the process group of every process whose command line holds MARKER
    (jobs of an interrupted run still waiting for their go file)."""
    import signal

    import psutil

    groups = set()
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, OSError):
            if any(marker in a for a in proc.info["cmdline"] or ()):
                groups.add(os.getpgid(proc.pid))
    for g in groups - {os.getpgrp()}:
        with contextlib.suppress(OSError):
            os.killpg(g, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--lines", type=int, default=30, help="lines (seconds) each chatty job prints")
    p.add_argument("--poll", type=float, default=10.0)
    p.add_argument("--many", type=int, default=2000, help="the large count of the cost section")
    p.add_argument("--megabytes", type=int, default=30)
    p.add_argument("--upstream-steps", default="100,250,500", help="smaller upstream job counts tried first")
    p.add_argument("--ticks", type=int, default=3, help="polls measured by the cost section")
    p.add_argument("--cost-poll", type=float, help="poll interval of the cost section (default: --poll)")
    p.add_argument("--cost-every", type=int, default=1, help="seconds between a cost job's lines")
    p.add_argument("--only", choices=["chatty", "restart", "cost", "progress", "upstream"], action="append")
    args = p.parse_args(argv)
    server = start_server()
    server.set_connection(CONN, USER, conn_timeout=30)
    server.set_connection(UPSTREAM_CONN, UPSTREAM_USER, conn_timeout=30)
    # The cost section polls without the host wait: each status call is then one poll.
    server.set_connection(CONN_NO_WAIT, USER, conn_timeout=30, wait_on_host=False)
    async_dir = f"~/bench-streaming-{os.getpid()}"
    hook = SSHAsyncJobHook(CONN, async_dir=async_dir)
    reads = Reads()
    global CALLS
    CALLS = Calls()
    out: dict[str, Any] = {}
    sections = args.only or ["chatty", "upstream", "restart", "cost", "progress"]
    try:
        if "chatty" in sections:
            out["chatty"] = section_chatty(hook, args.jobs, args.lines, args.poll, server.port)
            print(f"chatty: {json.dumps(out['chatty'])}", file=sys.stderr, flush=True)
        if "upstream" in sections:
            steps = [int(c) for c in args.upstream_steps.split(",") if c]
            out["upstream"] = section_upstream(args.jobs, steps, args.lines, args.poll, server.port)
        if "restart" in sections:
            out["restart"] = section_restart(hook, args.jobs, args.lines, args.poll, reads)
            print(f"restart: {json.dumps(out['restart'])}", file=sys.stderr, flush=True)
        if "cost" in sections:
            no_wait = SSHAsyncJobHook(CONN_NO_WAIT, async_dir=async_dir)
            out["cost"] = section_cost(
                no_wait, [100, args.many], args.cost_poll or args.poll, args.ticks, args.cost_every
            )
            print(f"cost: {json.dumps(out['cost'])}", file=sys.stderr, flush=True)
        if "progress" in sections:
            out["progress"] = section_progress(hook, args.megabytes)
            print(f"progress: {json.dumps(out['progress'])}", file=sys.stderr, flush=True)
    finally:
        kill_leftovers(f"bench-streaming-{os.getpid()}")
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)
        home = Path("~" + USER).expanduser()
        shutil.rmtree(home / async_dir.removeprefix("~/"), ignore_errors=True)
        for go in home.glob(f"bench-streaming-go-{os.getpid()}-*"):
            go.unlink()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
