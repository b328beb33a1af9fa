"""Hold a test's job until the moment the test is about, not for a fixed time.

A job that waits for a release file (``while [ ! -e FILE ]; do sleep 0.2; done``)
runs exactly as long as the test needs, however slow the machine: a fixed
``sleep 20`` is either too short under load or 20 s lost when idle.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def wait_for_release(release: Path) -> str:
    """The shell line a job runs to wait for RELEASE."""
    return f"while [ ! -e {release} ]; do sleep 0.2; done"


@contextlib.contextmanager
def released_when(sign: Path, release: Path, limit: float = 120) -> Iterator[None]:
    """Create RELEASE (as root: the job only tests that it exists) once SIGN
    exists, or after LIMIT seconds; on leaving in any case, and remove it then."""

    def watch() -> None:
        deadline = time.monotonic() + limit
        while not sign.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        release.touch()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        release.touch()
        watcher.join(timeout=30)
        release.unlink(missing_ok=True)
