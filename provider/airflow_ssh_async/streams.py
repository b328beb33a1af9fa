"""Pure helpers for output: bytes to log lines without splitting a character.

Reads arrive at arbitrary byte offsets, so a UTF-8 character may straddle two
chunks; an incremental decoder holds the partial bytes until the rest comes.
Secrets are masked on the decoded text before it is cut into lines (or, for
a line too long to log at once, into pieces), so no cut can split a secret.
"""

from __future__ import annotations

import codecs
import re

from airflow_ssh_async.masking import Masker, StreamMasker

# The longest line logged as one record, in characters; a longer one comes in
# pieces of this size, so that a watcher holds at most this much of a line
# whatever the job prints (a progress bar without newlines, a megabyte of
# JSON on one line).
MAX_LINE = 64 * 1024

_LINE_END = re.compile(r"\r\n|\r|\n")


class LineDecoder:
    """Feed byte chunks, get back whole lines, secrets masked; ``finish()`` returns the rest.

    A line ends at ``\n``, ``\r\n`` or a lone ``\r``, as a terminal shows a
    progress bar's updates; a line longer than MAX_LINE characters comes in
    pieces, so the decoder holds at most MAX_LINE characters of a line.

    :param masker: what to mask (default: nothing).
    :param tail: also receives the masked text, so a result's tail holds no secret.
    :param mid_stream: the first chunk is read from inside the stream.
    """

    def __init__(
        self, masker: Masker | None = None, tail: Tail | None = None, mid_stream: bool = False, max_line: int = MAX_LINE
    ) -> None:
        self.max_line = max_line
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._masker: StreamMasker = (masker or Masker()).stream(mid_stream)
        self._tail = tail
        self._partial = ""

    def _text(self, text: str) -> str:
        if self._tail is not None and self._tail.limit > 0 and text:
            self._tail.feed(text[-self._tail.limit :].encode())
        return text

    def feed(self, data: bytes) -> list[str]:
        return self._lines(self._partial + self._text(self._masker.feed(self._decoder.decode(data))))

    def finish(self) -> list[str]:
        rest = self._decoder.decode(b"", final=True)
        lines = self._lines(self._partial + self._text(self._masker.feed(rest) + self._masker.finish()))
        last, self._partial = self._partial, ""
        return [*lines, last.removesuffix("\r")] if last else lines

    def _lines(self, text: str) -> list[str]:
        """The whole lines (and pieces of long ones) of TEXT; the rest is kept."""
        # A final \r may be the first half of \r\n: keep it for the next read.
        held = "\r" if text.endswith("\r") else ""
        *lines, rest = _LINE_END.split(text[: len(text) - len(held)])
        out: list[str] = []
        for line in lines:
            pieces, last = self._split(line)
            out += [*pieces, last]
        pieces, rest = self._split(rest)
        self._partial = rest + held
        return out + pieces

    def _split(self, line: str) -> tuple[list[str], str]:
        """Pieces of max_line characters cut off LINE while it is longer, and the rest."""
        n = self.max_line
        k = max(0, (len(line) - 1) // n)
        return [line[i * n : (i + 1) * n] for i in range(k)], line[k * n :]


class Tail:
    """The last ``limit`` bytes of a stream, kept without holding the stream."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        if self.limit <= 0:
            return
        self._buf += data[-self.limit :]
        del self._buf[: max(0, len(self._buf) - self.limit)]

    def text(self) -> str:
        # A cut at the front may split a character: drop the broken lead bytes.
        return bytes(self._buf).decode("utf-8", errors="ignore") if self._buf else ""
