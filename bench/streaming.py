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
  cost      triggerer CPU per job per poll at 100 and at --many jobs
  progress  30 MB of carriage-return progress output: peak RSS growth,
            longest log record, longest event-loop stall
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import resource
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


def derived_id(tag: str, i: int) -> str:
    return f"warehouse_nightly_rebuild-nightly_partition_rebuild_{i:04d}-scheduled__2026-12-01T02_00-{tag}{i:08x}"


def chatty(lines: int) -> str:
    return (
        f'i=0; while [ $i -lt {lines} ]; do i=$((i+1)); echo "out $i"; echo "err $i" >&2; '
        f'echo "step $i" >>"$AIRFLOW_ASYNC_PROGRESS"; sleep 1; done'
    )


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
    """Every output read made in this process: (job dir, stream, offset, bytes)."""

    def __init__(self) -> None:
        self.done: list[tuple[str, str, int, int]] = []
        real = hooks.SSHAsyncJobHook.aread
        me = self

        async def aread(self: SSHAsyncJobHook, requests: Any, **kw: Any) -> list[hooks.Chunk]:
            chunks = await real(self, requests, **kw)
            for r, c in zip(requests, chunks, strict=True):
                r = r if isinstance(r, hooks.ReadRequest) else hooks.ReadRequest(*r)
                me.done.append((r.job_dir, r.stream, r.offset, len(c.data)))
            return chunks

        hooks.SSHAsyncJobHook.aread = aread  # type: ignore[method-assign]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def launch(hook: SSHAsyncJobHook, ids: list[str], command: str) -> list[JobRef]:
    async with client.remote_host(await hook.aget_options()) as host:
        out = []
        for i in range(0, len(ids), 50):
            launched = await asyncio.gather(*(hook.alaunch(j, command, host=host) for j in ids[i : i + 50]))
            out += [JobRef(CONN, j.job_id, j.job_dir) for j in launched]
        return out


async def watch_all(
    hook: SSHAsyncJobHook, refs: list[JobRef], logs: dict[str, CountingLog], poll: float, key: str, stop: float = 0
) -> dict[str, tuple[dict[str, Any], float]]:
    """Watch every job; return job id -> (event, time). STOP > 0: cancel every
    watcher after STOP seconds (a killed triggerer) and return what ended."""

    async def one(ref: JobRef) -> tuple[dict[str, Any], float]:
        event = await watch_job(hook, ref, log=logs[ref.job_id], poll_interval=poll, log_key=key)
        return event, time.time()

    tasks = {r.job_id: asyncio.create_task(one(r)) for r in refs}
    if stop:
        await asyncio.sleep(stop)
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


def section_chatty(hook: SSHAsyncJobHook, jobs: int, lines: int, poll: float) -> dict[str, Any]:
    ids = [derived_id("c", i) for i in range(jobs)]
    logs = {j: CountingLog() for j in ids}

    async def go() -> dict[str, Any]:
        refs = await launch(hook, ids, chatty(lines))
        cpu0, t0 = time.process_time(), time.monotonic()
        most = 0

        async def sample() -> None:
            nonlocal most
            while True:
                most = max(most, client.open_connections())
                await asyncio.sleep(1)

        sampler = asyncio.create_task(sample())
        events = await watch_all(hook, refs, logs, poll, "chatty")
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        sampler.cancel()
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
            "triggerer_cpu_ms_per_job_per_poll": round(1000 * cpu / (jobs * polls), 3),
            "peak_rss_mb": round(rss_mb(), 1),
            "ssh_connections": most,
            "end_to_event_s_median": round(lag[len(lag) // 2], 2) if lag else None,
            "end_to_event_s_max": round(lag[-1], 2) if lag else None,
        }

    return asyncio.run(go())


def section_restart(hook: SSHAsyncJobHook, jobs: int, lines: int, poll: float, reads: Reads) -> dict[str, Any]:
    ids = [derived_id("r", i) for i in range(jobs)]
    logs = {j: CountingLog() for j in ids}

    async def go() -> dict[str, Any]:
        refs = await launch(hook, ids, chatty(lines))
        await watch_all(hook, refs, logs, poll, "restart", stop=lines / 2)
        first = len(reads.done)
        read_to: dict[tuple[str, str], int] = collections.defaultdict(int)
        for d, s, off, n in reads.done:
            read_to[d, s] = max(read_to[d, s], off + n)
        events = await watch_all(hook, refs, logs, poll, "restart")
        again = sum(
            max(0, min(off + n, read_to[d, s]) - off) for d, s, off, n in reads.done[first:] if off < read_to[d, s]
        )
        return {
            "jobs": jobs,
            "events": sum(e["status"] == "finished" for e, _ in events.values()),
            **check_lines(logs, lines),
            "bytes_read_before_the_kill": sum(read_to.values()),
            "bytes_read_again": again,
        }

    return asyncio.run(go())


def section_cost(hook: SSHAsyncJobHook, counts: list[int], poll: float, ticks: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in counts:
        ids = [derived_id(f"k{n}-", i) for i in range(n)]
        cpu = asyncio.run(_cost_run(hook, ids, poll, ticks, f"cost{n}"))
        out[str(n)] = round(1000 * cpu / (n * ticks), 3)
        asyncio.run(cancel_all(hook, ids))
    a, b = out[str(counts[0])], out[str(counts[-1])]
    out["ratio"] = round(b / a, 2) if a else None
    return {"triggerer_cpu_ms_per_job_per_poll": out}


async def _cost_run(hook: SSHAsyncJobHook, ids: list[str], poll: float, ticks: int, key: str) -> float:
    """Triggerer CPU of TICKS polls of chatty jobs IDS (after they have started)."""
    logs = {j: CountingLog() for j in ids}
    refs = await launch(hook, ids, chatty(int(poll * (ticks + 2))))
    await asyncio.sleep(poll)  # the jobs are chatting
    cpu0 = time.process_time()
    await watch_all(hook, refs, logs, poll, key, stop=poll * ticks)
    return time.process_time() - cpu0


async def cancel_all(hook: SSHAsyncJobHook, ids: list[str]) -> None:
    async with client.remote_host(await hook.aget_options()) as host:
        for j in ids:
            with contextlib.suppress(Exception):  # finished already
                await hook.acancel(hook.job_dir(j), grace=1, host=host)


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--lines", type=int, default=30, help="lines (seconds) each chatty job prints")
    p.add_argument("--poll", type=float, default=10.0)
    p.add_argument("--many", type=int, default=2000, help="the large count of the cost section")
    p.add_argument("--megabytes", type=int, default=30)
    p.add_argument("--only", choices=["chatty", "restart", "cost", "progress"], action="append")
    args = p.parse_args(argv)
    server = start_server()
    server.set_connection(CONN, USER, conn_timeout=30)
    async_dir = f"~/bench-streaming-{os.getpid()}"
    hook = SSHAsyncJobHook(CONN, async_dir=async_dir)
    reads = Reads()
    out: dict[str, Any] = {}
    sections = args.only or ["chatty", "restart", "cost", "progress"]
    try:
        if "chatty" in sections:
            out["chatty"] = section_chatty(hook, args.jobs, args.lines, args.poll)
        if "restart" in sections:
            out["restart"] = section_restart(hook, args.jobs, args.lines, args.poll, reads)
        if "cost" in sections:
            out["cost"] = section_cost(hook, [100, args.many], args.poll, 3)
        if "progress" in sections:
            out["progress"] = section_progress(hook, args.megabytes)
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)
        home = Path("~" + USER).expanduser()
        shutil.rmtree(home / async_dir.removeprefix("~/"), ignore_errors=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
