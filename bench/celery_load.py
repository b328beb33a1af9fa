"""Many deferred tasks on the production topology: the Celery stack, two hosts, two triggerers.

    .venv/bin/python bench/celery_load.py --jobs 200 --json /tmp/celery_load.json

Starts two sshd ("hosts": 127.0.0.1 and 127.0.0.2) and the Celery stack of
tests/harness/airflow_stack.py (PostgreSQL, Redis, one Celery worker with its own
AIRFLOW_HOME, two triggerers), then triggers ``e2e_mapped`` (tests/e2e/dags) with
JOBS mapped tasks, half on each host. Every job notes its start and waits for a
release file; once all tasks are deferred it measures, then releases them all.

Checks (exit 1 if one fails): every task deferred, every job started exactly once,
every run succeeds, triggers on both triggerers, every trigger fired, and per host
as many SSH connections from triggerers as triggerers hold jobs on it (one each;
counted up to 4 times 10 s apart while a trigger handed over between triggerers
settles). This exit status is the load scenario's pass/fail (docs/reliability.md).

Prints: launch time (trigger to all deferred) and rate, triggers per triggerer,
SSH connections and sshd processes per host; per phase (idle, launch, watch,
finish) the CPU seconds and peak memory of each triggerer, the scheduler, the
worker, the API server, the DAG processor and each host's sshd with its
sessions (bench/proc_usage.py); release-to-success latency per task (each
try's end date after the release: the job ends within 2 s of it, the trigger
sees that within one 2 s poll, then the scheduler and a worker run
``execute_complete``). Too slow for the suite (the launches and the 200
``execute_complete`` runs go through one worker); docs/deploying.md quotes its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from proc_usage import Row, Sampler, members, table  # noqa: E402

from tests.harness.airflow_stack import AirflowStack, Component, wait_until  # noqa: E402
from tests.harness.sshd import SSHServer, home, start_server  # noqa: E402

USER = "asyncdash"
DAG = "e2e_mapped"


def connections_by_pid(address: str, port: int) -> dict[int, int]:
    """Established TCP connections to ADDRESS:PORT per client pid, as `ss -tnp` shows them."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", "dst", f"{address}:{port}"], capture_output=True, text=True, timeout=30
    ).stdout
    found: dict[int, int] = {}
    for line in out.splitlines():
        for pid in {int(p) for p in re.findall(r"pid=(\d+)", line)}:
            found[pid] = found.get(pid, 0) + 1
    return found


def run_state(stack: AirflowStack, run_id: str) -> str | None:
    """The run's state once it is final; None meanwhile, or while a starved API server times out."""
    try:
        state = stack.dag_run_state(DAG, run_id)
    except httpx.TimeoutException:
        return None
    return state if state in ("success", "failed") else None


def held_by(
    stack: AirflowStack, tis: list[dict[str, Any]], conns: list[str]
) -> tuple[dict[str, int], dict[str, set[str]]]:
    """Triggers per triggerer, and per connection the triggerers that hold its jobs."""
    by_job = {c.job_id: c.name for c in stack.triggerers}
    holders: dict[str, int] = {}
    per_host: dict[str, set[str]] = {conn: set() for conn in conns}
    for ti in tis:
        job = (ti.get("trigger") or {}).get("triggerer_id")
        if ti["task_id"] != "job" or job is None:
            continue
        name = by_job.get(job, f"job-{job}")
        holders[name] = holders.get(name, 0) + 1
        per_host[conns[ti["map_index"] % 2]].add(name)
    return holders, per_host


def count_connections(
    stack: AirflowStack, hosts: list[SSHServer], conns: list[str], run_id: str
) -> tuple[dict[str, int], dict[str, Any], dict[str, Any], list[str]]:
    """Triggers per triggerer, connections per host and component, sshd processes per host, and
    the hosts whose connections from triggerers are not one per triggerer holding their jobs."""
    holders, per_host = held_by(stack, stack.task_instances(DAG, run_id), conns)
    connections, sshd, mismatches = {}, {}, []
    for conn, server in zip(conns, hosts, strict=True):
        by_pid = connections_by_pid(server.address, server.port)
        got = {}
        for comp in stack.components.values():
            n = sum(by_pid.get(pid, 0) for pid in stack.component_processes(comp)) if comp.alive() else 0
            if n:
                got[comp.name] = n
        got["total"] = sum(by_pid.values())
        connections[conn] = got
        sshd[conn] = sshd_processes(server)
        from_triggerers = {name: n for name, n in got.items() if name.startswith("triggerer-")}
        want = {name: 1 for name in per_host[conn]}
        if from_triggerers != want:
            mismatches.append(f"{conn}: connections from triggerers {from_triggerers}, expected {want}")
    return holders, connections, sshd, mismatches


