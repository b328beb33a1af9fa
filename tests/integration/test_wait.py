"""The status call that waits on the host (the ``wait_on_host`` extra), against the real sshd.

A job's end reaches its trigger within a second or so whatever the poll
interval; the wait delays no cancel; a host without inotifywait (its PATH
lacks it) is served by the sleep loop; the switch turns it all off.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_ssh_async import SSHAsyncJobTrigger, batching
from airflow_ssh_async.client import remote_host
from airflow_ssh_async.hooks import SSHAsyncJobHook, StatusWait
from tests.harness.logs import ListLog
from tests.harness.procs import descendants
from tests.harness.sshd import SSHServer

pytestmark = pytest.mark.timeout(180)

SHELL_USERS = ("asyncdash", "asyncbash", "asyncash")
# What the tests allow between the job's result.json and its event: the
# target is one second; a loaded machine gets half a second more.
BOUND = 1.5
# A folder of these tests' own: a job folder another test left behind in
# the default one changes nothing here.
ASYNC_DIR = "~/.airflow_async_wait"


class Log(ListLog):
    error = ListLog.info


def trigger_for(conn_id: str, job_id: str, job_dir: str, poll: float, **kw: Any) -> SSHAsyncJobTrigger:
    trigger = SSHAsyncJobTrigger(conn_id, job_id, job_dir=job_dir, async_dir=ASYNC_DIR, poll_interval=poll, **kw)
    trigger._log = Log()  # type: ignore[assignment]
    return trigger


async def event_of(trigger: SSHAsyncJobTrigger) -> tuple[dict[str, Any], float]:
    """The trigger's event, and when it came (epoch seconds, the host's clock: the host is this machine)."""
    event = await anext(trigger.run())
    return event.payload, time.time()


def ended_at(job_dir: str) -> float:
    """When the supervisor put result.json in place (the job's end, as a watcher can know it)."""
    return os.stat(Path(job_dir) / "result.json").st_mtime


class StatusCalls:
    """Every status call made, with its arguments and how it returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[float, Any]] = []
        real = batching.HostBatcher._fetch_status_wait
        calls = self

        async def fetch(self: batching.HostBatcher, job_dirs: list[str], wait: Any, on_part: Any) -> Any:
            calls.calls.append((time.monotonic(), wait))
            return await real(self, job_dirs, wait, on_part)

        monkeypatch.setattr(batching.HostBatcher, "_fetch_status_wait", fetch)


@pytest.mark.parametrize("user", SHELL_USERS)
def test_an_end_reaches_the_trigger_within_a_second_at_poll_interval_30(sshd, job_id, user, monkeypatch) -> None:
    calls = StatusCalls(monkeypatch)
    conn = f"test_{user}"
    launched = SSHAsyncJobHook(conn, ASYNC_DIR).launch(job_id, "echo begin; sleep 8; echo done; exit 3")
    event, at = asyncio.run(event_of(trigger_for(conn, job_id, launched.job_dir, poll=30)))
    late = at - ended_at(launched.job_dir)
    assert event["status"] == "finished", event
    assert event["result"]["exit_code"] == 3
    assert event["result"]["stdout_tail"] == "begin\ndone\n"
    assert late < BOUND, f"the event came {late:.2f} s after the job's end (poll_interval=30)"
    # The first poll at once, then a wait that the end (or the first line) cut short.
    assert len(calls.calls) <= 4, calls.calls
    assert any(wait is not None for _, wait in calls.calls), calls.calls


def test_the_wait_does_not_delay_a_cancel(sshd, job_id) -> None:
    conn = "test_asyncdash"
    launched = SSHAsyncJobHook(conn, ASYNC_DIR).launch(job_id, "sleep 300")
    trigger = trigger_for(conn, job_id, launched.job_dir, poll=30, grace=2)
    canceller = trigger_for(conn, job_id, launched.job_dir, poll=30, grace=2)

    async def scenario() -> tuple[float, dict[str, Any], float]:
        watching = asyncio.create_task(event_of(trigger))
        await asyncio.sleep(3)  # the trigger's status call now waits on the host
        started = time.monotonic()
        await canceller.on_kill()  # same loop, same shared connection: its own channel
        took = time.monotonic() - started
        event, at = await asyncio.wait_for(watching, 30)
        return took, event, at

    took, event, at = asyncio.run(scenario())
    assert f"cancel of job {job_id} in {launched.job_dir}: cancelled" in canceller.log.lines, canceller.log.lines
    assert took < 5, f"the cancel took {took:.1f} s while a status call waited"
    assert event["result"]["state"] == "cancelled", event
    late = at - ended_at(launched.job_dir)
    assert late < BOUND, f"the cancelled job's event came {late:.2f} s after its end"


def test_with_the_switch_off_the_end_waits_for_the_next_tick(sshd, job_id, monkeypatch) -> None:
    calls = StatusCalls(monkeypatch)
    sshd.set_connection("wait_off", "asyncdash", wait_on_host=False)
    launched = SSHAsyncJobHook("wait_off", ASYNC_DIR).launch(job_id, "sleep 1")
    event, at = asyncio.run(event_of(trigger_for("wait_off", job_id, launched.job_dir, poll=5)))
    assert event["result"]["state"] == "succeeded", event
    assert all(wait is None for _, wait in calls.calls), calls.calls
    # Polled on the 5 s ticks: the event comes at one, not at the end.
    assert abs(at % 5) < 1 or abs(at % 5) > 4.5, at
    gaps = [b[0] - a[0] for a, b in zip(calls.calls, calls.calls[1:], strict=False)]
    assert all(g > 2.5 for g in gaps[1:]), gaps


def own_sshd(conn_id: str, path: str = "") -> SSHServer:
    """An sshd of this test's own (its processes are all this test's), sessions' PATH set to PATH."""
    server = SSHServer(Path(tempfile.mkdtemp(prefix="ssh-async-sshd-")))
    server.prepare()
    if path:
        config = server.workdir / "sshd_config"
        config.write_text(config.read_text() + f"SetEnv PATH={path}\n")
    server.start()
    server.set_connection(conn_id, "asyncash")
    return server


