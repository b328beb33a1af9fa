"""Scale and streaming without cliffs, against the real sshd (issue: no cliffs).

Batches longer than the kernel lets one argument be, chatty jobs watched
together, progress bars and endless lines, rewritten files, and a watcher
that starts again (a triggerer restart) continuing its log.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_ssh_async.client import remote_host
from airflow_ssh_async.hooks import SSHAsyncJobHook
from airflow_ssh_async.job import JobRef, JobState
from airflow_ssh_async.streams import MAX_LINE
from airflow_ssh_async.watch import watch_job
from tests.harness.logs import ListLog
from tests.harness.sshd import SSHServer, home, run_as

pytestmark = pytest.mark.timeout(240)

USER = "asyncdash"
CONN = f"test_{USER}"


def long_async_dir(tag: str) -> str:
    """An async_dir of about 200 characters, as deep project trees make."""
    return f"~/{tag}-{uuid.uuid4().hex[:8]}/" + "/".join(["nightly_partition_rebuild_area"] * 6)


def derived_id(i: int) -> str:
    """An id as long as the operator derives for a scheduled run (about 100)."""
    return f"warehouse_nightly_rebuild-nightly_partition_rebuild_{i:04d}-scheduled__2026-12-01T02_00-{i:012x}"


def chatty(lines: int, go: str = "") -> str:
    """A job that prints a line a moment to stdout, stderr and progress
    (once the file GO exists, if given; at most 5 minutes later, so that a
    test that failed before making GO leaves no job waiting for ever)."""
    wait = f"n=0; while [ ! -e {go} ] && [ $n -lt 3000 ]; do n=$((n+1)); sleep 0.1; done; " if go else ""
    return wait + (
        f'i=0; while [ $i -lt {lines} ]; do i=$((i+1)); echo "out $i"; echo "err $i" >&2; '
        f'echo "step $i" >>"$AIRFLOW_ASYNC_PROGRESS"; sleep 0.2; done'
    )


def test_a_batch_past_the_argument_limit_is_one_status_and_output_read(sshd: SSHServer) -> None:
    async_dir = long_async_dir("batch")
    hook = SSHAsyncJobHook(CONN, async_dir=async_dir)
    real = {derived_id(i): hook.job_dir(derived_id(i)) for i in range(20)}
    # 900 more folders beside the real jobs: 1,100 x 300 characters of
    # folder names, far past the 128 KiB one argument may be.
    base = async_dir.replace("~", str(home(USER)), 1)
    run_as(USER, f"mkdir -p '{base}' && cd '{base}' && for i in $(seq 20 919); do mkdir x$i-{'p' * 200}; done")
    others = [f"{async_dir}/x{i}-{'p' * 200}" for i in range(20, 920)]

    async def go() -> tuple[dict[str, Any], list[Any]]:
        async with remote_host(await hook.aget_options()) as host:
            for job_id in real:
                await hook.alaunch(job_id, "echo hello; echo oops >&2", host=host)
            await asyncio.sleep(1.5)
            states = await hook.astatus_each([*real.values(), *others], host=host)
            reads = [(d, s, 0) for d in [*real.values(), *others] for s in ("stdout", "stderr")]
            chunks = await hook.aread(reads, host=host)
            return states, chunks

    states, chunks = asyncio.run(go())
    assert sum(len(d) for d in [*real.values(), *others]) > 2 * 128 * 1024
    assert {states[d][0].state for d in real.values()} == {JobState.SUCCEEDED}
    assert {states[d][0].state for d in others} == {JobState.STARTING}  # folders without job.json
    assert [c.data for c in chunks[: 2 * len(real)]] == [b"hello\n", b"oops\n"] * len(real)
    assert all(c.data == b"" and not c.missing for c in chunks[2 * len(real) :])


def test_chatty_jobs_with_long_ids_watched_together_deliver_every_line_once(sshd: SSHServer) -> None:
    async_dir = long_async_dir("chatty")
    hook = SSHAsyncJobHook(CONN, async_dir=async_dir)
    ids = [derived_id(i) for i in range(30)]
    logs = {j: ListLog() for j in ids}

    async def go() -> list[dict[str, Any]]:
        async with remote_host(await hook.aget_options()) as host:
            launched = [await hook.alaunch(j, chatty(10), host=host) for j in ids]
        return await asyncio.gather(
            *(
                watch_job(hook, JobRef(CONN, j.job_id, j.job_dir), log=logs[j.job_id], poll_interval=1, log_key="k1")
                for j in launched
            )
        )

    events = asyncio.run(go())
    assert [e["status"] for e in events] == ["finished"] * len(ids), events[0]
    for job_id in ids:
        lines = collections.Counter(logs[job_id].lines)
        for i in range(1, 11):
            for want in (f"out {i}", f"err {i}", f"progress: step {i}"):
                assert lines[want] == 1, (job_id, want, logs[job_id].lines)


def test_progress_bars_and_endless_lines_are_logged_in_bounded_pieces(sshd: SSHServer) -> None:
    # 3 MB of carriage-return updates without a newline, then 300 KB on one
    # line, then the end: as rsync, curl or tqdm print.
    hook = SSHAsyncJobHook(CONN)
    job_id = f"bars-{uuid.uuid4().hex[:8]}"
    command = (
        "i=0; while [ $i -lt 30000 ]; do printf '%s\\r' \"$(printf '%095d' $i)\"; i=$((i+1)); done; "
        "head -c 300000 /dev/zero | tr '\\0' y; echo; echo END"
    )
    launched = hook.launch(job_id, command)
    log = ListLog()
    event = asyncio.run(watch_job(hook, JobRef(CONN, job_id, launched.job_dir), log=log, poll_interval=0.5))
    assert event["status"] == "finished" and event["result"]["state"] == "succeeded", event
    assert max(len(line) for line in log.lines) <= MAX_LINE
    updates = [line for line in log.lines if len(line) == 95]
    assert updates == [f"{i:095d}" for i in range(30000)]
    assert "".join(line for line in log.lines if set(line) == {"y"}) == "y" * 300000
    assert log.lines[-1] == "END"


def test_a_progress_file_rewritten_by_the_job_is_followed_from_its_new_start(sshd: SSHServer) -> None:
    hook = SSHAsyncJobHook(CONN)
    job_id = f"rewrite-{uuid.uuid4().hex[:8]}"
    command = (
        'for i in 1 2 3 4 5 6 7 8; do echo "a long first progress line number $i" >>"$AIRFLOW_ASYNC_PROGRESS"; done; '
        'sleep 1.5; echo "50%" >"$AIRFLOW_ASYNC_PROGRESS"; sleep 1.5; echo done'
    )
    launched = hook.launch(job_id, command)
    log = ListLog()
    event = asyncio.run(watch_job(hook, JobRef(CONN, job_id, launched.job_dir), log=log, poll_interval=0.5))
    assert event["status"] == "finished" and event["result"]["state"] == "succeeded", event
    assert "progress: 50%" in log.lines and "done" in log.lines
    assert event["result"]["progress"] == "50%"
    assert any("the job rewrote it" in line for line in log.lines)


def test_a_watcher_started_again_continues_its_log_with_no_line_twice(sshd: SSHServer) -> None:
    hook = SSHAsyncJobHook(CONN)
    job_id = f"again-{uuid.uuid4().hex[:8]}"
    launched = hook.launch(job_id, chatty(25) + "; printf 'no newline at the end'")
    ref = JobRef(CONN, job_id, launched.job_dir)
    first, second = ListLog(), ListLog()

    async def go() -> dict[str, Any]:
        # The first watcher dies mid-line as a killed triggerer does; the
        # second one, of the same try (log key), takes over.
        task = asyncio.create_task(watch_job(hook, ref, log=first, poll_interval=0.5, log_key="try1"))
        await asyncio.sleep(3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return await watch_job(hook, ref, log=second, poll_interval=0.5, log_key="try1")

    event = asyncio.run(go())
    assert event["result"]["state"] == "succeeded", event
    assert any(line.startswith("out ") for line in first.lines), first.lines
    both = [line for line in first.lines + second.lines if not line.startswith("continuing")]
    want = [f"out {i}" for i in range(1, 26)] + ["no newline at the end"]
    assert [line for line in both if line.startswith(("out ", "no newline"))] == want
    assert [line for line in both if line.startswith("err ")] == [f"err {i}" for i in range(1, 26)]
    assert any(line.startswith("continuing this try's log") for line in second.lines)
    # The result's tails hold the whole end of the output, not only what the
    # second watcher logged.
    assert event["result"]["stdout_tail"].endswith("out 25\nno newline at the end")
    # A new try (another log key) streams the job's output from the start.
    third = ListLog()
    asyncio.run(watch_job(hook, ref, log=third, poll_interval=0.5, log_key="try2"))
    assert [line for line in third.lines if line.startswith("out ")] == [f"out {i}" for i in range(1, 26)]


# A watcher in its own process, logging each line to a file as it goes. After
# it has logged KILL_AFTER stdout lines, the next output reply that brings
# data kills it with SIGKILL: the host has recorded that read, and none of its
# lines reached the log.
KILLED_WATCHER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from airflow_ssh_async import batching
    from airflow_ssh_async.hooks import SSHAsyncJobHook
    from airflow_ssh_async.job import JobRef
    from airflow_ssh_async.watch import watch_job

    conn, job_id, job_dir, key, out, kill_after, go = sys.argv[1:8]
    open(go, "w").close()  # the job starts printing now that this watcher is ready
    log_file = open(out, "a", buffering=1)
    logged = {"stdout": 0}

    class FileLog:
        def info(self, fmt, *args):
            line = fmt % args
            logged["stdout"] += line.startswith("out ")
            log_file.write(line + "\\n")

        warning = debug = info

    real = batching.HostBatcher._fetch_output

    async def fetch_output(self, requests):
        chunks = await real(self, requests)
        if logged["stdout"] >= int(kill_after) and any(c.data for c in chunks.values()):
            os.kill(os.getpid(), signal.SIGKILL)
        return chunks

    batching.HostBatcher._fetch_output = fetch_output
    hook = SSHAsyncJobHook(conn)
    asyncio.run(watch_job(hook, JobRef(conn, job_id, job_dir), log=FileLog(), poll_interval=0.3, log_key=key))
    """
)