def component_group(stack: AirflowStack, prefix: str) -> Callable[[dict[int, Row]], set[int]]:
    """The processes of every running component whose name starts with PREFIX (looked up at each
    sample: a worker or triggerer started later counts too)."""

    def pids(rows: dict[int, Row]) -> set[int]:
        comps: list[Component] = [c for n, c in stack.components.items() if n.startswith(prefix) and c.alive()]
        return members(rows, {c.pid for c in comps}, {c.pid for c in comps})

    return pids


def sshd_group(server: SSHServer) -> Callable[[dict[int, Row]], set[int]]:
    """A host's sshd: its listener, the per-connection processes and the commands they run."""
    listener = server.process.pid if server.process else -1
    return lambda rows: members(rows, set(), {listener})


def sshd_processes(server: SSHServer) -> dict[str, int]:
    """Per-connection sshd processes below the listener (OpenSSH 9.2: a root monitor
    ``sshd: user [priv]`` and the user's ``sshd: user@notty`` per connection)."""
    listener = server.process.pid if server.process else -1
    rows = table()
    below = members(rows, set(), {listener}) - {listener}
    titles = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace") for pid in below]
    return {
        "monitors": sum("[priv]" in t for t in titles),
        "user_sessions": sum("@notty" in t for t in titles),
        "other": sum(not ("[priv]" in t or "@notty" in t) for t in titles),
    }


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 1)

    return {"n": len(values), "p50": at(0.5), "p95": at(0.95), "max": round(values[-1], 1)}


def epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None


def trigger_logs(stack: AirflowStack) -> list[Path]:
    """The trigger log files of the run's mapped tasks: one per triggerer that ran a task's trigger."""
    return list((stack.home / "logs" / f"dag_id={DAG}").glob("run_id=*/task_id=job/map_index=*/*.log.trigger.*.log"))


def trigger_fired_at(stack: AirflowStack) -> dict[int, float]:
    """When each map index's trigger fired (UTC stamp): its "Trigger fired event" entry.

    Mostly in the task's trigger log; a few land in the triggerer's own log
    instead (Airflow closes the try's log context as the event arrives), so both are read.
    """
    fired: dict[int, float] = {}

    def note(map_index: int, iso: str) -> None:
        stamp = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
        fired[map_index] = min(stamp, fired.get(map_index, stamp))

    for path in trigger_logs(stack):
        for line in path.read_text(errors="replace").splitlines():
            if '"Trigger fired event"' in line:
                note(int(path.parent.name.split("=")[1]), json.loads(line)["timestamp"])
    for comp in stack.components.values():
        if comp.name.startswith("triggerer-"):
            for line in comp.log_path.read_text(errors="replace").splitlines():
                found = re.search(r"Trigger fired event .*dag_id=" + DAG + r" .*map_index=(\d+)", line)
                if found:
                    note(int(found.group(1)), line.split()[0])
    return fired


def duplicates(stack: AirflowStack) -> dict[str, Any]:
    """Triggers that ran on two triggerers for a while, and the triggerers' late heartbeats.

    Airflow hands a triggerer's triggers to another once its heartbeat is older
    than ``triggerer_health_check_threshold``; the first one runs them on until its
    next sync cancels them (``on_kill`` then leaves the job alone: the task is
    still deferred). Each trigger log file is one triggerer's run of a trigger.
    """
    logs = trigger_logs(stack)
    per_ti: dict[str, int] = {}
    cancelled = kept = 0
    for path in logs:
        per_ti[path.parent.name] = per_ti.get(path.parent.name, 0) + 1
        text = path.read_text(errors="replace")
        cancelled += text.count("Trigger cancelled by user action")
        kept += text.count("keeps running for the next try")
    late = []
    for comp in stack.components.values():
        if comp.name.startswith("triggerer-"):
            late += re.findall(r"Heartbeat recovered after ([\d.]+) seconds", comp.log_path.read_text(errors="replace"))
    return {
        "tasks_whose_trigger_ran_on_two_triggerers": sum(n > 1 for n in per_ti.values()),
        "trigger_copies_cancelled": cancelled,
        "of_which_on_kill_left_the_job_running": kept,
        "triggerer_heartbeats_recovered_after_s": sorted(float(x) for x in late),
    }


