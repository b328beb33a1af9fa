"""Pure helpers for output: bytes to log lines without splitting a character.

Reads arrive at arbitrary byte offsets, so a UTF-8 character may straddle two
chunks; an incremental decoder holds the partial bytes until the rest comes.
"""

from __future__ import annotations

import codecs


class LineDecoder:
    """Feed byte chunks, get back whole lines; ``finish()`` returns the rest."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""

    def feed(self, data: bytes) -> list[str]:
        text = self._partial + self._decoder.decode(data)
        *lines, self._partial = text.split("\n")
        return lines

    def finish(self) -> list[str]:
        text = self._partial + self._decoder.decode(b"", final=True)
        self._partial = ""
        return [text] if text else []


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
