"""Many triggers in one triggerer: shared connections, batched polls, isolated faults.

Everything goes through the real SSHAsyncJobTrigger.run (watch_job, the
batcher, the shared connection) in one event loop, as the triggerer runs
them, against real sshd instances on loopback.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_ssh_async import SSHAsyncJobTrigger, client
from airflow_ssh_async.client import remote_host
from airflow_ssh_async.hooks import SSHAsyncJobHook
from airflow_ssh_async.job import StatusParts
from tests.harness.release import wait_for_release
from tests.harness.sshd import SSHServer, home, start_server

pytestmark = pytest.mark.timeout(180)

USER = "asyncdash"


class Calls:
    """Every remote script run and every SSH connect, with their times."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs: list[tuple[float, str, str, list[str]]] = []  # (time, host label, script, args)
        self.connects: list[tuple[float, str]] = []
        real_run, real_open = client.RemoteHost.run, client.open_connection
        calls = self

        async def run(self: client.RemoteHost, name: str, args: Any, **kw: Any) -> bytes:
            calls.runs.append((time.monotonic(), self.options.label, name, list(args)))
            return await real_run(self, name, args, **kw)

        async def open_connection(options: Any) -> Any:
            calls.connects.append((time.monotonic(), options.label))
            return await real_open(options)

        monkeypatch.setattr(client.RemoteHost, "run", run)
        monkeypatch.setattr(client, "open_connection", open_connection)

    def of(self, name: str, label: str | None = None) -> list[tuple[float, str, str, list[str]]]:
        return [r for r in self.runs if r[2] == name and (label is None or r[1] == label)]


async def launch_many(conn_id: str, commands: dict[str, str]) -> dict[str, str]:
    """Launch job id -> command over one connection; return job id -> job dir."""
    hook = SSHAsyncJobHook(conn_id)
    async with remote_host(await hook.aget_options()) as host:
        launched = await asyncio.gather(*(hook.alaunch(j, c, host=host) for j, c in commands.items()))
    return {j.job_id: j.job_dir for j in launched}


async def watch(conn_id: str, jobs: dict[str, str], poll: float, **kw: Any) -> dict[str, asyncio.Task[Any]]:
    """One trigger per job, each run as the triggerer runs it; job id -> task
    that ends with (event payload, seconds from start to event)."""
    started = time.monotonic()

    async def one(job_id: str, job_dir: str) -> tuple[dict[str, Any], float]:
        trigger = SSHAsyncJobTrigger(conn_id, job_id, job_dir=job_dir, poll_interval=poll, **kw)
        event = await anext(trigger.run())
        return event.payload, time.monotonic() - started

    return {j: asyncio.create_task(one(j, d)) for j, d in jobs.items()}


def cleanup(conn_id: str, job_dirs: list[str]) -> None:
    hook = SSHAsyncJobHook(conn_id)
    for d in job_dirs:
        hook.cancel(d, grace=1)


@pytest.fixture
def second_sshd() -> Iterator[SSHServer]:
    server = start_server()
    server.set_connection("scale_b", USER, conn_timeout=5)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def job_dirs_of(args: list[str]) -> list[str]:
    """The job folders a status call asked about (after a --wait MAX GROW_AFTER KNOWN head)."""
    return args[4:] if args[:1] in (["--wait"], ["--wait-parts"]) else args