def usage_figures(sampler: Sampler) -> dict[str, Any]:
    """Per group: CPU seconds and % of one core per phase, peak RSS (MB) per phase.

    A phase whose CPU came out negative is None: sshd connections that close take
    their sessions' time with them (seen in the finish phase, as the triggerers'
    connections close), so for sshd only the watch phase, whose connections stay
    open, is a measurement; launch is a lower bound.
    """
    out: dict[str, Any] = {}
    for name, usage in sampler.usage.items():
        cpu_s = {phase: (cpu if cpu >= 0 else None) for phase, cpu in usage.cpu_s.items()}
        out[name] = {
            "cpu_s": cpu_s,
            "cpu_pct_of_a_core": {
                phase: round(100 * cpu / sampler.durations[phase], 1) if cpu is not None else None
                for phase, cpu in cpu_s.items()
                if sampler.durations.get(phase)
            },
            "peak_rss_mb": {phase: round(kb / 1024, 1) for phase, kb in usage.peak_rss_kb.items()},
            "peak_processes": usage.peak_procs,
        }
    return out


def stop_on_sigterm(signum: int, frame: object) -> None:
    """``timeout`` sends SIGTERM: leave through the ``finally`` that stops the stack, not around it."""
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--watch", type=float, default=60.0, help="seconds of watching only, to measure CPU")
    parser.add_argument("--concurrency", type=int, default=16, help="the Celery worker's concurrency")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--keep-home", action="store_true", help="keep AIRFLOW_HOME (logs) when the checks pass too")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="celery-load-"))
    hosts = [start_server(work / "a"), start_server(work / "b", address="127.0.0.2")]
    conns = ["test_asyncdash", "test_asyncdash_b"]
    for conn, server in zip(conns, hosts, strict=True):
        server.set_connection(conn, USER)
    tag = os.urandom(3).hex()
    user_home = home(USER)
    release = user_home / f"load-release-{tag}"
    starts = user_home / f"load-starts-{tag}"
    starts.mkdir()
    shutil.chown(starts, USER, USER)
    entries = [
        {
            "ssh_conn_id": conns[i % 2],
            "job_id": f"load-{tag}-{i}",
            # poll the release file every 2 s: 200 jobs fork 100 sleeps a second, not 1,000
            "command": f"echo $$ >> {starts}/{i}; while [ ! -e {release} ]; do sleep 2; done; echo done {i}",
        }
        for i in range(args.jobs)
    ]
    figures: dict[str, Any] = {"jobs": args.jobs, "worker_concurrency": args.concurrency, "load_avg": {}}
    problems: list[str] = []
    stack = AirflowStack(
        REPO / "tests" / "e2e" / "dags",
        dag_ids=[DAG],
        parallelism=max(32, args.concurrency),
        kind="celery",
        worker_concurrency=args.concurrency,
        startup_timeout=600,  # a busy machine: the bench measures after the start, not the start
    )
    sampler: Sampler | None = None
    try:
        stack.start()
        figures["stack_startup_s"] = round(stack.startup_seconds or 0, 1)
        stack.unpause_dag(DAG)
        wait_until(lambda: stack.dag_exists(DAG), 120, f"{DAG} to be parsed")
        groups = {name: component_group(stack, name) for name in ("triggerer-1", "triggerer-2")}
        groups |= {
            "scheduler": component_group(stack, "scheduler"),
            "worker": component_group(stack, "celery-worker-"),
            "api-server": component_group(stack, "api-server"),
            "dag-processor": component_group(stack, "dag-processor"),
        }
        groups |= {f"sshd {conn}": sshd_group(server) for conn, server in zip(conns, hosts, strict=True)}
        sampler = Sampler(groups).start()
        time.sleep(10)
        sampler.mark("idle")
        figures["load_avg"]["idle"] = os.getloadavg()[0]
        started = time.monotonic()
        run_id = stack.trigger_dag(DAG, conf={"jobs": entries})

        def deferred() -> list[dict[str, Any]] | None:
            try:
                tis = [t for t in stack.task_instances(DAG, run_id) if t["task_id"] == "job"]
            except httpx.TimeoutException:  # an API server starved by the load: ask again
                return None
            done = [t for t in tis if t["state"] == "deferred" and (t.get("trigger") or {}).get("triggerer_id")]
            figures["deferred_seen"] = len(done)
            bad = [t for t in tis if t["state"] in ("failed", "upstream_failed", "up_for_retry")]
            if bad:
                raise AssertionError(f"{len(bad)} tasks failed before deferring: {bad[0]}")
            return tis if len(tis) == args.jobs and len(done) == args.jobs else None

        tis = wait_until(
            deferred, 1800, f"all {args.jobs} tasks deferred and held", interval=5, check=stack.check_alive
        )
        sampler.mark("launch")
        figures["load_avg"]["launch"] = os.getloadavg()[0]
        took = time.monotonic() - started
        figures["trigger_to_all_deferred_s"] = round(took, 1)
        figures["launches_per_s"] = round(args.jobs / took, 2)
        holders, _ = held_by(stack, tis, conns)
        figures["triggers_per_triggerer"] = holders
        if len(holders) < 2:
            problems.append(f"the triggers are not spread over both triggerers: {holders}")

        time.sleep(args.watch)  # watching only
        sampler.mark("watch")
        figures["load_avg"]["watch"] = os.getloadavg()[0]
        # Who holds what now, and the connections: a triggerer that missed its heartbeat on a busy
        # machine hands its triggers over, and keeps its connection until its next sync cancels
        # them. Count again (up to 4 times, 10 s apart) until the two agree; the tries are a figure.
        attempts = 0
        while True:
            attempts += 1
            holders_now, connections, sshd, mismatches = count_connections(stack, hosts, conns, run_id)
            if not mismatches or attempts == 4:
                break
            time.sleep(10)
        figures["connection_count_attempts"] = attempts
        figures["triggers_per_triggerer_when_counted"] = holders_now
        figures["ssh_connections"] = connections
        figures["sshd_processes_while_watching"] = sshd
        problems += mismatches

        release.write_text("go\n")
        released, released_at = time.monotonic(), time.time()
        state = wait_until(lambda: run_state(stack, run_id), 1800, "the run to finish", interval=2)
        sampler.mark("finish")
        figures["load_avg"]["finish"] = os.getloadavg()[0]
        figures["release_to_run_done_s"] = round(time.monotonic() - released, 1)
        figures["run_state"] = state
        if state != "success":
            problems.append(f"the run ended {state}")
        ends = [epoch(t.get("end_date")) for t in stack.task_instances(DAG, run_id) if t["task_id"] == "job"]
        figures["release_to_task_success_s"] = percentiles([e - released_at for e in ends if e is not None])
        # The provider's part of that: the job ends within 2 s of the release, the trigger sees it within a poll.
        fired = trigger_fired_at(stack)
        figures["release_to_trigger_fired_s"] = percentiles([f - released_at for f in fired.values()])
        figures["handovers"] = duplicates(stack)
        if len(fired) != args.jobs:
            problems.append(f"{len(fired)} triggers fired, expected {args.jobs}")
        files = [starts / str(i) for i in range(args.jobs)]
        counts = [len(f.read_text().splitlines()) if f.exists() else 0 for f in files]
        if any(c != 1 for c in counts):
            problems.append(f"jobs not started exactly once: {[(i, c) for i, c in enumerate(counts) if c != 1][:10]}")
        figures["total_s"] = round(time.monotonic() - started, 1)
    except (Exception, KeyboardInterrupt) as exc:  # the figures so far are printed all the same
        problems.append(f"{type(exc).__name__}: {str(exc)[:2000]}")
    finally:
        if sampler is not None:
            sampler.stop()
            figures["phase_s"] = {k: round(v, 1) for k, v in sampler.durations.items()}
            figures["usage"] = usage_figures(sampler)
        release.touch()
        keep = bool(problems) or args.keep_home
        stack.stop(remove_home=not keep)
        if keep:
            figures["airflow_home"] = str(stack.home)
        for server in hosts:
            server.stop()
        shutil.rmtree(starts, ignore_errors=True)
        release.unlink(missing_ok=True)
        for d in (user_home / ".airflow_async").glob(f"load-{tag}-*"):
            shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    figures["problems"] = problems
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
