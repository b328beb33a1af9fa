"""Job end to trigger event, SSH execs per minute and the host's CPU of waiting (issue 17).

    .venv/bin/python bench/end_latency.py --jobs 1,100,1000 --upstream 1,100 --json /tmp/end.json

Starts a throwaway sshd on 127.0.0.1 (tests/harness; root). For each job
count N: launches N jobs (`sleep S`, S from FIRST to FIRST + SPREAD seconds
so that ends come one after another, counted from 5 s after the watch began:
each job first waits on a FIFO, see Gate) and watches them with N triggers in one
event loop at poll_interval=10, as a triggerer does, three ways in turn:
ours with the wait on the host (the default), ours with ``wait_on_host``
false (every earlier version: one status call per tick) and upstream's
SSHRemoteJobTrigger (apache-airflow-providers-ssh 7.0.1; one connection per
job, so it is run only for the counts given to --upstream). The latency of
a job is its event's time minus the mtime of the file that marks its end
(our result.json, upstream's exit_code): the host is this machine, one
clock. SSH execs are counted per script from the first event to the last.
Then the host CPU of waiting: 1,000 (--cpu-jobs) jobs that run on, watched
with the wait for --cpu-seconds: the CPU time (user + system, reaped
children included) of every process under our sshd's listener, per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

from peers import OperatorPeer, quiet_logs  # noqa: E402

from airflow_ssh_async import SSHAsyncJobTrigger, client  # noqa: E402
from airflow_ssh_async.client import remote_host  # noqa: E402
from airflow_ssh_async.hooks import SSHAsyncJobHook  # noqa: E402
from tests.harness.procs import descendants  # noqa: E402
from tests.harness.sshd import SSHServer, start_server  # noqa: E402

POLL = 10.0
DASH, BASH = "asyncdash", "asyncbash"
TICKS = os.sysconf("SC_CLK_TCK")


class Log:
    def info(self, *a: Any) -> None: ...

    warning = error = debug = info


class Execs:
    """Every remote script our client runs, with its time."""

    def __init__(self) -> None:
        self.runs: list[tuple[float, str]] = []
        real = client.RemoteHost.run
        execs = self

        async def run(self: client.RemoteHost, name: str, args: Any, **kw: Any) -> bytes:
            execs.runs.append((time.monotonic(), name))
            return await real(self, name, args, **kw)

        client.RemoteHost.run = run  # type: ignore[method-assign]

    def per_minute(self, start: float, end: float) -> dict[str, float]:
        minutes = max(end - start, 1.0) / 60
        names = sorted({n for _, n in self.runs})
        return {n: round(sum(1 for t, m in self.runs if m == n and start <= t <= end) / minutes, 1) for n in names}


def remove_jobs(dirs: list[str]) -> None:
    """End and remove the bench's jobs directly: the host is this machine, and
    a thousand cancels over SSH would take longer than the bench."""
    for d in dirs:
        try:
            pgid = json.loads((Path(d) / "job.json").read_text())["pgid"]
            os.killpg(int(pgid), signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass
    time.sleep(1)  # the supervisors write their results
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def pctl(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "n": len(latencies),
        "median_s": round(statistics.median(latencies), 2),
        "p95_s": round(pctl(latencies, 0.95), 2),
        "max_s": round(max(latencies), 2),
    }


class Gate:
    """A FIFO every job opens before its `sleep`: launching a thousand jobs takes
    longer than the first one runs, so their clocks start only when every
    trigger watches (a writer's open and close releases all the readers)."""

    def __init__(self) -> None:
        self.path = Path(f"/tmp/bench-end-gate-{uuid.uuid4().hex[:8]}")
        os.mkfifo(self.path, 0o666)
        os.chmod(self.path, 0o666)

    def command(self, seconds: float) -> str:
        return f"cat {self.path} >/dev/null; sleep {seconds:.2f}"

    def open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


async def release_later(gate: Gate, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await asyncio.to_thread(gate.open)


async def launch_many(conn_id: str, durations: list[float], gate: Gate | None = None) -> list[tuple[str, str]]:
    hook = SSHAsyncJobHook(conn_id)
    async with remote_host(await hook.aget_options()) as host:
        sem = asyncio.Semaphore(8)

        async def one(d: float) -> tuple[str, str]:
            async with sem:
                job_id = f"bench-end-{uuid.uuid4().hex[:10]}"
                command = gate.command(d) if gate else f"sleep {d:.2f}"
                launched = await hook.alaunch(job_id, command, host=host)
                return job_id, launched.job_dir

        return await asyncio.gather(*(one(d) for d in durations))


def durations(n: int, first: float, spread: float) -> list[float]:
    return [first + spread * i / max(1, n - 1) for i in range(n)]


async def watch_ours(conn_id: str, jobs: list[tuple[str, str]], gate: Gate | None = None) -> list[tuple[str, float]]:
    async def one(job_id: str, job_dir: str) -> tuple[str, float]:
        trigger = SSHAsyncJobTrigger(conn_id, job_id, job_dir=job_dir, poll_interval=POLL)
        trigger._log = Log()  # type: ignore[assignment]
        await anext(trigger.run())
        return job_dir, time.time()

    if gate:
        asyncio.get_running_loop().create_task(release_later(gate, 5))
    return await asyncio.gather(*(one(j, d) for j, d in jobs))


def run_ours(conn_id: str, n: int, first: float, spread: float, execs: Execs) -> dict[str, Any]:
    gate = Gate()
    jobs = asyncio.run(launch_many(conn_id, durations(n, first, spread), gate))
    mark = len(execs.runs)
    started = time.monotonic()
    events = asyncio.run(watch_ours(conn_id, jobs, gate))
    gate.remove()
    ended = time.monotonic()
    latencies = [at - os.stat(Path(d) / "result.json").st_mtime for d, at in events]
    runs = execs.runs[mark:]
    window = Execs.__new__(Execs)
    window.runs = runs
    out = {"jobs": n, **summary(latencies), "execs_per_min": window.per_minute(started, ended)}
    out["watch_s"] = round(ended - started, 1)
    remove_jobs([d for _, d in jobs])
    return out


def run_upstream(n: int, first: float, spread: float) -> dict[str, Any]:
    peer = OperatorPeer("bench_upstream", remote_os="posix")
    triggers = []
    gate = Gate()
    t0 = time.monotonic()
    for d in durations(n, first, spread):
        trigger = peer.submit(gate.command(d))[0]
        trigger.poll_interval = int(POLL)
        triggers.append(trigger)
    submit_s = time.monotonic() - t0

    async def one(trigger: Any) -> tuple[Any, float]:
        trigger._log = Log()
        await anext(trigger.run())
        return trigger, time.time()

    async def all_of() -> list[tuple[Any, float]]:
        asyncio.get_running_loop().create_task(release_later(gate, 5))
        return await asyncio.gather(*(one(t) for t in triggers))

    started = time.monotonic()
    events = asyncio.run(all_of())
    ended = time.monotonic()
    gate.remove()
    latencies = [at - os.stat(t.exit_code_file).st_mtime for t, at in events]
    # Its own cost: one connection per trigger, each poll two execs (exit_code, log chunk).
    out = {"jobs": n, **summary(latencies), "submit_s": round(submit_s, 1), "watch_s": round(ended - started, 1)}
    out["execs_per_min_estimate"] = round(2 * n * 60 / POLL, 1)
    peer.cleanup(triggers)
    return out


def cpu_seconds(root: int) -> float:
    total = 0
    for pid in descendants(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / TICKS


def run_cpu(server: SSHServer, conn_id: str, n: int, seconds: float, execs: Execs) -> dict[str, Any]:
    jobs = asyncio.run(launch_many(conn_id, [seconds + 600] * n))
    window: list[float] = []
    assert server.process is not None

    async def scenario() -> tuple[float, float]:
        tasks = [asyncio.create_task(watch_ours(conn_id, [job])) for job in jobs]
        await asyncio.sleep(15)  # first polls done, output read: now only waits
        c0, t0 = cpu_seconds(server.process.pid), time.monotonic()
        await asyncio.sleep(seconds)
        c1, t1 = cpu_seconds(server.process.pid), time.monotonic()
        window[:] = [t0, t1]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return c1 - c0, t1 - t0

    cpu, wall = asyncio.run(scenario())
    remove_jobs([d for _, d in jobs])
    # What the host ran in the window: each call costs a report of every job.
    calls = {name: sum(1 for t, m in execs.runs if m == name and window[0] <= t <= window[1]) for _, name in execs.runs}
    return {
        "jobs": n,
        "window_s": round(wall, 1),
        "cpu_s": round(cpu, 2),
        "core_percent": round(100 * cpu / wall, 2),
        "calls_in_window": calls,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", default="1,100,1000")
    ap.add_argument("--upstream", default="1,100")
    ap.add_argument("--first", type=float, default=15.0, help="seconds until the first job ends")
    ap.add_argument("--spread", type=float, default=60.0, help="seconds over which the ends are spread")
    ap.add_argument("--cpu-jobs", type=int, default=1000)
    ap.add_argument("--cpu-seconds", type=float, default=60.0)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    quiet_logs()
    server = start_server()
    server.set_connection("bench_wait", DASH, conn_timeout=10)
    server.set_connection("bench_nowait", DASH, conn_timeout=10, wait_on_host=False)
    server.set_connection("bench_upstream", BASH, conn_timeout=10)
    execs = Execs()
    result: dict[str, Any] = {"poll_interval": POLL, "first": args.first, "spread": args.spread, "rows": []}
    try:
        for n in [int(x) for x in args.jobs.split(",") if x]:
            for mode, conn in (("wait", "bench_wait"), ("no wait", "bench_nowait")):
                print(f"{n} jobs, {mode}", file=sys.stderr)
                row = {"case": f"ours, {mode}", **run_ours(conn, n, args.first, args.spread, execs)}
                result["rows"].append(row)
                print(json.dumps(row), file=sys.stderr)
            if str(n) in args.upstream.split(","):
                print(f"{n} jobs, upstream", file=sys.stderr)
                row = {"case": "SSHRemoteJobTrigger", **run_upstream(n, args.first, args.spread)}
                result["rows"].append(row)
                print(json.dumps(row), file=sys.stderr)
        if args.cpu_jobs:
            print(f"cpu: {args.cpu_jobs} jobs waited on for {args.cpu_seconds} s", file=sys.stderr)
            result["cpu"] = run_cpu(server, "bench_wait", args.cpu_jobs, args.cpu_seconds, execs)
            print(json.dumps(result["cpu"]), file=sys.stderr)
    finally:
        server.stop()
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
