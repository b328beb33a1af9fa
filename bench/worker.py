"""A stand-in triggerer: one process, one event loop, the real trigger code.

Run by bench/run_all.py as a child process so that its CPU time and memory
are the triggerer's alone:

    python bench/worker.py watch JOBS.json --poll 10 --duration 600
    python bench/worker.py output CONN_ID JOB_DIR

``watch`` runs one SSHAsyncJobTrigger per job of JOBS.json (a list of
{conn_id, job_id, job_dir}) until every one has fired or DURATION has
passed, and prints one JSON line: every event with its time, the process
CPU at each poll tick, the status and output calls, SSH connects, and the
RSS and open SSH connections sampled through the run.

``output`` follows one job with watch_job and a logger that only hashes
what it is given, and prints bytes, sha256, seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

import psutil  # noqa: E402

from airflow_ssh_async import SSHAsyncJobTrigger, client  # noqa: E402
from airflow_ssh_async.hooks import SSHAsyncJobHook  # noqa: E402
from airflow_ssh_async.job import JobRef  # noqa: E402
from airflow_ssh_async.watch import watch_job  # noqa: E402


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu() -> float:
    """CPU seconds of this process (all threads), at ns resolution."""
    return time.process_time()


class Recorder:
    """Remote calls and connects of this process, with wall time each."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.connects: list[dict[str, Any]] = []
        real_run, real_open = client.RemoteHost.run, client.open_connection
        rec = self

        async def run(self: client.RemoteHost, name: str, args: Any, **kw: Any) -> bytes:
            t0 = time.time()
            try:
                return await real_run(self, name, args, **kw)
            finally:
                rec.calls.append(
                    {"t": t0, "wall": time.time() - t0, "host": self.options.label, "name": name, "args": len(args)}
                )

        async def open_connection(options: Any) -> Any:
            rec.connects.append({"t": time.time(), "host": options.label})
            return await real_open(options)

        client.RemoteHost.run = run  # type: ignore[method-assign]
        client.open_connection = open_connection  # type: ignore[assignment]


def ssh_connections(ports: set[int]) -> dict[int, int]:
    """Established TCP connections of this process, by remote port."""
    out: dict[int, int] = {}
    for c in psutil.Process().net_connections(kind="tcp"):
        if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port in ports:
            out[c.raddr.port] = out.get(c.raddr.port, 0) + 1
    return out


async def watch(jobs: list[dict[str, str]], poll: float, duration: float, ports: set[int]) -> dict[str, Any]:
    rec = Recorder()
    events: dict[str, dict[str, Any]] = {}
    samples: list[dict[str, Any]] = []
    ticks: list[dict[str, float]] = []
    start = time.time()
    rss_start = rss_kb()

    async def one(job: dict[str, str]) -> None:
        trigger = SSHAsyncJobTrigger(
            job["conn_id"], job["job_id"], job_dir=job["job_dir"], poll_interval=poll, stream_output=False
        )
        event = await anext(trigger.run())
        result = event.payload.get("result") or {}
        events[job["job_id"]] = {
            "t": time.time(),
            "status": event.payload["status"],
            "state": result.get("state"),
            "stdout_tail": result.get("stdout_tail", ""),
            "message": event.payload.get("message", "")[:300],
        }

    async def sampler() -> None:
        while True:
            samples.append({"t": time.time(), "rss_kb": rss_kb(), "conns": ssh_connections(ports)})
            await asyncio.sleep(1.0)

    async def ticker() -> None:
        # CPU just before each wall-clock tick: between two samples lie whole polls.
        while True:
            await asyncio.sleep(poll - (time.time() % poll) - min(0.2, poll / 10))
            ticks.append({"t": time.time(), "cpu": cpu()})
            await asyncio.sleep(min(0.4, poll / 5))

    tasks = [asyncio.create_task(one(j)) for j in jobs]
    helpers = [asyncio.create_task(sampler()), asyncio.create_task(ticker())]
    done, pending = await asyncio.wait(tasks, timeout=duration)
    for t in pending:
        t.cancel()  # what a triggerer stop does: no on_kill, the jobs keep running
    await asyncio.gather(*pending, return_exceptions=True)
    for h in helpers:
        h.cancel()
    await asyncio.gather(*helpers, return_exceptions=True)
    usage = psutil.Process().memory_info()
    return {
        "jobs": len(jobs),
        "poll": poll,
        "start": start,
        "end": time.time(),
        "cpu_total": cpu(),
        "rss_start_kb": rss_start,
        "rss_peak_kb": max([s["rss_kb"] for s in samples] + [usage.rss // 1024]),
        "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "events": events,
        "unfinished": len(pending),
        "samples": samples,
        "ticks": ticks,
        "calls": rec.calls,
        "connects": rec.connects,
    }


class HashLog:
    """A task log that keeps only the size and sha256 of what it is given."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.bytes = 0
        self.lines = 0

    def info(self, fmt: str, *args: Any) -> None:
        line = (fmt % args if args else fmt).encode() + b"\n"
        self.sha.update(line)
        self.bytes += len(line)
        self.lines += 1

    warning = debug = error = info


async def output(conn_id: str, job_id: str, job_dir: str, poll: float) -> dict[str, Any]:
    rec = Recorder()
    log = HashLog()
    peak = rss_kb()
    rss_start = peak

    async def sampler() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_kb())
            await asyncio.sleep(0.01)

    s = asyncio.create_task(sampler())
    t0 = time.time()
    event = await watch_job(SSHAsyncJobHook(conn_id), JobRef(conn_id, job_id, job_dir), log=log, poll_interval=poll)
    took = time.time() - t0
    s.cancel()
    return {
        "seconds": took,
        "bytes": log.bytes,
        "lines": log.lines,
        "sha256": log.sha.hexdigest(),
        "state": (event.get("result") or {}).get("state"),
        "rss_start_kb": rss_start,
        "rss_peak_kb": peak,
        "output_calls": len([c for c in rec.calls if c["name"] == "output"]),
        "status_calls": len([c for c in rec.calls if c["name"] == "status"]),
    }


def main() -> int:
    logging.getLogger("airflow").setLevel(logging.WARNING)
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    w = sub.add_parser("watch")
    w.add_argument("jobs", type=Path)
    w.add_argument("--poll", type=float, default=10.0)
    w.add_argument("--duration", type=float, default=600.0)
    w.add_argument("--ports", default="")
    o = sub.add_parser("output")
    o.add_argument("conn_id")
    o.add_argument("job_id")
    o.add_argument("job_dir")
    o.add_argument("--poll", type=float, default=1.0)
    args = p.parse_args()
    if args.mode == "watch":
        ports = {int(x) for x in args.ports.split(",") if x}
        out = asyncio.run(watch(json.loads(args.jobs.read_text()), args.poll, args.duration, ports))
    else:
        out = asyncio.run(output(args.conn_id, args.job_id, args.job_dir, args.poll))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
