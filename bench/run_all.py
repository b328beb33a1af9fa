"""Every benchmark of issue #5 in one run, ours and the peers side by side.

    .venv/bin/python bench/run_all.py --quick --json /tmp/bench.json   # a few minutes
    .venv/bin/python bench/run_all.py --json /tmp/bench.json           # the full run (~20 min)

Sections (all against sshd instances on 127.0.0.1 started here):
  peers     launch latency (ours, SSHRemoteJobOperator, Ansible async/poll:0,
            the asyncssh floor), one poll of each, and the remote footprint
            of one running job (bench_peers.py)
  status    the cost of one status check per job: ours at 1, 100 and 1,000
            watched jobs through the real trigger code in one child process
            (triggerer CPU per job per poll, wall of the one status call per
            tick, and status.sh's own CPU on the host before/after)
  capacity  1,000 jobs over 10 hosts (ten sshd), 10 s poll, for DURATION:
            CPU share and peak RSS of the triggerer process, SSH connections,
            time from each job's end to its event
  output    100 MB written by a job through watch_job: MB/s, whole or not,
            peak RSS of the triggerer process and of the supervisor

Needs root (the sshd harness) and bench/ansible_env.sh run first (peers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

from peers import quiet_logs  # noqa: E402

from airflow_ssh_async.client import program, remote_host  # noqa: E402
from airflow_ssh_async.hooks import SSHAsyncJobHook  # noqa: E402
from tests.harness.procs import rss_kb  # noqa: E402
from tests.harness.sshd import SSHServer, start_server  # noqa: E402

PY = sys.executable
USER = "asyncdash"
# The status.sh before issue #5 (sed/wc/cat per job), to show before/after.
BASELINE_COMMIT = "e8c3ac1"


def stop(server: SSHServer) -> None:
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def spread(values: list[float], scale: float = 1.0, nd: int = 2) -> dict[str, float]:
    v = [x * scale for x in values]
    return {
        "n": len(v),
        "median": round(statistics.median(v), nd),
        "min": round(min(v), nd),
        "max": round(max(v), nd),
        "p95": round(pct(v, 0.95), nd),
    }


# --- jobs ------------------------------------------------------------------------------------


async def _launch_many(conn_id: str, commands: list[tuple[str, str]]) -> list[dict[str, str]]:
    hook = SSHAsyncJobHook(conn_id)
    async with remote_host(await hook.aget_options()) as host:
        launched = await asyncio.gather(*(hook.alaunch(j, c, host=host) for j, c in commands))
    return [{"conn_id": conn_id, "job_id": x.job_id, "job_dir": x.job_dir, "pid": x.pid} for x in launched]


def launch_many(conn_id: str, commands: list[tuple[str, str]]) -> list[dict[str, str]]:
    return asyncio.run(_launch_many(conn_id, commands))


def kill_and_remove(jobs: list[dict[str, Any]]) -> None:
    """Bench clean-up on this very host: SIGKILL each job's own process group
    (by the pgid its launch reported), wait for the results, remove the folders."""
    for j in jobs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(j["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 30
    for j in jobs:
        while not Path(j["job_dir"], "result.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(j["job_dir"], ignore_errors=True)


def run_worker(args: list[str], timeout: float) -> dict[str, Any]:
    done = subprocess.run(
        [PY, str(ROOT / "bench" / "worker.py"), *args], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- status: ours at 1, 100, 1000 --------------------------------------------------------------


def remote_status_cpu(script_text: str, dirs: list[str], repeat: int) -> dict[str, float]:
    """status.sh run on the host as the SSH user (as sshd would run it): wall
    and CPU (user+sys of the shell and everything it forks)."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(
            ["runuser", "-u", USER, "--", "/bin/sh", "-c", script_text, "status", *dirs],
            capture_output=True,
            timeout=600,
        )
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        assert done.returncode == 0, done.stderr[-500:]
    return {"wall_ms": round(statistics.median(walls) * 1000, 1), "cpu_ms": round(statistics.median(cpus) * 1000, 1)}


def baseline_status_program() -> str | None:
    try:
        lib = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{BASELINE_COMMIT}:provider/airflow_ssh_async/scripts/lib.sh"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        status = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{BASELINE_COMMIT}:provider/airflow_ssh_async/scripts/status.sh"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    return lib + "\n" + status


