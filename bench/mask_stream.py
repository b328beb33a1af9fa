"""What masking secrets costs the trigger's streaming path: lines per second with 0, 10, 100 secrets.

    .venv/bin/python bench/mask_stream.py --lines 200000 --repeat 5

The output of a job goes through OutputFollower.catch_up exactly as in the
trigger (UTF-8 decode, mask, split into lines, tails, one log call a line),
read in 4 MiB chunks from memory instead of SSH, into a stdlib logger whose
handler drops the record after formatting it. Secrets are random 24-character
tokens (a password, an API token); every 100th line holds one of them, so the
masking does real replacements. For comparison, Airflow's own SecretsMasker
(a plain alternation, as its log processor runs it) masking the same text.
No SSH, no Airflow process: CPU of this process only. Median of --repeat runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import string
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "provider")]

from airflow_ssh_async.follower import OutputFollower  # noqa: E402
from airflow_ssh_async.hooks import ReadRequest  # noqa: E402
from airflow_ssh_async.job import TAIL_BYTES  # noqa: E402
from airflow_ssh_async.masking import Masker  # noqa: E402

CHUNK = 4 * 1024 * 1024


@dataclass
class _Chunk:
    data: bytes
    missing: bool = False
    shrunk: bool = False


class _Reads:
    """Stands in for HostBatcher.read: serves the job's stdout from memory."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def get(self, request: ReadRequest) -> _Chunk:
        offset, size = request.offset, request.max_bytes
        return _Chunk(self.data[offset : offset + size] if request.stream == "stdout" else b"")


class _Batcher:
    def __init__(self, data: bytes) -> None:
        self.read = _Reads(data)


class _Drop(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


def output(lines: int, secrets: list[str], rng: random.Random) -> bytes:
    out = []
    for i in range(lines):
        token = f" token={rng.choice(secrets)}" if secrets and i % 100 == 0 else ""
        out.append(f"2026-12-01T12:00:00Z INFO batch {i} of {lines}: 1000 rows copied, status ok{token}\n")
    return "".join(out).encode()


def follow(data: bytes, masker: Masker, log: logging.Logger) -> float:
    follower = OutputFollower("/bench/job", log, TAIL_BYTES, True, masker)
    start = time.perf_counter()
    asyncio.run(follower.catch_up(_Batcher(data), {"stdout": len(data)}, CHUNK))  # type: ignore[arg-type]
    follower.finish()
    return time.perf_counter() - start


def airflow_masker(secrets: list[str]) -> Any:
    from airflow.sdk._shared.secrets_masker import SecretsMasker

    m = SecretsMasker()
    for s in secrets:
        m.add_mask(s)
    return m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--counts", default="0,10,100")
    args = parser.parse_args()
    rng = random.Random(21)
    log = logging.getLogger("bench.mask")
    log.propagate = False
    log.addHandler(_Drop())
    log.setLevel(logging.INFO)
    print(f"{args.lines:,} lines, median of {args.repeat} interleaved rounds")
    print(f"{'secrets':>7}  {'follower lines/s':>16}  {'vs 0':>6}  {'mask only lines/s':>17}  {'Airflow masker':>14}")
    cases = []
    for n in (int(c) for c in args.counts.split(",")):
        secrets = ["".join(rng.choices(string.ascii_letters + string.digits, k=24)) for _ in range(n)]
        data = output(args.lines, secrets, rng)
        cases.append((n, data, Masker(secrets), airflow_masker(secrets)))
    walls: dict[int, list[float]] = {n: [] for n, *_ in cases}
    mask_walls: dict[int, list[float]] = {n: [] for n, *_ in cases}
    airflow_walls: dict[int, list[float]] = {n: [] for n, *_ in cases}
    for _ in range(args.repeat):  # interleaved, so a busy moment of the machine hits every case alike
        for n, data, masker, theirs in cases:
            walls[n].append(follow(data, masker, log))
            text = data.decode()
            t = time.perf_counter()
            s = masker.stream()
            s.feed(text)
            s.finish()
            mask_walls[n].append(time.perf_counter() - t)
            t = time.perf_counter()
            if theirs.replacer is not None:
                theirs.replacer.sub("***", text)
            airflow_walls[n].append(time.perf_counter() - t)
    base = None
    for n, *_ in cases:
        rate = args.lines / statistics.median(walls[n])
        base = base or rate
        mask_rate = args.lines / max(statistics.median(mask_walls[n]), 1e-9)
        airflow_rate = args.lines / max(statistics.median(airflow_walls[n]), 1e-9)
        print(
            f"{n:>7}  {rate:>16,.0f}  {rate / base:>6.2f}  "
            + (f"{mask_rate:>17,.0f}  {airflow_rate:>14,.0f}" if n else f"{'(no-op)':>17}  {'-':>14}")
        )


if __name__ == "__main__":
    main()
