"""The framed records every remote script answers in (`NAME LEN\\nVALUE\\n`), and the protocol number.

Byte exact and pure: a half-written or truncated reply raises
:class:`ProtocolError`, never a guess (docs/protocol.md).
"""

from __future__ import annotations

PROTOCOL = 1


class ProtocolError(ValueError):
    """A remote report that cannot be read: half-written, truncated, unknown."""


def parse_frames(data: bytes) -> list[tuple[str, bytes]]:
    """Read `NAME LEN\\nVALUE\\n` records, byte exact; raise on anything else."""
    records: list[tuple[str, bytes]] = []
    pos = 0
    end = len(data)
    while pos < end:
        nl = data.find(b"\n", pos)
        if nl < 0:
            raise ProtocolError(f"truncated record header at byte {pos}")
        header = data[pos:nl].split(b" ")
        if len(header) != 2 or not header[1].isdigit():
            raise ProtocolError(f"bad record header {data[pos:nl][:80]!r} at byte {pos}")
        name, size = header[0].decode("ascii", "replace"), int(header[1])
        value_end = nl + 1 + size
        if value_end + 1 > end or data[value_end : value_end + 1] != b"\n":
            raise ProtocolError(f"record {name!r} of {size} bytes is truncated at byte {pos}")
        records.append((name, data[nl + 1 : value_end]))
        pos = value_end + 1
    return records
