"""Our launch and poll latency and remote footprint beside Ansible async and SSHRemoteJobOperator.

    .venv/bin/python bench/bench_peers.py --repeat 10 --json /tmp/peers.json

Starts a throwaway sshd on 127.0.0.1 (tests/harness), runs every case once
untimed (imports, caches), then N rounds with the cases interleaved so that
drift on the machine hits all of them alike, and prints medians with min/max
and IQR, each against our matching figure. Every job a case starts is cleaned
up after its round; a hard deadline bounds the run. Needs root (the harness)
and bench/ansible_env.sh run first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
# Every peer logs each SSH command at INFO; printing that would be timed too.
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

from peers import (  # noqa: E402
    CONN_TIMEOUT,
    AnsiblePeer,
    Footprint,
    OperatorPeer,
    Ours,
    Sample,
    floor,
    measure_footprint,
    quiet_logs,
    timed,
)

from airflow_ssh_async.hooks import Launched  # noqa: E402
from tests.harness.sshd import SSHServer, start_server  # noqa: E402

DASH, BASH = "asyncdash", "asyncbash"
LAUNCH_CMD = "sleep 30"
FOOTPRINT_CMD = "sleep 300"


@dataclass
class Case:
    """One measured call; REF names the case of ours it is divided by."""

    name: str
    user: str
    ref: str
    run: Callable[[], Sample]
    samples: list[Sample] = field(default_factory=list)


@dataclass
class Peers:
    """The clients, and the jobs they started that are still to clean up."""

    ours: Ours
    ansible: AnsiblePeer
    operator: OperatorPeer
    operator_posix: OperatorPeer
    ours_jobs: list[Launched] = field(default_factory=list)
    ansible_jobs: list[str] = field(default_factory=list)
    operator_jobs: list[Any] = field(default_factory=list)

    def cleanup(self) -> None:
        """Kill and remove every job started so far, each peer its own way.

        A job leaves its list only once its peer cleaned it up, so a cleanup
        cut short (by the deadline) is done again by the final one; one peer
        failing does not keep the others from trying.
        """
        errors: list[Exception] = []
        cleaners: list[tuple[list[Any], Callable[[list[Any]], None]]] = [
            (self.ours_jobs, self.ours.cleanup),
            (self.ansible_jobs, self.ansible.cleanup),
            (self.operator_jobs, self.operator.cleanup),
        ]
        for jobs, clean in cleaners:
            try:
                clean(list(jobs))
                jobs.clear()
            except Exception as exc:  # report after the others had their turn
                errors.append(exc)
        if errors:
            raise errors[0]


# --- the cases --------------------------------------------------------------------------


def launch_cases(p: Peers) -> list[Case]:
    def ours() -> Sample:
        job, sample = timed(lambda: p.ours.launch(LAUNCH_CMD))
        p.ours_jobs.append(job)
        return sample

    def ansible() -> Sample:
        jid, sample = timed(lambda: p.ansible.launch(LAUNCH_CMD))
        p.ansible_jobs.append(jid)
        return sample

    def operator(peer: OperatorPeer) -> Callable[[], Sample]:
        def run() -> Sample:
            trigger, sample = peer.submit(LAUNCH_CMD)
            p.operator_jobs.append(trigger)
            return sample

        return run

    ref = "launch: ours SSHAsyncJobHook.launch"
    return [
        Case(ref, DASH, ref, ours),
        Case("launch: ansible-playbook async/poll:0", DASH, ref, ansible),
        Case("launch: SSHRemoteJobOperator.execute (auto OS)", BASH, ref, operator(p.operator)),
        Case("launch: SSHRemoteJobOperator.execute (posix)", BASH, ref, operator(p.operator_posix)),
        Case("floor: asyncssh connect + true", DASH, ref, lambda: floor(p.ours.conn_id)),
        Case("floor: asyncssh connect + true", BASH, ref, lambda: floor(p.operator.conn_id)),
    ]


def poll_cases(p: Peers, ours_dir: str, trigger: Any, jid: str) -> list[Case]:
    cold, warm = "poll cold: ours status+read", "poll warm: ours status+read"
    return [
        Case(cold, DASH, cold, lambda: p.ours.poll_cold(ours_dir)),
        Case(warm, DASH, warm, lambda: p.ours.poll_warm(ours_dir)),
        Case("poll cold: SSHRemoteJobTrigger", BASH, cold, lambda: p.operator.poll_cold(trigger)),
        Case("poll warm: SSHRemoteJobTrigger", BASH, warm, lambda: p.operator.poll_warm(trigger)),
        Case("poll: ansible ad-hoc async_status", DASH, cold, lambda: timed(lambda: p.ansible.status_adhoc(jid))[1]),
        Case(
            "poll: ansible-playbook async_status", DASH, cold, lambda: timed(lambda: p.ansible.status_playbook(jid))[1]
        ),
    ]


def run_rounds(cases: list[Case], repeat: int, after_round: Callable[[], None]) -> None:
    """Round 0 warms up untimed; rounds 1..REPEAT record, interleaved."""
    for round_no in range(repeat + 1):
        for case in cases:
            sample = case.run()
            if round_no:
                case.samples.append(sample)
        after_round()
        print(f"  round {round_no}/{repeat} done", file=sys.stderr, flush=True)


# --- footprint ----------------------------------------------------------------------------


def bare_pair() -> subprocess.Popen[bytes]:
    """The least any supervisor with a time limit can be beside the job: a
    bare /bin/sh (empty environment) parent of the job plus one bare sleep as
    its timer, the very processes ours uses, with nothing of ours in them."""
    script = f"sleep 3600 & {FOOTPRINT_CMD}; wait"
    return subprocess.Popen(["env", "-i", "/bin/sh", "-c", script], user=DASH, cwd="/", start_new_session=True)


def stop_pair(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def footprints(p: Peers) -> list[Footprint]:
    return [
        measure_footprint("floor: bare sh + bare sleep timer", DASH, bare_pair, stop_pair),
        measure_footprint("ours", DASH, lambda: p.ours.launch(FOOTPRINT_CMD), lambda job: p.ours.cleanup([job])),
        measure_footprint(
            "ours, job_timeout=3600",
            DASH,
            lambda: p.ours.launch(FOOTPRINT_CMD, timeout=3600),
            lambda job: p.ours.cleanup([job]),
        ),
        measure_footprint(
            "ansible async", DASH, lambda: p.ansible.launch(FOOTPRINT_CMD), lambda jid: p.ansible.cleanup([jid])
        ),
        measure_footprint(
            "SSHRemoteJobOperator",
            BASH,
            lambda: p.operator_posix.submit(FOOTPRINT_CMD)[0],
            lambda trig: p.operator.cleanup([trig]),
        ),
    ]


# --- the report ---------------------------------------------------------------------------


def summarize(case: Case, refs: dict[str, float]) -> dict[str, Any]:
    walls = sorted(s.wall * 1000 for s in case.samples)
    cpus = [s.cpu * 1000 for s in case.samples]
    q1, _, q3 = statistics.quantiles(walls, n=4) if len(walls) > 1 else (walls[0], 0, walls[0])
    median = statistics.median(walls)
    return {
        "case": case.name,
        "user": case.user,
        "n": len(walls),
        "median_ms": round(median, 1),
        "min_ms": round(walls[0], 1),
        "max_ms": round(walls[-1], 1),
        "q1_ms": round(q1, 1),
        "q3_ms": round(q3, 1),
        "cpu_median_ms": round(statistics.median(cpus), 1),
        "samples_ms": [round(s.wall * 1000, 1) for s in case.samples],
        "vs": case.ref,
        "ratio": round(median / refs[case.ref], 2),
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'case':<48} {'user':<9} {'median':>8} {'min':>8} {'max':>8} {'IQR':>15} {'cpu':>7} {'x ours':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        iqr = f"{r['q1_ms']:.0f}-{r['q3_ms']:.0f}"
        lines.append(
            f"{r['case']:<48} {r['user']:<9} {r['median_ms']:>8.1f} {r['min_ms']:>8.1f} {r['max_ms']:>8.1f} "
            f"{iqr:>15} {r['cpu_median_ms']:>7.0f} {r['ratio']:>6.2f}x"
        )
    return "\n".join(lines)


def footprint_table(fps: list[Footprint]) -> str:
    lines = []
    for fp in fps:
        lines.append(
            f"{fp.method} ({fp.user}): {fp.count} helper process{'' if fp.count == 1 else 'es'} beside the job, "
            f"{fp.rss_kb} kB RSS ({fp.pss_kb} kB PSS)"
        )
        lines += [
            f"    {p.rss_kb:>6} kB ({p.pss_kb:>5} PSS)  {p.cmdline[:150]}"
            + ("" if p in fp.helpers else "   (the job's own shell)")
            for p in fp.processes
        ]
        if fp.leftover:
            lines.append(f"    LEFT AFTER CLEANUP: pids {fp.leftover}")
        if fp.jobs > 1:
            lines.append(
                f"    WARNING: {fp.jobs} `{FOOTPRINT_CMD}` of {fp.user} ran at once; the count may include another's"
            )
        if fp.unrelated:
            lines.append(f"    ({fp.unrelated} other new processes of {fp.user}, not the job's, not counted)")
    return "\n".join(lines)


# --- the run ---------------------------------------------------------------------------------


def stop_server(server: SSHServer) -> None:
    """Stop our sshd (and its sessions) and remove the temp dir the harness made for it."""
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


def _deadline(seconds: int) -> None:
    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"bench_peers ran past its {seconds}s deadline")

    signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)


def make_peers(server: SSHServer) -> Peers:
    server.set_connection("bench_ours", DASH, conn_timeout=CONN_TIMEOUT)
    server.set_connection("bench_operator", BASH, conn_timeout=CONN_TIMEOUT)
    return Peers(
        ours=Ours("bench_ours"),
        ansible=AnsiblePeer.create(server, DASH),
        operator=OperatorPeer("bench_operator"),
        operator_posix=OperatorPeer("bench_operator", remote_os="posix"),
    )


def bench(server: SSHServer, repeat: int, with_footprint: bool) -> tuple[dict[str, Any], list[Footprint]]:
    peers = make_peers(server)
    try:
        print("launch rounds", file=sys.stderr)
        launches = launch_cases(peers)
        run_rounds(launches, repeat, peers.cleanup)

        print("poll rounds", file=sys.stderr)
        target = peers.ours.launch(FOOTPRINT_CMD)
        peers.ours_jobs.append(target)
        trigger = peers.operator_posix.submit(FOOTPRINT_CMD)[0]
        peers.operator_jobs.append(trigger)
        jid = peers.ansible.launch(FOOTPRINT_CMD)
        peers.ansible_jobs.append(jid)
        polls = poll_cases(peers, target.job_dir, trigger, jid)
        run_rounds(polls, repeat, lambda: None)
        peers.cleanup()

        print("footprint", file=sys.stderr)
        fps = footprints(peers) if with_footprint else []
    finally:
        peers.cleanup()
        peers.ansible.remove()
    cases = launches + polls
    refs = {c.name: statistics.median(s.wall * 1000 for s in c.samples) for c in cases if c.name == c.ref}
    result = {
        "repeat": repeat,
        "sshd": f"127.0.0.1:{server.port}",
        "rows": [summarize(c, refs) for c in cases],
        "footprint": [fp.to_dict() for fp in fps],
    }
    return result, fps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="timed rounds per case (default 10)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--no-footprint", action="store_true", help="skip the remote footprint part")
    parser.add_argument("--deadline", type=int, default=1200, help="abort after this many seconds (default 1200)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    quiet_logs()
    _deadline(args.deadline)
    started = time.monotonic()
    server = start_server()
    try:
        result, fps = bench(server, args.repeat, not args.no_footprint)
    finally:
        signal.alarm(0)
        stop_server(server)
    result["seconds"] = round(time.monotonic() - started, 1)

    print(f"\nLatency, ms (n={args.repeat} after one warm-up; x ours = median / our matching median)")
    print(table(result["rows"]))
    if fps:
        print("\nRemote footprint of one running `sleep 300` (processes of the SSH user besides the sleep)")
        print(footprint_table(fps))
    print(f"\n({result['seconds']} s in all)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