@pytest.mark.parametrize("wait_on_host", [True, False], ids=["wait", "no-wait"])
def test_fifty_triggers_share_one_connection_and_one_status_call_per_tick(
    sshd, job_id, monkeypatch, wait_on_host
) -> None:
    conn = f"scale_{wait_on_host}"
    sshd.set_connection(conn, USER, wait_on_host=wait_on_host)
    commands = {f"{job_id}-{i}": f"echo start {i}; sleep {3 + i % 3}; echo end {i}; exit {i % 4}" for i in range(50)}
    jobs = asyncio.run(launch_many(conn, commands))
    calls = Calls(monkeypatch)
    parts: list[int] = []  # the jobs in each part a waiting call reported
    real_feed = StatusParts.feed

    def feed(self: StatusParts, data: bytes) -> list[Any]:
        done = real_feed(self, data)
        parts.extend(len(r.jobs) for r in done)
        return done

    monkeypatch.setattr(StatusParts, "feed", feed)

    async def scenario() -> dict[str, tuple[dict[str, Any], float]]:
        tasks = await watch(conn, jobs, poll=1.0)
        # The connection opens with the first call: within 10 s on a loaded
        # machine (0.5 s was once not enough), and never a second one.
        deadline = time.monotonic() + 10
        while client.open_connections() == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert client.open_connections() == 1
        events = {j: await t for j, t in tasks.items()}
        assert client.open_connections() == 0, "the last watcher to leave closes the connection"
        return events

    events = asyncio.run(scenario())
    assert len(calls.connects) == 1, calls.connects
    for j, (event, _) in events.items():
        n = int(j.rsplit("-", 1)[1])
        result = event["result"]
        assert event["status"] == "finished", event
        assert result["exit_code"] == n % 4
        assert result["stdout_tail"] == f"start {n}\nend {n}\n"
    statuses = calls.of("status")
    # Without a wait, watchers align to the wall clock: one status call per
    # 1 s tick, each for all the jobs still watched (never two calls within
    # one tick). The first poll is made at once, wherever in the second the
    # watchers start, so only the gaps after it are whole ticks. With the
    # wait, a call returns when jobs end (or output grew): calls are still
    # at least MIN_GAP (0.5 s) apart: at this 1 s interval, with ends every
    # half second, about as many as polling makes (docs/benchmarks.md has
    # the figures at the default interval).
    gaps = [b[0] - a[0] for a, b in zip(statuses, statuses[1:], strict=False)]
    assert all(g > (0.45 if wait_on_host else 0.5) for g in gaps[1:]), gaps
    assert len(statuses) <= (11 if wait_on_host else 8), [len(s[3]) for s in statuses]
    # Waiting calls report each end as it comes (--wait-parts) and wait on.
    assert all(bool(s[3][:1] == ["--wait-parts"]) is wait_on_host for s in statuses[1:]), statuses
    assert max(len(job_dirs_of(s[3])) for s in statuses) == 50
    # Output is read only when it grew: each job prints twice, so far fewer
    # reads than polls, and every read is one call for all jobs that grew.
    # With the wait, ends come as parts of a call that goes on, and the
    # jobs of each part read their last output together: one read a part.
    reads = calls.of("output")
    assert len(reads) <= len(statuses) + len(parts) + 1, (len(reads), len(statuses), parts)
    assert bool(parts) is wait_on_host and sum(parts) <= 50


def test_a_dead_host_does_not_delay_the_others(sshd, second_sshd, job_id, monkeypatch) -> None:
    """Host B's sshd stops while its jobs run: A's triggers deliver on time;
    B's keep retrying until B is back, then deliver too."""
    a, b = f"test_{USER}", "scale_b"
    # B's jobs end only once B is back, however long their launch and the outage took.
    release = home(USER) / f"release-{job_id}"
    jobs_a = asyncio.run(launch_many(a, {f"{job_id}-a{i}": "sleep 4; echo a" for i in range(5)}))
    jobs_b = asyncio.run(launch_many(b, {f"{job_id}-b{i}": f"{wait_for_release(release)}; echo b" for i in range(5)}))
    calls = Calls(monkeypatch)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], float]:
        tasks_a = await watch(a, jobs_a, poll=1.0)
        tasks_b = await watch(b, jobs_b, poll=1.0, connection_patience=120)
        await asyncio.sleep(1.5)
        second_sshd.stop()  # an outage: the listener and our session die
        down = time.monotonic()
        events_a = {j: await t for j, t in tasks_a.items()}
        await asyncio.sleep(2)
        assert not any(t.done() for t in tasks_b.values()), "B's jobs cannot be seen while B is down"
        second_sshd.start()
        release.touch()
        events_b = {j: await asyncio.wait_for(t, 90) for j, t in tasks_b.items()}
        return events_a, events_b, down

    try:
        events_a, events_b, _ = asyncio.run(scenario())
    finally:
        release.touch()  # no job of B's is left waiting, whatever failed
    release.unlink()
    for event, took in events_a.values():
        assert event["status"] == "finished" and event["result"]["state"] == "succeeded", event
        assert took < 7.5, f"A's event came {took:.1f}s after the start: B's outage delayed it"
    for event, _ in events_b.values():
        assert event["status"] == "finished" and event["result"]["stdout_tail"] == "b\n", event
    labels = {label for _, label in calls.connects}
    assert len([c for c in calls.connects if "127.0.0.1:" + str(sshd.port) in c[1]]) == 1, calls.connects
    assert len(labels) == 2


def test_the_connection_is_opened_again_after_a_drop(sshd, second_sshd, job_id, monkeypatch) -> None:
    conn = "scale_b"
    jobs = asyncio.run(launch_many(conn, {f"{job_id}-r{i}": "sleep 3; echo done" for i in range(3)}))
    calls = Calls(monkeypatch)

    async def scenario() -> dict[str, Any]:
        tasks = await watch(conn, jobs, poll=0.5)
        await asyncio.sleep(1.2)
        # Kill the server side of our connection, keep the listener: a drop.
        second_sshd.stop()
        second_sshd.start()
        return {j: await asyncio.wait_for(t, 60) for j, t in tasks.items()}

    events = asyncio.run(scenario())
    for event, _ in events.values():
        assert event["status"] == "finished" and event["result"]["state"] == "succeeded", event
        assert event["result"]["stdout_tail"] == "done\n"
    assert len(calls.connects) == 2, calls.connects
