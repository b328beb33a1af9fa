"""Connecting never blocks the event loop, and unverified host keys are warned about as SSHHook does."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from airflow_ssh_async import connect
from airflow_ssh_async.client import HOST_KEY_CHANGE_WARNING, NO_HOST_KEY_CHECK_WARNING, open_connection
from airflow_ssh_async.hooks import SSHAsyncJobHook

USER = "asyncdash"
PASSPHRASE = "storm-passphrase"


def authorize(sshd, pub: str) -> None:
    """Add PUB to the test users' authorized keys of this sshd."""
    keys_dir = re.search(r"^AuthorizedKeysFile (\S+)/%u$", (sshd.workdir / "sshd_config").read_text(), re.M)[1]
    for user in ("asyncdash", "asyncbash", "asyncash"):
        with open(Path(keys_dir) / user, "a") as fh:
            fh.write(pub)


@pytest.fixture(scope="module")
def encrypted_key(sshd) -> Path:
    """A passphrase-protected ed25519 key (OpenSSH format: bcrypt KDF), authorized on the test sshd."""
    path = sshd.workdir / f"storm_ed25519_{uuid.uuid4().hex[:6]}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-f", str(path)], check=True)
    authorize(sshd, Path(f"{path}.pub").read_text())
    return path


async def _max_loop_gap(work: asyncio.Future[object]) -> float:
    """The longest the loop went without running a 5 ms timer while WORK ran."""
    gaps: list[float] = []
    last = time.perf_counter()
    while not work.done():
        await asyncio.sleep(0.005)
        now = time.perf_counter()
        gaps.append(now - last - 0.005)
        last = now
    await work
    return max(gaps)


@pytest.mark.timeout(180)
def test_a_reconnect_storm_with_an_encrypted_key_does_not_block_the_loop(sshd, encrypted_key) -> None:
    """50 connections at once, each its own connection id, with a passphrase-protected inline key."""
    ids = [f"storm_{i}_{uuid.uuid4().hex[:6]}" for i in range(50)]
    for conn_id in ids:
        sshd.set_connection(
            conn_id, USER, key_file=None, private_key=encrypted_key.read_text(), private_key_passphrase=PASSPHRASE
        )
    options = [SSHAsyncJobHook(conn_id).get_options() for conn_id in ids]

    async def storm() -> float:
        async def one(o: object) -> None:
            conn = await open_connection(o)  # type: ignore[arg-type]
            conn.close()
            await conn.wait_closed()

        work = asyncio.ensure_future(asyncio.gather(*(one(o) for o in options)))
        return await _max_loop_gap(work)

    gap = asyncio.run(storm())
    assert gap < 0.5, f"the event loop was blocked for {gap * 1000:.0f} ms at once during 50 connects"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("extra", "warning"),
    [
        ({"no_host_key_check": "true"}, NO_HOST_KEY_CHECK_WARNING),
        ({"allow_host_key_change": "true"}, HOST_KEY_CHANGE_WARNING),
    ],
)
def test_an_unverified_host_key_is_warned_about_as_sshhook_does(sshd, caplog, extra, warning) -> None:
    conn_id = f"unverified_{uuid.uuid4().hex[:6]}"
    sshd.set_connection(conn_id, USER, host_key=None, **extra)
    hook = SSHAsyncJobHook(conn_id)
    with caplog.at_level(logging.WARNING, logger=connect.__name__):
        assert hook.status([hook.job_dir("no-such-job")])
    [record] = [r for r in caplog.records if r.getMessage().startswith(warning)]
    assert record.levelno == logging.WARNING and conn_id in record.getMessage()
