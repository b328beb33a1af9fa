"""How long a trigger pauses before its event, so that its last log lines reach the task's log.

Airflow 3.3's triggerer carries a trigger's log lines and its "finished" on
two sockets and closes the try's log file when "finished" arrives; its
supervisor reads the log socket 4 KiB per turn of its loop
(``make_buffered_socket_reader``), "finished" in one turn. So a big last
batch of lines (a 64 KiB line, a burst at the job's end) is overtaken unless
the pause lets that many turns go by: it grows with the bytes logged in the
last seconds (seen: a 73 KB last batch lost from the task log 0.38 s before
"finished", with the old fixed 0.2 s, on a loaded 2-core machine).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from airflow_ssh_async.line_log import LineLog

SETTLE_BASE_S = 0.2  # any event: the last small lines
SETTLE_PER_CHUNK_S = 0.1  # per 4 KiB logged lately: one turn of the supervisor's loop, on a busy triggerer
SETTLE_MAX_S = 5.0
RECENT_S = 5.0  # lines older than this have landed
CHUNK = 4096


class LoggedBytes(LineLog):
    """A logger that passes every line on and keeps how many bytes it logged lately."""

    def __init__(self, log: Any, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(log)
        self._clock = clock
        self._recent: deque[tuple[float, int]] = deque()

    def _line(self, msg: object, args: tuple[Any, ...]) -> str:
        text = super()._line(msg, args)
        now = self._clock()
        self._recent.append((now, len(text.encode("utf-8", "surrogateescape")) + 1))
        while self._recent and self._recent[0][0] < now - RECENT_S:
            self._recent.popleft()
        return text

    def settle_seconds(self) -> float:
        """The pause before the event: SETTLE_BASE_S (which pays for the first
        turn), plus a turn's time per further 4 KiB logged lately."""
        since = self._clock() - RECENT_S
        recent = sum(n for at, n in self._recent if at >= since)
        return min(SETTLE_MAX_S, SETTLE_BASE_S + SETTLE_PER_CHUNK_S * (recent // CHUNK))
