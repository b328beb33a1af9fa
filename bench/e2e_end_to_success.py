"""A job's end to its task's ``success`` on a running Airflow (issue 17, end to end).

    flock /work/heavy.lock timeout 1500 .venv/bin/python bench/e2e_end_to_success.py --jobs 12 --json /tmp/e2e_end.json

Starts two sshd ("hosts": 127.0.0.1 with the wait on the host, the default;
127.0.0.2 with the connection extra ``wait_on_host: false``: triggers of one
host share one status command, which waits only if all their connections
allow it, so each mode needs a host of its own) and the e2e stack of
tests/harness/airflow_stack.py (SQLite + LocalExecutor, or ``--kind celery``).
A DAG written for this run maps JOBS tasks per host of ``SSHAsyncJobOperator``
with its defaults (deferrable, ``poll_interval=10``). Each job waits for its
own release file; once every task is deferred (and a settle time has passed,
so the waiting status calls are up), the jobs are released one at a time,
GAP seconds apart, the two hosts in turn.

Per task: job end = mtime of its ``result.json`` (the host is this machine, same
clock); event = the trigger's "Trigger fired event" log entry (the triggerer's
clock, this machine); queued = the TI's ``queued_when`` after the event (the
scheduler queued the resumed try); success = the TI's ``end_date`` (the worker
ran ``execute_complete``). Prints median/p95/max of end -> success and its
parts: end -> event (ours: the status call's report and the trigger's pause
before its event, 0.2 s for these short outputs (log_settle.py), plus the
triggerer handing the event on), event -> queued
(Airflow's scheduler: it sees the event, sets the TI scheduled and queues it),
queued -> success (Airflow's executor and worker: a task process starts and
runs ``execute_complete``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

from tests.harness.airflow_stack import AirflowStack, wait_until  # noqa: E402
from tests.harness.sshd import home, start_server  # noqa: E402

USER = "asyncdash"
DAG = "bench_end_to_success"
MODES = {"wait": "bench_e2e_wait", "no_wait": "bench_e2e_nowait"}
DAG_FILE = f'''\
"""Written by bench/e2e_end_to_success.py: one mapped task per conf["jobs"] entry, operator defaults."""

import pendulum
from airflow.sdk import DAG, task

from airflow_ssh_async import SSHAsyncJobOperator

with DAG("{DAG}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
         max_active_tasks=512):

    @task
    def jobs(**context):
        return list(context["dag_run"].conf["jobs"])

    SSHAsyncJobOperator.partial(task_id="job", max_active_tis_per_dag=512).expand_kwargs(jobs())
'''


def epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None


def stats(values: list[float]) -> dict[str, float]:
    """n, median, p95 (nearest rank), max; seconds rounded to 10 ms."""
    if not values:
        return {"n": 0}
    values = sorted(values)
    p95 = values[min(len(values) - 1, max(0, int(0.95 * len(values) + 0.5) - 1))]
    return {
        "n": len(values),
        "median": round(statistics.median(values), 2),
        "p95": round(p95, 2),
        "max": round(values[-1], 2),
    }


def trigger_fired_at(stack: AirflowStack) -> dict[int, float]:
    """When each map index's trigger fired: the "Trigger fired event" entry of its trigger log,
    or of the triggerer's own log (Airflow sometimes closes the try's log context first)."""
    fired: dict[int, float] = {}

    def note(map_index: int, iso: str) -> None:
        stamp = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
        fired[map_index] = min(stamp, fired.get(map_index, stamp))

    logs = (stack.home / "logs" / f"dag_id={DAG}").glob("run_id=*/task_id=job/map_index=*/*.log.trigger.*.log")
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if '"Trigger fired event"' in line:
                note(int(path.parent.name.split("=")[1]), json.loads(line)["timestamp"])
    for comp in stack.triggerers:
        for line in comp.log_path.read_text(errors="replace").splitlines():
            found = re.search(r"Trigger fired event .*dag_id=" + DAG + r" .*map_index=(\d+)", line)
            if found:
                note(int(found.group(1)), line.split()[0])
    return fired


def stop_on_sigterm(signum: int, frame: object) -> None:
    """``timeout`` sends SIGTERM: leave through the ``finally`` that stops the stack."""
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=12, help="tasks per mode (wait, no wait)")
    parser.add_argument("--gap", type=float, default=2.0, help="seconds between two releases")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds from all deferred to the first release")
    parser.add_argument("--kind", choices=("sqlite", "celery"), default="sqlite")
    parser.add_argument("--parallelism", type=int, default=8)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--keep-home", action="store_true", help="keep AIRFLOW_HOME (logs) when all went well too")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="e2e-end-"))
    dags = work / "dags"
    dags.mkdir()
    (dags / f"{DAG}.py").write_text(DAG_FILE)
    hosts = {"wait": start_server(work / "a"), "no_wait": start_server(work / "b", address="127.0.0.2")}
    hosts["wait"].set_connection(MODES["wait"], USER)
    hosts["no_wait"].set_connection(MODES["no_wait"], USER, wait_on_host="false")
    tag = os.urandom(3).hex()
    user_home = home(USER)
    releases = user_home / f"e2e-end-release-{tag}"
    releases.mkdir()
    shutil.chown(releases, USER, USER)
    # map index i: mode by parity, so the releases alternate between the hosts
    modes = [("wait", "no_wait")[i % 2] for i in range(2 * args.jobs)]
    entries = [
        {
            "ssh_conn_id": MODES[mode],
            "job_id": f"e2e-end-{tag}-{i}",
            "command": f"while [ ! -e {releases}/{i} ]; do sleep 0.2; done; echo done {i}",
        }
        for i, mode in enumerate(modes)
    ]
    figures: dict[str, Any] = {
        "kind": args.kind,
        "jobs_per_mode": args.jobs,
        "gap_s": args.gap,
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_avg_1m": {"start": os.getloadavg()[0]},
    }
    problems: list[str] = []
    stack = AirflowStack(dags, dag_ids=[DAG], parallelism=args.parallelism, kind=args.kind, startup_timeout=600)
    try:
        stack.start()
        figures["stack_startup_s"] = round(stack.startup_seconds or 0, 1)
        stack.unpause_dag(DAG)
        wait_until(lambda: stack.dag_exists(DAG), 180, f"{DAG} to be parsed")
        run_id = stack.trigger_dag(DAG, conf={"jobs": entries})
        started = time.monotonic()

        def deferred() -> bool:
            try:
                tis = [t for t in stack.task_instances(DAG, run_id) if t["task_id"] == "job"]
            except httpx.TimeoutException:
                return False
            bad = [t for t in tis if t["state"] in ("failed", "upstream_failed", "up_for_retry", "success")]
            if bad:
                raise AssertionError(f"{len(bad)} tasks ended before their release: {bad[0]}")
            held = [t for t in tis if t["state"] == "deferred" and (t.get("trigger") or {}).get("triggerer_id")]
            return len(tis) == len(entries) and len(held) == len(entries)

        wait_until(deferred, 900, f"all {len(entries)} tasks deferred", interval=3, check=stack.check_alive)
        figures["trigger_to_all_deferred_s"] = round(time.monotonic() - started, 1)
        figures["load_avg_1m"]["deferred"] = os.getloadavg()[0]
        time.sleep(args.settle)
        released: dict[int, float] = {}
        for i in range(len(entries)):
            (releases / str(i)).touch()
            released[i] = time.time()
            time.sleep(args.gap)
        state = wait_until(
            lambda: s if (s := stack.dag_run_state(DAG, run_id)) in ("success", "failed") else None,
            600,
            "the run to finish",
            interval=2,
        )
        figures["load_avg_1m"]["finished"] = os.getloadavg()[0]
        figures["run_state"] = state
        if state != "success":
            problems.append(f"the run ended {state}")
        tis = {t["map_index"]: t for t in stack.task_instances(DAG, run_id) if t["task_id"] == "job"}
        fired = trigger_fired_at(stack)
        rows: dict[str, dict[str, list[float]]] = {
            m: {"end_to_success": [], "end_to_event": [], "event_to_queued": [], "queued_to_success": []} for m in MODES
        }
        per_task = []
        for i, mode in enumerate(modes):
            result = user_home / ".airflow_async" / entries[i]["job_id"] / "result.json"
            ti = tis.get(i, {})
            end = result.stat().st_mtime if result.exists() else None
            success = epoch(ti.get("end_date")) if ti.get("state") == "success" else None
            queued = epoch(ti.get("queued_when"))
            event = fired.get(i)
            per_task.append({"map_index": i, "mode": mode, "job_end": end, "event": event, "queued": queued,
                             "success": success, "state": ti.get("state")})  # fmt: skip
            if end is None or success is None:
                problems.append(f"task {i} ({mode}): job end {end}, success {success}, state {ti.get('state')}")
                continue
            r = rows[mode]
            r["end_to_success"].append(success - end)
            if event is not None:
                r["end_to_event"].append(event - end)
                if queued is not None and queued >= event:
                    r["event_to_queued"].append(queued - event)
            if queued is not None and queued >= end:
                r["queued_to_success"].append(success - queued)
        figures["latency_s"] = {m: {k: stats(v) for k, v in r.items()} for m, r in rows.items()}
        figures["per_task"] = per_task
    except (Exception, KeyboardInterrupt) as exc:  # the figures so far are printed all the same
        problems.append(f"{type(exc).__name__}: {str(exc)[:2000]}")
    finally:
        for i in range(len(entries)):
            (releases / str(i)).touch()
        keep = bool(problems) or args.keep_home
        try:
            stack.stop(remove_home=not keep)
        except Exception as exc:  # noqa: BLE001 - report and go on cleaning up
            problems.append(f"stop: {exc}")
        if keep:
            figures["airflow_home"] = str(stack.home)
        for server in hosts.values():
            server.stop()
        time.sleep(1)  # the released jobs end within 0.2 s
        shutil.rmtree(releases, ignore_errors=True)
        for d in (user_home / ".airflow_async").glob(f"e2e-end-{tag}-*"):
            shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    figures["problems"] = problems
    text = json.dumps(figures, indent=2)
    if args.json:
        args.json.write_text(text)
    summary = {m: figures.get("latency_s", {}).get(m) for m in MODES}
    print(json.dumps({k: v for k, v in figures.items() if k not in ("per_task", "latency_s")}, indent=2))
    for mode, parts in summary.items():
        for part, s in (parts or {}).items():
            print(f"{mode:8} {part:18} n={s.get('n')} median={s.get('median')} p95={s.get('p95')} max={s.get('max')}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
