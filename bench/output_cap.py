"""What output_limit's cap costs a fast writer (issue 20).

    .venv/bin/python bench/output_cap.py --mib 256 --repeat 3

Starts a throwaway sshd on 127.0.0.1 (tests/harness; needs root) and runs,
as the asyncdash user, a job that writes MIB MiB as fast as it can
(`head -c N /dev/zero`, 8 KiB writes) under three settings:

  direct   output_limit=0: the job writes its stdout file itself
  stored   output_limit above N: everything goes job -> FIFO -> cap -> file
  dropped  output_limit=1 MiB: past it the cap counts and discards

The job times its own writer (`date +%s%N` around it) and leaves the figure
in its folder, so SSH and polling are not counted: what is measured is how
much slower the job's output goes. Medians of --repeat rounds, cases
interleaved. Job folders are removed after each round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from airflow_ssh_async.hooks import SSHAsyncJobHook  # noqa: E402
from tests.harness.sshd import start_server  # noqa: E402

USER = "asyncdash"


def run_case(hook: SSHAsyncJobHook, name: str, mib: int, limit: int) -> float:
    """Seconds the job's writer took for MIB MiB of stdout."""
    n = mib * 1024 * 1024
    command = (
        "s=$(date +%s%N); head -c " + str(n) + " /dev/zero; e=$(date +%s%N); "
        'echo $((e - s)) > "$AIRFLOW_ASYNC_JOB_DIR/took"'
    )
    job_id = f"bench-cap-{name}-{time.monotonic_ns()}"
    launched = hook.launch(job_id, command, output_limit=limit)
    deadline = time.monotonic() + 600
    while True:
        status, _ = hook.status([launched.job_dir])[launched.job_dir]
        if status.state.finished:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{job_id} did not end in 600 s")
        time.sleep(0.2)
    took = int(Path(launched.job_dir, "took").read_text()) / 1e9
    stored = Path(launched.job_dir, "stdout").stat().st_size
    expected = n if limit == 0 or limit > n else limit
    if stored != expected:
        raise RuntimeError(f"{name}: stored {stored} bytes, expected {expected}")
    hook.archive(launched.job_dir, remove=True)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.mib * 1024 * 1024
    cases = {"direct": 0, "stored": n + 1, "dropped": 1024 * 1024}
    server = start_server(tempfile.mkdtemp(prefix="bench-cap-"))
    try:
        server.set_connection("bench_cap", USER)
        hook = SSHAsyncJobHook("bench_cap")
        run_case(hook, "warmup", 8, 0)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeat):
            for name, limit in cases.items():
                times[name].append(run_case(hook, name, args.mib, limit))
    finally:
        server.stop()
    base = statistics.median(times["direct"])
    print(f"fast writer, {args.mib} MiB of stdout, median of {args.repeat} (min-max):")
    for name, values in times.items():
        med = statistics.median(values)
        print(
            f"  {name:8s} {med:6.2f} s  {args.mib / med:7.0f} MiB/s  x{med / base:4.2f}"
            f"  ({min(values):.2f}-{max(values):.2f} s)"
        )


if __name__ == "__main__":
    main()