def exactly_once(lines: list[str], count: int) -> None:
    got = collections.Counter(lines)
    for i in range(1, count + 1):
        for want in (f"out {i}", f"err {i}", f"progress: step {i}"):
            assert got[want] == 1, (want, got[want], lines)


def test_a_watcher_killed_between_a_read_and_its_log_loses_no_line(sshd: SSHServer, tmp_path: Path) -> None:
    # A triggerer killed (SIGKILL) after the host recorded a read and before
    # that read's lines reached the log: the next watcher of the try logs them.
    hook = SSHAsyncJobHook(CONN)
    job_id = f"killed-{uuid.uuid4().hex[:8]}"
    go = f"/tmp/go-{job_id}"  # where the job's user can see it
    launched = hook.launch(job_id, chatty(25, go))
    out = tmp_path / "first.log"
    script = tmp_path / "watcher.py"
    script.write_text(KILLED_WATCHER)
    first = subprocess.run(
        [sys.executable, str(script), CONN, job_id, launched.job_dir, "try1", str(out), "4", go],
        timeout=120,
        capture_output=True,
        text=True,
    )
    Path(go).unlink(missing_ok=True)
    assert first.returncode == -signal.SIGKILL, (first.returncode, first.stderr[-3000:])
    before = out.read_text().splitlines()
    assert any(line.startswith("out ") for line in before), before
    assert "out 25" not in before  # killed mid-job, so the second watcher has work
    second = ListLog()
    event = asyncio.run(
        watch_job(hook, JobRef(CONN, job_id, launched.job_dir), log=second, poll_interval=0.3, log_key="try1")
    )
    assert event["result"]["state"] == "succeeded", event
    assert any(line.startswith("continuing this try's log") for line in second.lines), second.lines
    exactly_once(before + second.lines, 25)