def section_status(server: SSHServer, counts: list[int], poll: float, ticks: int) -> dict[str, Any]:
    server.set_connection("bench_status", USER, conn_timeout=10)
    n = max(counts)
    print(f"status: launching {n} jobs", file=sys.stderr, flush=True)
    rows = []
    jobs: list[dict[str, Any]] = []
    try:
        jobs = launch_many("bench_status", [(f"bs-{os.urandom(5).hex()}-{i}", "sleep 3600") for i in range(n)])
        old = baseline_status_program()
        for count in counts:
            subset = jobs[:count]
            path = Path(tempfile.mkstemp(prefix="bench-jobs-", suffix=".json")[1])
            path.write_text(json.dumps(subset))
            print(f"status: {count} watched jobs, {ticks} polls", file=sys.stderr, flush=True)
            out = run_worker(
                ["watch", str(path), "--poll", str(poll), "--duration", str(poll * (ticks + 2.5))]
                + ["--ports", str(server.port)],
                timeout=poll * (ticks + 4) + 120,
            )
            path.unlink()
            t = out["ticks"]
            # Skip the first poll (connect, job.json fetched once): steady state.
            steady = t[1:]
            cpu_per_poll = [(b["cpu"] - a["cpu"]) for a, b in zip(steady, steady[1:], strict=False)]
            status_calls = [c for c in out["calls"] if c["name"] == "status"]
            walls = [c["wall"] for c in status_calls[1:]] or [c["wall"] for c in status_calls]
            dirs = [j["job_dir"] for j in subset]
            row = {
                "jobs": count,
                "polls_measured": len(cpu_per_poll),
                "trigger_cpu_ms_per_poll": spread(cpu_per_poll, 1000),
                "trigger_cpu_ms_per_job_per_poll": round(statistics.median(cpu_per_poll) * 1000 / count, 4),
                "status_calls": len(status_calls),
                "status_call_wall_ms": spread(walls, 1000, 1),
                "connects": len(out["connects"]),
                "max_ssh_connections": max((sum(s["conns"].values()) for s in out["samples"]), default=0),
                "remote_status_sh_now": remote_status_cpu(program("status"), ["+" + d for d in dirs], 3),
                "remote_status_sh_before": remote_status_cpu(old, ["+" + d for d in dirs], 1 if count > 100 else 3)
                if old
                else None,
            }
            rows.append(row)
    finally:
        kill_and_remove(jobs)
    return {"poll": poll, "rows": rows}


# --- capacity: 1000 jobs over 10 hosts ------------------------------------------------------------


def section_capacity(hosts: int, per_host: int, poll: float, duration: float) -> dict[str, Any]:
    servers = []
    jobs: list[dict[str, Any]] = []
    try:
        for i in range(hosts):
            s = start_server()
            s.set_connection(f"bench_cap{i}", USER, conn_timeout=10)
            servers.append(s)
        # Every job ends at an absolute time inside the window, printing the
        # instant it ended (the job's end to the event is measured from it).
        launch_est = 10 + 0.04 * hosts * per_host
        t0 = int(time.time() + launch_est + 2 * poll)
        rnd = random.Random(5)
        print(f"capacity: launching {hosts}x{per_host} jobs", file=sys.stderr, flush=True)
        for i in range(hosts):
            cmds = []
            for k in range(per_host):
                end = t0 + rnd.uniform(poll, max(poll + 1, duration - poll))
                cmds.append(
                    (
                        f"cap-{os.urandom(4).hex()}-{i}-{k}",
                        f"sleep $(( {int(end)} - $(date +%s) )) 2>/dev/null; date +%s.%N",
                    )
                )
            jobs += launch_many(f"bench_cap{i}", cmds)
        launched_at = time.time()
        if launched_at > t0:
            print(f"capacity: launching overran the start by {launched_at - t0:.0f}s", file=sys.stderr)
        path = Path(tempfile.mkstemp(prefix="bench-cap-", suffix=".json")[1])
        path.write_text(json.dumps(jobs))
        run_for = (t0 - time.time()) + duration + 2 * poll
        print(f"capacity: watching {len(jobs)} jobs for {run_for:.0f}s", file=sys.stderr, flush=True)
        out = run_worker(
            ["watch", str(path), "--poll", str(poll), "--duration", str(run_for)]
            + ["--ports", ",".join(str(s.port) for s in servers)],
            timeout=run_for + 300,
        )
        path.unlink()
    finally:
        kill_and_remove(jobs)
        for s in servers:
            stop(s)
    lat = []
    bad = []
    for j, ev in out["events"].items():
        try:
            lat.append(ev["t"] - float(ev["stdout_tail"].strip().splitlines()[-1]))
        except (ValueError, IndexError):
            bad.append({j: ev})
    wall = out["end"] - out["start"]
    ticks = out["ticks"]
    busy = (ticks[-1]["cpu"] - ticks[0]["cpu"]) / (ticks[-1]["t"] - ticks[0]["t"]) if len(ticks) > 1 else 0.0
    conns = [s["conns"] for s in out["samples"]]
    polls_per_host: dict[str, int] = {}
    for c in out["calls"]:
        if c["name"] == "status":
            polls_per_host[c["host"]] = polls_per_host.get(c["host"], 0) + 1
    status_walls = [c["wall"] for c in out["calls"] if c["name"] == "status"]
    # Job-polls: each status call covers args jobs.
    job_polls = sum(c["args"] for c in out["calls"] if c["name"] == "status")
    return {
        "hosts": hosts,
        "jobs": len(jobs),
        "poll": poll,
        "window_s": round(wall, 1),
        "events": len(out["events"]),
        "unfinished": out["unfinished"],
        "events_not_succeeded": sum(1 for e in out["events"].values() if e["state"] != "succeeded"),
        "unreadable_events": bad[:3],
        "cpu_share_pct": round(100 * out["cpu_total"] / wall, 2),
        "cpu_share_steady_pct": round(100 * busy, 2),
        "cpu_ms_per_job_poll": round(1000 * out["cpu_total"] / max(job_polls, 1), 4),
        "rss_start_mb": round(out["rss_start_kb"] / 1024, 1),
        "rss_peak_mb": round(out["rss_peak_kb"] / 1024, 1),
        "ssh_connections_max_total": max((sum(c.values()) for c in conns), default=0),
        "ssh_connections_max_per_host": max((max(c.values(), default=0) for c in conns), default=0),
        "connects": len(out["connects"]),
        "status_calls": len(status_walls),
        "status_calls_per_host_median": statistics.median(polls_per_host.values()) if polls_per_host else 0,
        "status_call_wall_ms": spread(status_walls, 1000, 1) if status_walls else None,
        "end_to_event_s": spread(lat, 1.0, 2) if lat else None,
    }


