"""A logger wrapper that hands each call on as one formatted line, for wrappers that look at lines."""

from __future__ import annotations

from typing import Any


class LineLog:
    """Each debug/info/warning/error call becomes ``_line(msg, args)``, logged as
    ``"%s"``: subclasses rewrite or count the line in ``_line``."""

    def __init__(self, log: Any) -> None:
        self._log = log

    def _line(self, msg: object, args: tuple[Any, ...]) -> str:
        return str(msg) % args if args else str(msg)

    def debug(self, msg: object, *args: Any) -> None:
        self._log.debug("%s", self._line(msg, args))

    def info(self, msg: object, *args: Any) -> None:
        self._log.info("%s", self._line(msg, args))

    def warning(self, msg: object, *args: Any) -> None:
        self._log.warning("%s", self._line(msg, args))

    def error(self, msg: object, *args: Any) -> None:
        self._log.error("%s", self._line(msg, args))
