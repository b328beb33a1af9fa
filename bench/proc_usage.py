"""CPU and memory of groups of processes (Airflow components, sshd sessions), sampled from /proc.

One pass over /proc a sample; a group is the processes of some sessions plus
everything below some roots. CPU counts the reaped children too (cutime,
cstime): a poll's ``status.sh`` runs and exits between two samples, and its
time lands in the sshd session that waited for it. A process that leaves the
group alive (reparented away when its parent exits) or dies unreaped by the
group takes its time with it, so the sampler banks what it last saw of it.
What a process used after the last sample before it left is missed: the
figures are a lower bound, to a sample interval's worth.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.harness.procs import descendants_in

TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class Row:
    """The parts of /proc/PID/stat and statm a sample needs."""

    pid: int
    ppid: int
    sid: int
    ticks: int  # utime + stime + cutime + cstime
    rss_kb: int
    comm: str


def table() -> dict[int, Row]:
    """Every live, non-zombie process."""
    rows = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            with open(f"/proc/{entry}/statm", "rb") as f:
                resident = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            continue
        ticks = sum(int(x) for x in fields[11:15])
        rows[int(entry)] = Row(int(entry), int(fields[1]), int(fields[3]), ticks, resident * PAGE_KB, comm)
    return rows


def members(rows: dict[int, Row], sessions: set[int], roots: set[int]) -> set[int]:
    """PIDs in SESSIONS, the ROOTS themselves, and every descendant of either."""
    found = {r.pid for r in rows.values() if r.sid in sessions} | (roots & rows.keys())
    return found | descendants_in(found, rows.values())


@dataclass
class Usage:
    """What one group used: CPU seconds at each mark, peak and last memory, process counts."""

    cpu_s: dict[str, float] = field(default_factory=dict)
    peak_rss_kb: dict[str, int] = field(default_factory=dict)  # per phase, the phase that ended at the mark
    peak_procs: dict[str, int] = field(default_factory=dict)


# A group: a function from the process table to its PIDs (components come and go).
Group = Callable[[dict[int, Row]], set[int]]


class Sampler:
    """Samples groups every ``interval`` s in a thread; ``mark(name)`` closes a phase.

    CPU of a phase = the group's ticks at its closing mark minus at the one before
    (reaped children included, see the module's docstring); memory = the peak of
    the group's summed RSS over the phase's samples.
    """

    def __init__(self, groups: dict[str, Group], interval: float = 2.0) -> None:
        self.groups = groups
        self.interval = interval
        self.usage = {name: Usage() for name in groups}
        self._lock = threading.Lock()
        self._peak_rss = dict.fromkeys(groups, 0)
        self._peak_procs = dict.fromkeys(groups, 0)
        self._last_ticks: dict[str, int] = {}
        self._seen: dict[str, dict[int, tuple[int, int]]] = {name: {} for name in groups}  # pid: ticks, ppid
        self._banked = dict.fromkeys(groups, 0)
        self._last_mark = 0.0
        self.durations: dict[str, float] = {}  # seconds per phase
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)

    def _sample(self) -> dict[str, int]:
        rows = table()
        ticks = {}
        with self._lock:
            for name, group in self.groups.items():
                pids = group(rows)
                self._bank_departed(name, pids, rows)
                ticks[name] = self._banked[name] + sum(rows[p].ticks for p in pids if p in rows)
                self._peak_rss[name] = max(self._peak_rss[name], sum(rows[p].rss_kb for p in pids if p in rows))
                self._peak_procs[name] = max(self._peak_procs[name], len(pids))
        return ticks

    def _bank_departed(self, name: str, pids: set[int], rows: dict[int, Row]) -> None:
        """Keep the last seen ticks of processes that left the group without a member reaping them.

        A dead process whose parent was in the group (and still is, or left with
        it) was reaped there: its time is in that parent's cstime/cutime now.
        """
        before = self._seen[name]
        for pid, (last, ppid) in before.items():
            if pid in pids:
                continue
            alive_elsewhere = pid in rows
            reaped_here = not alive_elsewhere and ppid in before
            if not reaped_here:
                self._banked[name] += last
        self._seen[name] = {p: (rows[p].ticks, rows[p].ppid) for p in pids if p in rows}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> Sampler:
        self._last_ticks = self._sample()
        self._last_mark = time.monotonic()
        self._thread.start()
        return self

    def mark(self, phase: str) -> None:
        """End the phase PHASE now: its CPU seconds and its peak memory per group."""
        ticks = self._sample()
        now = time.monotonic()
        with self._lock:
            self.durations[phase] = now - self._last_mark
            self._last_mark = now
            for name, usage in self.usage.items():
                usage.cpu_s[phase] = round((ticks[name] - self._last_ticks.get(name, 0)) / TICK, 1)
                usage.peak_rss_kb[phase] = self._peak_rss[name]
                usage.peak_procs[phase] = self._peak_procs[name]
                self._peak_rss[name] = 0
                self._peak_procs[name] = 0
            self._last_ticks = ticks

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
