"""The Remote jobs view under load: page response with 1,000 jobs on one host, and
SSH commands per host per minute with 1 and with 10 viewers.

    .venv/bin/python bench/ui.py                      # 1,000 jobs, 60 s per viewer count
    .venv/bin/python bench/ui.py --jobs 200 --seconds 30

Runs as root: a throwaway sshd on 127.0.0.1 (tests/harness/sshd.py) and a real
Airflow (tests/harness/airflow_stack.py, SQLite) whose API server loads the
plugin, as in a deployment. The jobs are real (launched through the hook:
most finished, some running and printing progress). Viewers are threads that
do what the pages do, with the pages' own periods and random phases: the list
page asks ``/api/jobs`` every 5 s; the job page asks ``/api/job`` every 3 s
and reads stdout and stderr from where it stopped. SSH commands are counted
by the view itself (``ssh_calls`` in every answer: list, status, progress and
output reads, kills), per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

import httpx  # noqa: E402

from tests.e2e.conftest import kill_jobs_processes  # noqa: E402
from tests.harness.airflow_stack import AirflowStack  # noqa: E402
from tests.harness.sshd import home, start_server  # noqa: E402

USER = "asyncdash"
CONN = "bench_ui"
UI = "/ssh-async"
LIST_PERIOD = 5.0  # list.js REFRESH_MS
JOB_PERIOD = 3.0  # job.js, while the job runs
RUNNING = 'i=0; while true; do i=$((i+1)); echo "out $i"; echo "step $i" >> "$AIRFLOW_ASYNC_PROGRESS"; sleep 1; done'


async def launch_all(async_dir: str, jobs: int, running: int) -> list[str]:
    from airflow_ssh_async.client import remote_host
    from airflow_ssh_async.hooks import SSHAsyncJobHook

    hook = SSHAsyncJobHook(CONN, async_dir=async_dir)
    ids = [f"bench-ui-{i:04d}" for i in range(jobs)]
    async with remote_host(await hook.aget_options()) as host:
        sem = asyncio.Semaphore(8)

        async def one(i: int, job_id: str) -> None:
            command = RUNNING if i < running else f'echo "job {i}"; echo "done {i}" >> "$AIRFLOW_ASYNC_PROGRESS"'
            origin = f"bench_dag_{i % 10}/task/manual__bench/{i}" if i % 4 else ""
            async with sem:
                await hook.alaunch(job_id, command, origin=origin, host=host)

        await asyncio.gather(*(one(i, j) for i, j in enumerate(ids)))
    return ids


def timed_get(c: httpx.Client, path: str, params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    t = time.perf_counter()
    r = c.get(path, params=params)
    took = time.perf_counter() - t
    r.raise_for_status()
    return took, r.json() if "json" in r.headers.get("content-type", "") else {}


def page_response(c: httpx.Client, async_dir: str, refresh: float, rounds: int) -> dict[str, Any]:
    """/api/jobs (first page of 50, and a filtered one): the first look at the host (it
    waits for the read: list + one status call for 1,000 folders + progress), a look
    at a stale snapshot (served at once, one refresh starts), a fresh one (the cache)."""
    q = {"conn_id": CONN, "async_dir": async_dir, "limit": 50}
    first, data = timed_get(c, "/api/jobs", q)
    reads, stale, warm, filtered, html = [data["read_seconds"]], [], [], [], []
    for _ in range(rounds):
        time.sleep(refresh + 0.5)
        stale.append(timed_get(c, "/api/jobs", q)[0])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until that refresh has landed
            took, data = timed_get(c, "/api/jobs", q)
            if data["age_seconds"] < refresh - 1:
                break
            time.sleep(0.2)
        reads.append(data["read_seconds"])
        warm.append(timed_get(c, "/api/jobs", q)[0])
        filtered.append(timed_get(c, "/api/jobs", {**q, "state": "running", "dag_id": "bench_dag_3"})[0])
        html.append(timed_get(c, "/", {})[0])
    return {
        "jobs_listed": data["total"],
        "host_read_s": reads,
        "first_ms": [round(first * 1000)],
        "stale_ms": [round(x * 1000) for x in stale],
        "warm_ms": [round(x * 1000) for x in warm],
        "filtered_warm_ms": [round(x * 1000) for x in filtered],
        "html_ms": [round(x * 1000) for x in html],
    }


def viewers(base: str, token: str, async_dir: str, n: int, seconds: float, page: str, job_id: str) -> dict[str, Any]:
    """N viewers on PAGE ("list" or "job") for SECONDS: SSH commands the host saw per minute."""
    stop = time.monotonic() + seconds
    errors: list[str] = []

    def calls(c: httpx.Client) -> int:
        r = c.get("/api/jobs", params={"conn_id": CONN, "async_dir": async_dir, "limit": 1})
        return int(r.json()["ssh_calls"])

    def viewer() -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            time.sleep(random.uniform(0, LIST_PERIOD if page == "list" else JOB_PERIOD))
            offsets = {"stdout": -1, "stderr": -1}
            while time.monotonic() < stop:
                try:
                    if page == "list":
                        c.get("/api/jobs", params={"conn_id": CONN, "async_dir": async_dir, "limit": 50})
                        time.sleep(LIST_PERIOD)
                    else:
                        c.get("/api/job", params={"conn_id": CONN, "async_dir": async_dir, "job_id": job_id})
                        for s in offsets:
                            r = c.get(
                                "/api/output",
                                params={
                                    "conn_id": CONN,
                                    "async_dir": async_dir,
                                    "job_id": job_id,
                                    "stream": s,
                                    "offset": offsets[s],
                                },
                            ).json()
                            offsets[s] = r["next_offset"]
                        time.sleep(JOB_PERIOD)
                except Exception as exc:  # report, keep viewing
                    errors.append(str(exc))

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as probe:
        start = calls(probe)
        threads = [threading.Thread(target=viewer) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        end = calls(probe)
    return {"viewers": n, "page": page, "seconds": seconds, "ssh_per_min": round((end - start) * 60 / seconds, 1),
            "errors": errors[:3]}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--running", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()

    sshd = start_server(tempfile.mkdtemp(prefix="bench-ui-sshd-"))
    sshd.set_connection(CONN, USER)
    async_dir = f"~/.airflow_async_bench_ui_{os.urandom(3).hex()}"
    dags = Path(tempfile.mkdtemp(prefix="bench-ui-dags-"))
    figures: dict[str, Any] = {"jobs": args.jobs}
    stack = AirflowStack(dags)
    try:
        t = time.monotonic()
        asyncio.run(launch_all(async_dir, args.jobs, args.running))
        figures["launch_s"] = round(time.monotonic() - t, 1)
        stack.start()
        token = stack.token()
        base = stack.base_url + UI
        refresh = 5.0  # hosts.REFRESH
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
            figures["page"] = page_response(c, async_dir, refresh, args.rounds)
        figures["viewers"] = [
            viewers(base, token, async_dir, n, args.seconds, page, "bench-ui-0000")
            for page in ("list", "job")
            for n in (1, 10)
        ]
    finally:
        stack.stop()
        sshd.stop()
        kill_jobs_processes([f"bench-ui-{i:04d}" for i in range(args.running)])  # by pid, found in /proc
        shutil.rmtree(home(USER) / async_dir[2:], ignore_errors=True)
    print(json.dumps(figures, indent=2))
    p = figures["page"]
    print(f"\n{p['jobs_listed']} jobs on one host, first page of 50 (ms, n={args.rounds}):")
    print(f"  host read (list + status + progress): {', '.join(f'{x:.1f}' for x in p['host_read_s'])} s")
    for k in ("first_ms", "stale_ms", "warm_ms", "filtered_warm_ms", "html_ms"):
        v = p[k]
        print(f"  {k:18s} median {statistics.median(v):6.0f}  max {max(v):6.0f}")
    print("\nSSH commands per host per minute:")
    for v in figures["viewers"]:
        print(f"  {v['viewers']:2d} viewer(s) on the {v['page']} page: {v['ssh_per_min']}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