def test_a_watcher_cancelled_while_it_logs_a_read_repeats_no_line(sshd: SSHServer) -> None:
    # Cancelled (a triggerer stopping) in the middle of logging a read: it
    # tells the host how far its log got before it goes.
    hook = SSHAsyncJobHook(CONN)
    job_id = f"cancelled-{uuid.uuid4().hex[:8]}"
    gate = Path(f"/tmp/go-{job_id}")
    launched = hook.launch(job_id, chatty(25, str(gate)))
    ref = JobRef(CONN, job_id, launched.job_dir)

    class CancellingLog(ListLog):
        task: asyncio.Task[Any] | None = None

        def info(self, fmt: str, *args: Any) -> None:
            super().info(fmt, *args)
            if self.lines[-1] == "out 6" and self.task is not None:
                self.task.cancel()

        warning = debug = info

    first, second = CancellingLog(), ListLog()

    async def go() -> dict[str, Any]:
        task = first.task = asyncio.create_task(watch_job(hook, ref, log=first, poll_interval=0.3, log_key="try1"))
        gate.touch()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        return await watch_job(hook, ref, log=second, poll_interval=0.3, log_key="try1")

    try:
        event = asyncio.run(go())
    finally:
        gate.unlink(missing_ok=True)
    assert event["result"]["state"] == "succeeded", event
    assert "out 6" in first.lines and "out 25" not in first.lines
    exactly_once(first.lines + second.lines, 25)


def test_a_batch_of_reads_is_answered_within_the_reply_budget(sshd: SSHServer) -> None:
    from airflow_ssh_async import hooks

    hook = SSHAsyncJobHook(CONN)
    ids = [f"big-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    dirs = []
    for job_id in ids:
        dirs.append(hook.launch(job_id, "head -c 3000000 /dev/zero | tr '\\0' z").job_dir)
    time.sleep(2)
    reads = [hooks.ReadRequest(d, "stdout", 0) for d in dirs]
    calls = hooks.share_budget(reads, budget=1_000_000)
    assert [[r.max_bytes for r in call] for call in calls] == [[333_333] * 3]
    chunks = hook.read(reads)
    # Three 3 MB backlogs in one call of an 8 MiB budget: a third each.
    assert [len(c.data) for c in chunks] == [hooks.REPLY_BUDGET // 3] * 3
