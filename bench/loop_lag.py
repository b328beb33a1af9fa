"""Event-loop lag of a reconnect storm: 50 hosts at once with a passphrase-protected key.

    .venv/bin/python bench/loop_lag.py [--hosts 50]

For ed25519 and RSA-3072 keys (OpenSSH format, bcrypt KDF), given inline
(`private_key` extra) and as a file (`key_file`), it opens HOSTS connections
at once to the harness's sshd, each under its own connection id (so each its
own SSH connection, as for 50 hosts), and reports the longest stretch the
event loop went without running a 5 ms timer. Round "cold" is the first
connect of the process (keys decrypted, known_hosts read); "warm" is the
reconnect storm after a drop (what a triggerer sees when a network blip
closes every connection), with the client's limit of handshakes at a time
(airflow_ssh_async.handshakes) and, for comparison, all at once (as before
that limit). Needs root (the harness's sshd and test users).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "provider")]

from peers import quiet_logs  # noqa: E402

from airflow_ssh_async import handshakes  # noqa: E402
from airflow_ssh_async.client import open_connection  # noqa: E402
from airflow_ssh_async.hooks import SSHAsyncJobHook  # noqa: E402
from tests.harness.sshd import start_server  # noqa: E402

USER, PASSPHRASE = "asyncdash", "bench-passphrase"


class GCClock:
    """Time spent in the interpreter's garbage collector, so far.

    A full (generation 2) collection scans the whole heap, Airflow's imported
    modules included: 40 to 120 ms in this process, whenever it comes, in any
    trigger process, whatever the triggers do. A gap is shown with it and
    without it, so that the client's part is not hidden by it nor blamed for it.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self.longest = 0.0
        self._start = 0.0
        gc.callbacks.append(self._tick)

    def _tick(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            took = time.perf_counter() - self._start
            self.total += took
            self.longest = max(self.longest, took)


GC = GCClock()


async def storm(options: list[object]) -> tuple[float, float, float]:
    """(longest loop gap, longest gap less the garbage collector's time in it, wall time)
    of connecting and closing all OPTIONS at once."""

    async def one(o: object) -> None:
        conn = await open_connection(o)  # type: ignore[arg-type]
        conn.close()
        await conn.wait_closed()

    started = time.perf_counter()
    work = asyncio.ensure_future(asyncio.gather(*(one(o) for o in options)))
    worst, worst_no_gc, last, gc_last = 0.0, 0.0, time.perf_counter(), GC.total
    while not work.done():
        await asyncio.sleep(0.005)
        now, gc_now = time.perf_counter(), GC.total
        gap = now - last - 0.005
        worst, worst_no_gc = max(worst, gap), max(worst_no_gc, gap - (gc_now - gc_last))
        last, gc_last = now, gc_now
    await work
    return worst, worst_no_gc, time.perf_counter() - started


async def idle(seconds: float) -> float:
    """The longest gap of the same 5 ms timer with nothing else running: the machine's own noise."""
    worst, last, end = 0.0, time.perf_counter(), time.perf_counter() + seconds
    while last < end:
        await asyncio.sleep(0.005)
        now = time.perf_counter()
        worst, last = max(worst, now - last - 0.005), now
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument(
        "--handshakes", type=int, default=handshakes.HANDSHAKES, help="handshakes at a time (client's limit)"
    )
    args = parser.parse_args()
    quiet_logs()
    sshd = start_server()
    keys_dir = re.search(r"^AuthorizedKeysFile (\S+)/%u$", (sshd.workdir / "sshd_config").read_text(), re.M)[1]
    tmp = Path(tempfile.mkdtemp(prefix="loop-lag-"))
    print(f"{'key':<24} {'round':<5} {'handshakes':>11} {'max loop gap':>13} {'less GC':>8} {'wall':>7}")
    print(f"{'floor: idle loop, 3 s':<42} {asyncio.run(idle(3)) * 1000:>10.0f} ms")
    try:
        for kind, bits in (("ed25519", []), ("rsa", ["-b", "3072"])):
            key = tmp / kind
            subprocess.run(["ssh-keygen", "-q", "-t", kind, *bits, "-N", PASSPHRASE, "-f", str(key)], check=True)
            with open(Path(keys_dir) / USER, "a") as fh:
                fh.write(Path(f"{key}.pub").read_text())
            for how, extra in (
                ("inline", {"key_file": None, "private_key": key.read_text()}),
                ("key_file", {"key_file": str(key)}),
            ):
                ids = [f"lag_{kind}_{how}_{i}_{uuid.uuid4().hex[:4]}" for i in range(args.hosts)]
                for conn_id in ids:
                    sshd.set_connection(conn_id, USER, private_key_passphrase=PASSPHRASE, **extra)
                options = [SSHAsyncJobHook(c).get_options() for c in ids]
                for round_, limit in (("cold", args.handshakes), ("warm", args.handshakes), ("warm", 10_000)):
                    handshakes.HANDSHAKES = limit
                    gap, gap_no_gc, wall = asyncio.run(storm(options))
                    shown = "all at once" if limit == 10_000 else str(limit)
                    print(
                        f"{kind + ' ' + how:<24} {round_:<5} {shown:>11} {gap * 1000:>10.0f} ms"
                        f" {gap_no_gc * 1000:>5.0f} ms {wall:>6.2f}s"
                    )
    finally:
        sshd.stop()
    print(f"longest garbage-collector pass of the run: {GC.longest * 1000:.0f} ms")


if __name__ == "__main__":
    main()
