"""A logger for tests that call the watch loop directly."""

from __future__ import annotations

from typing import Any


class ListLog:
    """Keeps what the trigger's watch loop logs, in order, as formatted lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, fmt: str, *args: Any) -> None:
        self.lines.append(fmt % args)

    warning = debug = info
