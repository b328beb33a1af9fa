"""What become_user costs per call: launch and one status read, with and without sudo.

    .venv/bin/python bench/become.py --repeat 20

One loopback sshd, one shared SSH connection per mode (as a trigger holds
it); each round, interleaved: a launch of `true` and a status read of that
job, as the login user (asyncdash) and as asynctarget through `sudo -n`
(a real sudoers rule, made here and removed at the end). Prints the median
and the 90th percentile in milliseconds. Needs root.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "provider")]

from peers import quiet_logs  # noqa: E402

from airflow_ssh_async.client import remote_host  # noqa: E402
from airflow_ssh_async.hooks import SSHAsyncJobHook  # noqa: E402
from tests.harness.become import TARGET, kill_all_of, sudoers_rules  # noqa: E402
from tests.harness.sshd import start_server  # noqa: E402

CONN, USER = "bench_become", "asyncdash"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20, help="timed rounds, after one warm-up")
    args = parser.parse_args(argv)
    quiet_logs()
    server = start_server()
    server.set_connection(CONN, USER, conn_timeout=10)
    hooks = {"login user": SSHAsyncJobHook(CONN), "become_user (sudo -n)": SSHAsyncJobHook(CONN, become_user=TARGET)}
    times: dict[tuple[str, str], list[float]] = {(m, op): [] for m in hooks for op in ("launch", "status")}
    dirs: dict[str, list[str]] = {m: [] for m in hooks}

    async def rounds() -> None:
        plain_options = await hooks["login user"].aget_options()
        become_options = await hooks["become_user (sudo -n)"].aget_options()
        async with remote_host(plain_options) as plain, remote_host(become_options) as become:
            hosts = {"login user": plain, "become_user (sudo -n)": become}
            for i in range(args.repeat + 1):
                for mode, hook in hooks.items():
                    job_id = f"bench-become-{uuid.uuid4().hex[:10]}"
                    start = time.perf_counter()
                    launched = await hook.alaunch(job_id, "true", host=hosts[mode])
                    took = time.perf_counter() - start
                    dirs[mode].append(launched.job_dir)
                    start = time.perf_counter()
                    await hook.astatus([launched.job_dir], host=hosts[mode])
                    if i:  # the first round warms up
                        times[(mode, "launch")].append(took)
                        times[(mode, "status")].append(time.perf_counter() - start)
            for mode, hook in hooks.items():
                for d in dirs[mode]:
                    await hook.aarchive(d, remove=True, host=hosts[mode])

    try:
        with sudoers_rules():
            asyncio.run(rounds())
    finally:
        kill_all_of(TARGET)
        server.stop()
    print(f"{'mode':24} {'call':7} {'median ms':>10} {'p90 ms':>8}  (n={args.repeat})")
    for (mode, op), values in times.items():
        values.sort()
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        print(f"{mode:24} {op:7} {statistics.median(values) * 1000:10.1f} {p90 * 1000:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
