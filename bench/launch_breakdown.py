"""Where a launch's time goes, against the floor, on one loopback sshd.

    .venv/bin/python bench/launch_breakdown.py --repeat 25

Each round runs, interleaved, each a fresh connection, connect to close:
- floor: bare asyncssh connect + `true` (what issue #5 measures against);
- our connect + `true`: the same through client.open_connection;
- `sh -c true`: the extra shell every script of ours runs in;
- the launch program alone (bare asyncssh, no Airflow): lib.sh + launch.sh
  with a real payload, the supervisor included;
- SSHAsyncJobHook.launch: all of it, Airflow connection lookup included.
The differences between rows are what each layer costs. Needs root (the
harness's sshd and test users).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "provider")]

import asyncssh  # noqa: E402
from peers import cleanup_jobs, quiet_logs  # noqa: E402

from airflow_ssh_async.client import open_connection, remote_command, script  # noqa: E402
from airflow_ssh_async.hooks import SSHAsyncJobHook  # noqa: E402
from airflow_ssh_async.host_keys import connect_kwargs  # noqa: E402
from airflow_ssh_async.job import DEFAULT_ASYNC_DIR, launch_payload  # noqa: E402
from tests.harness.sshd import start_server  # noqa: E402

CONN, USER, JOB = "bench_breakdown", "asyncdash", "sleep 300"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=25, help="timed rounds, after one warm-up")
    args = parser.parse_args(argv)
    quiet_logs()
    server = start_server()
    server.set_connection(CONN, USER, conn_timeout=10)
    hook = SSHAsyncJobHook(CONN)
    options = hook.get_options()
    kwargs = connect_kwargs(options)
    supervisor = script("lib") + b"\n" + script("supervise")
    job_dirs: list[str] = []

    def new_job() -> str:
        job_id = f"bench-{uuid.uuid4().hex[:12]}"
        job_dirs.append(hook.job_dir(job_id))
        return job_id

    async def bare(command: str, stdin: bytes = b"") -> None:
        conn = await asyncssh.connect(**kwargs)
        try:
            await conn.run(command, input=stdin, encoding=None, check=True, timeout=30)
        finally:
            conn.close()
            await conn.wait_closed()

    async def ours_connect_true() -> None:
        conn = await open_connection(options)
        try:
            await conn.run("true", check=True, timeout=30)
        finally:
            conn.close()
            await conn.wait_closed()

    async def launch_program() -> None:
        payload = launch_payload(JOB, {}, "", supervisor)
        await bare(remote_command("launch", [DEFAULT_ASYNC_DIR, new_job(), "0", "10", ""]), payload)

    async def hook_launch() -> None:
        await SSHAsyncJobHook(CONN).alaunch(new_job(), JOB)

    cases: dict[str, Callable[[], Awaitable[None]]] = {
        "floor: asyncssh connect + true": lambda: bare("true"),
        "our connect + true": ours_connect_true,
        "asyncssh connect + sh -c true": lambda: bare("sh -c true"),
        "asyncssh connect + launch program": launch_program,
        "SSHAsyncJobHook.launch": hook_launch,
    }
    walls: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for round_no in range(args.repeat + 1):
            for name, case in cases.items():
                started = time.perf_counter()
                asyncio.run(case())
                if round_no:
                    walls[name].append((time.perf_counter() - started) * 1000)
    finally:
        try:
            cleanup_jobs(CONN, job_dirs)
        finally:
            server.stop()
    floor = statistics.median(walls["floor: asyncssh connect + true"])
    print(f"ms, n={args.repeat} (median, IQR), each row a fresh connection; x floor")
    for name, samples in walls.items():
        q1, median, q3 = statistics.quantiles(samples, n=4)
        print(f"{name:36} {median:7.1f}  {q1:6.1f}-{q3:<6.1f} {median / floor:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
