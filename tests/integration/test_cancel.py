"""Cancel and cleanup at their corner cases, against the real sshd (and dag.test() for cleanup).

What a user's mark-failed does when the task's state cannot be read, when
grace is long, when the job is still starting; what cleanup="always" does
with a job that is lost but still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_ssh_async import SSHAsyncJobTrigger, triggers
from airflow_ssh_async.client import open_connection, remote_command, script
from airflow_ssh_async.hooks import SSHAsyncJobHook
from airflow_ssh_async.job import JobState, launch_payload, parse_frames
from tests.harness.logs import ListLog
from tests.harness.procs import live_group_members
from tests.harness.sshd import home
from tests.integration.test_operator import run_dag, ti_of, xcom

USER = "asyncdash"
SHELL_USERS = ("asyncdash", "asyncbash", "asyncash")


def wait_for_file(path: Path, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {limit} s"
        time.sleep(0.05)


def wait_for_state(hook: SSHAsyncJobHook, job_dir: str, state: JobState, limit: float = 30) -> JobState:
    deadline = time.monotonic() + limit
    while True:
        now = hook.status([job_dir])[job_dir][0].state
        if now is state or time.monotonic() > deadline:
            return now
        time.sleep(0.3)


def wait_until_reaped(pid: int, limit: float = 30) -> None:
    """Until PID is gone, not even a zombie (whoever adopted it reaps it, maybe a moment later)."""
    deadline = time.monotonic() + limit
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"process {pid} was not reaped within {limit} s"
        time.sleep(0.1)


def kill_group(pgid: int) -> None:
    """End a job group this test started (never anyone else's)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


class TriggerLog(ListLog):
    error = ListLog.info


def quiet_trigger(job_id: str, job_dir: str, **kwargs: Any) -> tuple[SSHAsyncJobTrigger, TriggerLog]:
    trigger = SSHAsyncJobTrigger(f"test_{USER}", job_id, job_dir=job_dir, poll_interval=60, **kwargs)
    log = TriggerLog()
    trigger._log = log  # type: ignore[assignment]
    return trigger, log


@pytest.mark.timeout(120)
def test_on_kill_cancels_when_the_task_state_read_times_out(sshd, job_id, monkeypatch) -> None:
    """The triggerer's comms hang: the state is unknown, so kill_on_cancel is honoured."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    hook = SSHAsyncJobHook(f"test_{USER}")
    launched = hook.launch(job_id, "sleep 100")
    wait_for_file(Path(launched.job_dir) / "job.json")

    def hanging_state_read(**_: Any) -> dict[str, Any]:
        time.sleep(4)  # comms that answer only long after the bound below
        return {}

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(hanging_state_read))
    monkeypatch.setattr(triggers, "STATE_READ_TIMEOUT", 1.0, raising=False)
    trigger, log = quiet_trigger(job_id, launched.job_dir, grace=2)
    trigger.task_instance = SimpleNamespace(dag_id="d", task_id="job", run_id="r", map_index=-1)
    try:
        asyncio.run(trigger.on_kill())
        assert any("treated as unknown, so kill_on_cancel is honoured" in line for line in log.lines), log.lines
        assert wait_for_state(hook, launched.job_dir, JobState.CANCELLED) is JobState.CANCELLED
        assert live_group_members(launched.pid) == []
    finally:
        kill_group(launched.pid)


@pytest.mark.timeout(150)
def test_on_kill_waits_out_a_grace_longer_than_the_old_25s_bound(sshd, job_id) -> None:
    """The supervisor is gone, so signal.sh itself waits grace before its SIGKILL: on_kill must wait too."""
    grace = 27  # above the fixed 25 s the cancel used to get
    hook = SSHAsyncJobHook(f"test_{USER}")
    launched = hook.launch(job_id, "trap '' TERM; sleep 300")
    wait_for_file(Path(launched.job_dir) / "job.json")
    os.kill(launched.supervisor_pid, signal.SIGKILL)  # e.g. the OOM killer took it
    wait_until_reaped(launched.supervisor_pid)
    trigger, log = quiet_trigger(job_id, launched.job_dir, grace=grace)
    try:
        started = time.monotonic()
        asyncio.run(trigger.on_kill())
        took = time.monotonic() - started
        assert f"cancel of job {job_id} in {launched.job_dir}: cancelled" in log.lines, log.lines
        assert took >= grace - 2, f"on_kill returned after {took:.1f} s, before the grace was over"
        assert live_group_members(launched.pid) == [], "the TERM-ignoring job outlived the cancel"
    finally:
        kill_group(launched.pid)


async def _launch_in_two_halves(user: str, job_id: str, command: str, cancel: Any) -> dict[str, bytes]:
    """A launch whose payload arrives in two parts, with CANCEL() awaited in between.

    Between the parts the job folder exists and job.json does not: the job
    is `starting`, exactly as right after a real launch call.
    """
    hook = SSHAsyncJobHook(f"test_{user}")
    payload = launch_payload(command, {}, "", script("lib") + b"\n" + script("supervise"))
    conn = await open_connection(hook.get_options())
    try:
        args = [hook.async_dir, job_id, "0", "2", "test-origin"]
        process = await conn.create_process(remote_command("launch", args), encoding=None)
        process.stdin.write(payload[: len(payload) // 2])
        await process.stdin.drain()
        await cancel()
        process.stdin.write(payload[len(payload) // 2 :])
        process.stdin.write_eof()
        report = await asyncio.wait_for(process.stdout.read(), 60)
        await process.wait(timeout=60)
        return dict(parse_frames(report))
    finally:
        conn.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("user", SHELL_USERS)
def test_cancel_of_a_job_still_starting_is_recorded_and_honoured_as_it_starts(sshd, job_id, user) -> None:
    hook = SSHAsyncJobHook(f"test_{user}")
    folder = home(user) / ".airflow_async" / job_id
    marker = home(user) / f"ran-{job_id}"
    outcomes: list[str] = []

    async def cancel_while_starting() -> None:
        deadline = time.monotonic() + 30
        while not folder.is_dir():
            assert time.monotonic() < deadline, "the launch never created the job folder"
            await asyncio.sleep(0.05)
        assert not (folder / "job.json").exists()
        outcomes.append(await hook.acancel(hook.job_dir(job_id), grace=2))

    report = asyncio.run(
        _launch_in_two_halves(user, job_id, f"echo started > {marker}; trap '' TERM; sleep 120", cancel_while_starting)
    )
    pid = int(report["pid"])
    try:
        assert outcomes == ["pending"]
        assert wait_for_state(hook, str(folder), JobState.CANCELLED) is JobState.CANCELLED
        assert live_group_members(pid) == [], "the job outlived a cancel recorded before it started"
    finally:
        kill_group(pid)
        marker.unlink(missing_ok=True)


@pytest.mark.timeout(180)
def test_cleanup_always_keeps_the_folder_of_a_lost_job_whose_process_runs(sshd, dag_bag, job_id, capfd) -> None:
    # The job kills its own supervisor (its parent) and runs on: lost, yet alive.
    command = "kill -9 $PPID; echo orphan; sleep 120"
    dag_run = run_dag(dag_bag, "ssh_async_cleanup_always", job_id=job_id, command=command)
    out = capfd.readouterr().out
    result = xcom(dag_run, key="result")
    try:
        assert ti_of(dag_run).state == "failed" and result["state"] == "lost"
        assert Path(result["job_dir"], "job.json").exists(), "cleanup removed the folder of a job that still runs"
        assert live_group_members(result["pid"], limit=0), "the job should still run"
        assert f"cleanup=always: left {result['job_dir']} in place" in out
    finally:
        kill_group(result["pid"])


@pytest.mark.timeout(180)
def test_cleanup_always_still_removes_a_finished_jobs_folder(sshd, dag_bag, job_id) -> None:
    dag_run = run_dag(dag_bag, "ssh_async_cleanup_always", job_id=job_id, command="exit 4")
    assert ti_of(dag_run).state == "failed"
    assert not (home(USER) / ".airflow_async" / job_id).exists()