# --- output: 100 MB -------------------------------------------------------------------------------


def section_output(server: SSHServer, megabytes: int) -> dict[str, Any]:
    server.set_connection("bench_output", USER, conn_timeout=10)
    size = megabytes * 1024 * 1024
    line = "x" * 99  # 100-byte lines
    jid = f"bo-{os.urandom(5).hex()}"
    [job] = launch_many("bench_output", [(jid, f"yes {line} | head -c {size}")])
    sup = json.loads(Path(job["job_dir"], "job.json").read_text())["supervisor_pid"]
    peak_sup = 0
    proc = subprocess.Popen(
        [PY, str(ROOT / "bench" / "worker.py"), "output", "bench_output", jid, job["job_dir"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while proc.poll() is None:
        peak_sup = max(peak_sup, rss_kb(sup))
        time.sleep(0.02)
    out_text, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"output worker failed: {err[-3000:]}")
    out = json.loads(out_text.strip().splitlines()[-1])
    import hashlib

    whole = hashlib.sha256()
    chunk = (line + "\n").encode() * 10000
    left = size
    while left:
        whole.update(chunk[: min(left, len(chunk))])
        left -= min(left, len(chunk))
    kill_and_remove([job])
    return {
        "megabytes": megabytes,
        "seconds": round(out["seconds"], 2),
        "mb_per_s": round(megabytes / out["seconds"], 1),
        "whole": out["bytes"] == size and out["sha256"] == whole.hexdigest(),
        "bytes_logged": out["bytes"],
        "lines_logged": out["lines"],
        "output_calls": out["output_calls"],
        "trigger_rss_start_mb": round(out["rss_start_kb"] / 1024, 1),
        "trigger_rss_peak_mb": round(out["rss_peak_kb"] / 1024, 1),
        "trigger_rss_growth_mb": round((out["rss_peak_kb"] - out["rss_start_kb"]) / 1024, 1),
        "supervisor_rss_peak_kb": peak_sup,
    }


# --- the report -------------------------------------------------------------------------------------


def print_status(st: dict[str, Any], peers: dict[str, Any] | None) -> None:
    print(f"\nCost of one status check per job (poll interval {st['poll']} s, median over polls)")
    head = (
        f"{'case':<44} {'call wall ms':>13} {'trig CPU ms/poll':>17} {'CPU ms/job/poll':>16} "
        f"{'conns':>5} {'host status.sh ms (cpu)':>24} {'before #5':>16}"
    )
    print(head)
    print("-" * len(head))
    for r in st["rows"]:
        now, before = r["remote_status_sh_now"], r["remote_status_sh_before"]
        b = f"{before['wall_ms']:.0f} ({before['cpu_ms']:.0f})" if before else "-"
        print(
            f"{'ours, ' + str(r['jobs']) + ' watched jobs':<44} {r['status_call_wall_ms']['median']:>13.1f} "
            f"{r['trigger_cpu_ms_per_poll']['median']:>17.2f} {r['trigger_cpu_ms_per_job_per_poll']:>16.4f} "
            f"{r['max_ssh_connections']:>5} {str(now['wall_ms']) + ' (' + str(now['cpu_ms']) + ')':>24} {b:>16}"
        )
    if peers:
        for row in peers["rows"]:
            if row["case"].startswith("poll"):
                print(
                    f"{row['case'][:44]:<44} {row['median_ms']:>13.1f} {row['cpu_median_ms']:>17.1f} "
                    f"{row['cpu_median_ms']:>16.1f} {'1':>5} {'-':>24} {'-':>16}"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes: fewer rounds, 2-minute capacity window")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument(
        "--sections", default="peers,status,capacity,output", help="comma list of peers,status,capacity,output"
    )
    parser.add_argument("--capacity-duration", type=float, help="seconds of the capacity window (600 full, 120 quick)")
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    quick = args.quick
    quiet_logs()
    started = time.monotonic()
    result: dict[str, Any] = {
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {
            "kernel": os.uname().release,
            "cpus": os.cpu_count(),
            "load_at_start": os.getloadavg(),
        },
    }
    server = start_server()
    try:
        if "peers" in sections:
            import bench_peers

            print("== peers: launch, poll, footprint", file=sys.stderr, flush=True)
            peers, fps = bench_peers.bench(server, 5 if quick else 15, True)
            result["peers"] = peers
            print("\nLatency, ms (x ours = median / our matching median)")
            print(bench_peers.table(peers["rows"]))
            print("\nRemote footprint of one running `sleep 300` (processes of the SSH user besides the sleep)")
            print(bench_peers.footprint_table(fps))
        if "status" in sections:
            print("== status", file=sys.stderr, flush=True)
            result["status"] = section_status(server, [1, 100, 1000], poll=2.0, ticks=4 if quick else 10)
            print_status(result["status"], result.get("peers"))
        if "output" in sections:
            print("== output", file=sys.stderr, flush=True)
            small = section_output(server, 20)
            result["output"] = o = section_output(server, 100)
            o["rss_growth_at_20mb_mb"] = small["trigger_rss_growth_mb"]
            o["mb_per_s_at_20mb"] = small["mb_per_s"]
            print(
                f"\nOutput: {o['megabytes']} MB through watch_job in {o['seconds']} s = {o['mb_per_s']} MB/s, "
                f"whole: {o['whole']} ({o['lines_logged']} lines, {o['output_calls']} output calls); triggerer RSS "
                f"{o['trigger_rss_start_mb']} -> {o['trigger_rss_peak_mb']} MB peak (+{o['trigger_rss_growth_mb']}); "
                f"supervisor peak RSS {o['supervisor_rss_peak_kb']} kB\n"
                f"  (20 MB: {o['mb_per_s_at_20mb']} MB/s, triggerer RSS +{o['rss_growth_at_20mb_mb']} MB: "
                "the growth is the read chunk, not the output's size)"
            )
    finally:
        stop(server)
    if "capacity" in sections:
        duration = args.capacity_duration or (120.0 if quick else 600.0)
        print("== capacity", file=sys.stderr, flush=True)
        result["capacity"] = c = section_capacity(10, 100, 10.0, duration)
        lat = c["end_to_event_s"] or {}
        print(
            f"\nTriggerer capacity: {c['jobs']} jobs on {c['hosts']} hosts, poll {c['poll']} s, "
            f"{c['window_s']} s window\n"
            f"  events {c['events']} (unfinished {c['unfinished']}, not succeeded {c['events_not_succeeded']})\n"
            f"  CPU share {c['cpu_share_pct']} % of one core (steady {c['cpu_share_steady_pct']} %), "
            f"{c['cpu_ms_per_job_poll']} ms per job per poll\n"
            f"  RSS {c['rss_start_mb']} MB at start, {c['rss_peak_mb']} MB peak\n"
            f"  SSH connections: at most {c['ssh_connections_max_total']} in all, {c['ssh_connections_max_per_host']} "
            f"per host; {c['connects']} connects; {c['status_calls']} status calls "
            f"({c['status_calls_per_host_median']} per host)\n"
            f"  status call wall ms: {c['status_call_wall_ms']}\n"
            f"  job end -> event, s: {lat}"
        )
    result["seconds"] = round(time.monotonic() - started, 1)
    print(f"\n({result['seconds']} s in all)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
