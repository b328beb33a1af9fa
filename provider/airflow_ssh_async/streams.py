"""Pure helpers for output: bytes to log lines without splitting a character.

Reads arrive at arbitrary byte offsets, so a UTF-8 character may straddle two
chunks; an incremental decoder holds the partial bytes until the rest comes.
Secrets are masked on the decoded text before it is cut into lines (or, for
a line too long to log at once, into pieces), so no cut can split a secret.
"""

from __future__ import annotations

import codecs

from airflow_ssh_async.masking import Masker, StreamMasker


class LineDecoder:
    """Feed byte chunks, get back whole lines, secrets masked; ``finish()`` returns the rest.

    :param masker: what to mask (default: nothing).
    :param tail: also receives the masked text, so a result's tail holds no secret.
    :param mid_stream: the first chunk is read from inside the stream.
    """

    def __init__(self, masker: Masker | None = None, tail: Tail | None = None, mid_stream: bool = False) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._masker: StreamMasker = (masker or Masker()).stream(mid_stream)
        self._tail = tail
        self._partial = ""

    def _text(self, text: str) -> str:
        if self._tail is not None and self._tail.limit > 0 and text:
            self._tail.feed(text[-self._tail.limit :].encode())
        return text

    def feed(self, data: bytes) -> list[str]:
        text = self._partial + self._text(self._masker.feed(self._decoder.decode(data)))
        *lines, self._partial = text.split("\n")
        return lines

    def finish(self) -> list[str]:
        rest = self._decoder.decode(b"", final=True)
        text = self._partial + self._text(self._masker.feed(rest) + self._masker.finish())
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
