"""Many deferred tasks on the production topology: the Celery stack, two hosts, two triggerers.

    .venv/bin/python bench/celery_load.py --jobs 200 --json /tmp/celery_load.json

Starts two sshd ("hosts": 127.0.0.1 and 127.0.0.2) and the Celery stack of
tests/harness/airflow_stack.py (PostgreSQL, Redis, one Celery worker with its own
AIRFLOW_HOME, two triggerers), then triggers ``e2e_mapped`` (tests/e2e/dags) with
JOBS mapped tasks, half on each host. Every job notes its start and waits for a
release file; once all tasks are deferred it measures, then releases them all.

Checks (exit 1 if one fails): every task deferred, every job started exactly once,
every run succeeds, triggers on both triggerers, and per host as many SSH
connections from triggerers as triggerers hold jobs on it (one each).

Prints: launch time (trigger to all deferred) and rate, triggers per triggerer,
SSH connections per host and component, triggerer RSS before and with the jobs
and CPU while only watching, scheduler lag (release to the run's success; the
job ends within 2 s of the release, the trigger sees it within one 2 s poll).
Too slow for the suite (the launches and the 200 ``execute_complete`` runs go
through one worker); docs/deploying.md quotes its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness.airflow_stack import AirflowStack, wait_until  # noqa: E402
from tests.harness.procs import rss_kb  # noqa: E402
from tests.harness.sshd import home, start_server  # noqa: E402

USER = "asyncdash"
DAG = "e2e_mapped"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of PIDS (their own, not their reaped children's)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--watch", type=float, default=30.0, help="seconds of watching only, to measure CPU")
    parser.add_argument("--concurrency", type=int, default=16, help="the Celery worker's concurrency")
    parser.add_argument("--json", type=Path, help="write the figures here too")
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
    figures: dict[str, Any] = {"jobs": args.jobs, "worker_concurrency": args.concurrency}
    problems: list[str] = []
    stack = AirflowStack(
        REPO / "tests" / "e2e" / "dags",
        dag_ids=[DAG],
        parallelism=max(32, args.concurrency),
        kind="celery",
        worker_concurrency=args.concurrency,
        startup_timeout=600,  # a busy machine: the bench measures after the start, not the start
    )
    try:
        stack.start()
        figures["stack_startup_s"] = round(stack.startup_seconds or 0, 1)
        stack.unpause_dag(DAG)
        wait_until(lambda: stack.dag_exists(DAG), 120, f"{DAG} to be parsed")
        triggerers = {t.name: t for t in stack.triggerers}
        # memory of each triggerer's processes (the triggerer, its trigger runner, its log server)
        rss_idle = {name: sum(map(rss_kb, stack.component_processes(t))) for name, t in triggerers.items()}
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
        took = time.monotonic() - started
        figures["trigger_to_all_deferred_s"] = round(took, 1)
        figures["launches_per_s"] = round(args.jobs / took, 2)
        holders, _ = held_by(stack, tis, conns)
        figures["triggers_per_triggerer"] = holders
        if len(holders) < 2:
            problems.append(f"the triggers are not spread over both triggerers: {holders}")

        # Watching only: CPU of each triggerer (its whole session: the trigger runner
        # is a subprocess) over a window, and its memory with the jobs held.
        procs = {name: stack.component_processes(t) for name, t in triggerers.items()}
        cpu0 = {name: cpu_seconds(p) for name, p in procs.items()}
        time.sleep(args.watch)
        figures["triggerer_cpu_pct_while_watching"] = {
            name: round(100 * (cpu_seconds(p) - cpu0[name]) / args.watch, 1) for name, p in procs.items()
        }
        figures["triggerer_rss_mb"] = {
            name: {"idle": round(rss_idle[name] / 1024, 1), "with_jobs": round(sum(map(rss_kb, p)) / 1024, 1)}
            for name, p in procs.items()
        }
        # Who holds what now: a triggerer that missed its heartbeat on a busy machine hands its triggers over.
        holders_now, per_host = held_by(stack, stack.task_instances(DAG, run_id), conns)
        figures["triggers_per_triggerer_when_counted"] = holders_now
        connections = {}
        for conn, server in zip(conns, hosts, strict=True):
            by_pid = connections_by_pid(server.address, server.port)
            got = {}
            for comp in stack.components.values():
                n = sum(by_pid.get(pid, 0) for pid in stack.component_processes(comp)) if comp.alive() else 0
                if n:
                    got[comp.name] = n
            got["total"] = sum(by_pid.values())
            connections[conn] = got
            from_triggerers = {name: n for name, n in got.items() if name in triggerers}
            want = {name: 1 for name in per_host[conn]}
            if from_triggerers != want:
                problems.append(f"{conn}: connections from triggerers {from_triggerers}, expected {want}")
        figures["ssh_connections"] = connections

        release.write_text("go\n")
        released = time.monotonic()
        state = wait_until(lambda: run_state(stack, run_id), 1800, "the run to finish", interval=2)
        figures["release_to_run_done_s"] = round(time.monotonic() - released, 1)
        figures["run_state"] = state
        if state != "success":
            problems.append(f"the run ended {state}")
        files = [starts / str(i) for i in range(args.jobs)]
        counts = [len(f.read_text().splitlines()) if f.exists() else 0 for f in files]
        if any(c != 1 for c in counts):
            problems.append(f"jobs not started exactly once: {[(i, c) for i, c in enumerate(counts) if c != 1][:10]}")
        figures["total_s"] = round(time.monotonic() - started, 1)
    except Exception as exc:  # the figures so far are printed all the same
        problems.append(f"{type(exc).__name__}: {str(exc)[:2000]}")
    finally:
        release.touch()
        stack.stop(remove_home=not problems)
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
