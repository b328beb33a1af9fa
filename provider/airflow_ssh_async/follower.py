"""Follow one job's output: offsets, decoders and tails of its three streams.

The watch loop (watch.py) feeds it what a poll found; it logs whole lines,
keeps the tails a result carries, and records how far a task try's log got.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from airflow_ssh_async.batching import HostBatcher
from airflow_ssh_async.hooks import DEFAULT_CHUNK, STREAMS, ReadRequest
from airflow_ssh_async.masking import Masker
from airflow_ssh_async.streams import MAX_LINE, LineDecoder, Tail

# How long a cancelled watcher (a triggerer stopping, a trigger moved) may
# take to tell the host how far its log got before it goes.
RECORD_ON_CANCEL_S = 5.0


class OutputFollower:
    """Offsets, decoders and tails of one job's three streams.

    With a ``log_key`` (the task try whose log this is) the host keeps, beside
    the job, how far that log got (output.sh): every read carries the
    position of the last line this watcher logged, and once a catch-up's
    lines are logged, one more request (batched per host, reading nothing)
    confirms them. A watcher of the same try that starts again (after a
    triggerer restart or failover) continues from the last confirmed line:
    bytes its predecessor was sent but never logged are read and logged
    again, so no line is lost; a line is logged twice only if the
    predecessor was killed between logging it and that confirmation (a
    cancelled watcher confirms before it goes).

    With ``from_tail`` (a sensor's poke, which may find the job at any
    point) the first catch-up starts ``tail_bytes`` before each stream's
    end, as ``tail -f`` does: those bytes are logged when the job has ended
    already, and only read into the result's tails while it runs; lines that
    come after them are logged as they come.
    """

    def __init__(
        self,
        job_dir: str,
        log: logging.Logger | Any,
        tail_bytes: int,
        stream: bool,
        masker: Masker | None = None,
        log_key: str = "",
        *,
        from_tail: bool = False,
    ) -> None:
        self.job_dir = job_dir
        self.tail_bytes = tail_bytes
        self._from_tail = from_tail
        self.log = log
        self.stream = stream
        self.masker = masker or Masker()
        self.log_key = log_key
        self.offsets = {s: 0 for s in STREAMS}
        # Where each stream's last logged line ended (raw bytes): the log has
        # every line before it. What output.sh records as LOGGED.
        self.line_ends = {s: 0 for s in STREAMS}
        # The LOGGED the host last acknowledged, per stream.
        self._recorded = {s: 0 for s in STREAMS}
        self.tails = {s: Tail(tail_bytes) for s in ("stdout", "stderr")}
        self.decoders = {s: self._decoder(s) for s in STREAMS}
        self.progress = ""
        # stream -> (logged, read): with from_tail, bytes before `read` were read
        # for the result's tail only; lines from `logged` to `read` are not logged.
        self._earlier: dict[str, tuple[int, int]] = {}
        # stream -> bytes an earlier watcher of this try had read beyond the
        # lines it confirmed (read again now), for the log line and benchmarks.
        self.read_again: dict[str, int] = {}
        self._resumed = not log_key

    def _decoder(self, stream: str, mid_stream: bool = False) -> LineDecoder:
        return LineDecoder(self.masker, self.tails.get(stream), mid_stream=mid_stream)

    def _emit(self, stream: str, lines: list[str], *, logged_before: bool = False) -> None:
        for line in lines:
            if stream == "progress":
                self.progress = line
                if self.stream and not logged_before:
                    self.log.info("progress: %s", line)
            elif self.stream and not logged_before:
                (self.log.warning if stream == "stderr" else self.log.info)("%s", line)

    async def resume(self, batcher: HostBatcher) -> None:
        """Once: start where an earlier watcher of this try left the log."""
        if self._resumed:
            return
        records = await asyncio.gather(*(batcher.delivered.get((self.job_dir, s, self.log_key)) for s in STREAMS))
        self._resumed = True
        for stream, record in zip(STREAMS, records, strict=True):
            if record is None or record[1] <= 0:
                continue
            logged, read = record
            self.read_again[stream] = max(0, read - logged)
            self.offsets[stream] = self.line_ends[stream] = self._recorded[stream] = logged
            # The result's tail wants the bytes before `logged` too.
            if stream in self.tails and logged > 0:
                start = max(0, logged - self.tails[stream].limit)
                [before] = await asyncio.gather(
                    batcher.read.get(ReadRequest(self.job_dir, stream, start, logged - start))
                )
                self.tails[stream].feed(self.masker.text(before.data.decode("utf-8", "replace"), True).encode())
            self.decoders[stream] = self._decoder(stream, mid_stream=logged > 0)
        if self.read_again:
            where = ", ".join(f"{s} at byte {self.line_ends[s]}" for s in self.read_again)
            self.log.info("continuing this try's log of the job's output where it stopped (%s)", where)

    def _start_at_tail(self, sizes: dict[str, int], ended: bool) -> None:
        """Once, with from_tail: begin each stream tail_bytes before SIZES."""
        self._from_tail = False
        for stream in STREAMS:
            size = sizes.get(stream, 0)
            start = max(0, size - self.tail_bytes)
            self.offsets[stream] = self.line_ends[stream] = start
            self.decoders[stream] = self._decoder(stream, mid_stream=start > 0)
            if not ended:  # read for the result's tail, not logged: the log follows from here
                self._earlier[stream] = (start, size)

    async def catch_up(
        self, batcher: HostBatcher, sizes: dict[str, int], chunk: int = DEFAULT_CHUNK, *, ended: bool = False
    ) -> None:
        """Read every stream up to SIZES, chunk by chunk, logging whole lines,
        then confirm to the host what was logged.

        ``ended``: SIZES are the job's final sizes (matters for from_tail only).
        """
        try:
            await self._catch_up(batcher, sizes, chunk, ended)
        except asyncio.CancelledError:
            # Stopped (a triggerer shutting down): say how far the log got
            # first, so the next watcher of this try repeats nothing.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.confirm(batcher), RECORD_ON_CANCEL_S)
            raise
        await self.confirm(batcher)

    async def confirm(self, batcher: HostBatcher) -> None:
        """Record on the host the lines logged since the last record (one
        batched request a stream, reading nothing); nothing when none were."""
        if not self.log_key:
            return
        behind = [s for s in STREAMS if self.line_ends[s] != self._recorded[s]]
        if not behind:
            return
        requests = [ReadRequest(self.job_dir, s, self.offsets[s], 0, self.log_key, self.line_ends[s]) for s in behind]
        await asyncio.gather(*(batcher.record.get(r) for r in requests))
        for r in requests:
            self._recorded[r.stream] = r.logged

    async def _catch_up(self, batcher: HostBatcher, sizes: dict[str, int], chunk: int, ended: bool) -> None:
        await self.resume(batcher)
        if self._from_tail:
            self._start_at_tail(sizes, ended)
        for stream in STREAMS:
            if sizes.get(stream, 0) < self.line_ends[stream]:
                self._restart(stream, sizes.get(stream, 0))
        while True:
            behind = [s for s in STREAMS if sizes.get(s, 0) > self.offsets[s]]
            if not behind:
                return
            requests = [
                ReadRequest(self.job_dir, s, self.offsets[s], chunk, self.log_key, self.line_ends[s]) for s in behind
            ]
            chunks = await asyncio.gather(*(batcher.read.get(r) for r in requests))
            for r, got in zip(requests, chunks, strict=True):
                stream = r.stream
                if not got.missing and not got.shrunk:
                    self._recorded[stream] = r.logged  # the host recorded the request's LOGGED
                if got.shrunk:
                    self._restart(stream, got.size)
                    sizes[stream] = got.size
                elif got.missing or not got.data:
                    sizes[stream] = self.offsets[stream]  # gone: stop asking
                else:
                    await self._take(stream, got.data)

    def _restart(self, stream: str, size: int) -> None:
        """The job rewrote STREAM (a progress file written with `>`): it is
        shorter than what was read. Follow it from its new start."""
        self.log.warning(
            "%s of job %s shrank to %d bytes, below the %d read: the job rewrote it; following it from its start",
            stream,
            self.job_dir,
            size,
            self.offsets[stream],
        )
        self.offsets[stream] = self.line_ends[stream] = 0
        self.decoders[stream] = self._decoder(stream)
        self._earlier.pop(stream, None)

    async def _take(self, stream: str, data: bytes) -> None:
        start = self.offsets[stream]
        self.offsets[stream] += len(data)
        _, read = self._earlier.get(stream, (0, 0))
        if start < read:  # from_tail: read for the result's tail, not for the log
            self._emit(stream, self.decoders[stream].feed(data[: read - start]), logged_before=True)
            self._logged_to(stream, start, data, read - start)
            data, start = data[read - start :], read
        # Bounded pieces between yields: a megabyte of short lines is
        # thousands of log records, and the event loop has other watchers.
        for i in range(0, len(data), MAX_LINE):
            self._emit(stream, self.decoders[stream].feed(data[i : i + MAX_LINE]))
            self._logged_to(stream, start, data, min(len(data), i + MAX_LINE))
            await asyncio.sleep(0)

    def _logged_to(self, stream: str, start: int, data: bytes, fed: int) -> None:
        """DATA (at byte START of STREAM) was fed to the log up to FED: move
        line_ends to the end of its last whole line there. A \r only counts
        when a byte follows it (it may be half of \r\n: the decoder holds it)."""
        end = max(data.rfind(b"\n", 0, fed), data.rfind(b"\r", 0, fed - 1))
        if end >= 0:
            self.line_ends[stream] = max(self.line_ends[stream], start + end + 1)

    def deliver(self, stream: str, data: bytes) -> None:
        """Output that arrives whole at the end (an Ansible job's result)."""
        self._emit(stream, self.decoders[stream].feed(data))

    def finish(self) -> None:
        for stream in STREAMS:
            self._emit(stream, self.decoders[stream].finish())