@pytest.fixture
def no_inotify_sshd() -> Iterator[SSHServer]:
    """A second sshd whose sessions' PATH has every command of this machine but inotifywait."""
    bin_dir = Path(tempfile.mkdtemp(prefix="ssh-async-no-inotify-", dir="/tmp"))
    os.chmod(bin_dir, 0o755)
    for folder in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        for name in os.listdir(folder):
            if name != "inotifywait" and not (bin_dir / name).exists():
                (bin_dir / name).symlink_to(os.path.join(folder, name))
    server = own_sshd("no_inotify", str(bin_dir))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)
        shutil.rmtree(bin_dir, ignore_errors=True)


@pytest.fixture
def lone_sshd() -> Iterator[SSHServer]:
    server = own_sshd("lone")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def test_a_wait_given_up_by_the_client_ends_on_the_host(lone_sshd, job_id) -> None:
    """A new watcher cuts a wait short by closing its channel: the script must not linger."""
    hook = SSHAsyncJobHook("lone", ASYNC_DIR)
    launched = hook.launch(job_id, "sleep 60")

    def status_scripts() -> list[int]:
        assert lone_sshd.process is not None
        return [
            p
            for p in descendants(lone_sshd.process.pid)
            if b"airflow-ssh-async-status" in Path(f"/proc/{p}/cmdline").read_bytes()
        ]

    async def scenario() -> tuple[list[int], list[int]]:
        async with remote_host(await hook.aget_options()) as host:
            call = asyncio.create_task(hook.astatus_wait([launched.job_dir], StatusWait(60), host=host))
            await asyncio.sleep(2)
            during = status_scripts()
            call.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await call  # cancelled, or the closed channel's error
            await asyncio.sleep(3)  # a second to notice, and slack for a busy machine
            return during, status_scripts()

    try:
        during, after = asyncio.run(scenario())
        assert during, "no waiting status script on the host"
        assert after == [], f"status scripts {after} still run after the client gave up"
    finally:
        hook.cancel(launched.job_dir, grace=1)


def test_a_host_without_inotifywait_is_served_by_the_sleep_loop(no_inotify_sshd, job_id) -> None:
    hook = SSHAsyncJobHook("no_inotify", ASYNC_DIR)
    probe = hook.run_sync(lambda h: h.run("status", []))  # the session's PATH, as the scripts see it
    assert b"protocol" in probe
    launched = hook.launch(job_id, "command -v inotifywait || echo none; sleep 3")
    event, at = asyncio.run(event_of(trigger_for("no_inotify", job_id, launched.job_dir, poll=30)))
    assert event["result"]["stdout_tail"] == "none\n", "inotifywait was on the host's PATH"
    late = at - ended_at(launched.job_dir)
    assert late < BOUND, f"the event came {late:.2f} s after the job's end without inotifywait"
