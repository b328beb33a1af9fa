"""Looking at host processes the way a person with `ps` would."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol


def _stat_fields(pid_dir: Path) -> list[str] | None:
    try:
        stat = (pid_dir / "stat").read_text()
    except OSError:
        return None
    # Fields after "pid (comm)": state, ppid, pgrp, ...
    return stat.rsplit(")", 1)[1].split()


def live_group_members(pgid: int, limit: float = 5) -> list[int]:
    """Processes of group PGID that are not zombies, once they had LIMIT s to die."""
    deadline = time.monotonic() + limit
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                fields = _stat_fields(entry)
                if fields and int(fields[2]) == pgid and fields[0] != "Z":
                    found.append(int(entry.name))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def rss_kb(pid: int) -> int:
    """Resident memory of PID in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Every live process below PID (children, their children, ...), zombies left out."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(entry)
            if fields and fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Process(Protocol):
    pid: int
    ppid: int


def descendants_in(roots: set[int], table: Iterable[Process]) -> set[int]:
    """Every process of TABLE below one of ROOTS (not ROOTS themselves)."""
    children: dict[int, list[int]] = {}
    for p in table:
        children.setdefault(p.ppid, []).append(p.pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def with_env(item: str) -> list[int]:
    """Live processes whose environment holds ITEM (``NAME=VALUE``): what a
    script left running, found by a value the test gave it alone."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = _stat_fields(entry)
        if fields and fields[0] != "Z" and item.encode() in environ:
            found.append(int(entry.name))
    return found
