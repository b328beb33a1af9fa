"""The reliability scenarios of issue #4, through a real Airflow and a real sshd.

Every test drives Airflow through its REST API (trigger, mark failed, clear),
reads task states and task logs through that API, and checks the host itself
(/proc, the job folders) for what ran. See docs/reliability.md.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import time
import warnings
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
import sqlalchemy

from tests.e2e.conftest import RemoteJobs, job_processes
from tests.e2e.dags.ssh_async_e2e import (
    DAGRUN_TIMEOUT_S,
    EXEC_CLEAR_TIMEOUT_S,
    EXEC_GRACE_S,
    EXEC_TIMEOUT_S,
    JOB_LIMIT_S,
    TIME_LIMIT_S,
    WORKER_KILL_EXEC_TIMEOUT_S,
)
from tests.harness.airflow_stack import AirflowStack, AirflowStackError, wait_until
from tests.harness.procs import live_group_members
from tests.harness.sshd import SSHServer

pytestmark = pytest.mark.e2e

JOB_DAG = "e2e_job"


# --- helpers ------------------------------------------------------------------------


def log_entries(af: AirflowStack, dag_id: str, run_id: str, task_id: str = "job", try_number: int = 1) -> list[dict]:
    """A try's log as the API serves it: structured entries (event, timestamp, level, ...)."""
    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
    body = af.request("GET", path, params={"full_content": "true"}, headers={"Accept": "application/json"})
    return [e if isinstance(e, dict) else {"event": e} for e in body.get("content", [])]


def log_text(af: AirflowStack, dag_id: str, run_id: str, task_id: str = "job", try_number: int = 1) -> str:
    return af.task_log(dag_id, run_id, task_id, try_number=try_number)


def stamp(entry: dict) -> float:
    return datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()


def first_entry(entries: list[dict], pattern: str) -> dict:
    for e in entries:
        if re.search(pattern, str(e.get("event", ""))):
            return e
    raise AssertionError(f"no log entry matches {pattern!r}; events: {[e.get('event') for e in entries][-40:]}")


def wait_for_log(af: AirflowStack, dag_id: str, run_id: str, pattern: str, timeout: float = 30, **kw: Any) -> str:
    """The try's log once it matches PATTERN.

    Also used after a run has ended: the API may mark the run done a moment
    before the try's last lines reach the log file it serves.
    """
    seen = [""]

    def probe() -> str | None:
        seen[0] = log_text(af, dag_id, run_id, **kw)
        return seen[0] if re.search(pattern, seen[0]) else None

    try:
        return wait_until(probe, timeout, f"{pattern!r} in the task log of {dag_id}/{run_id}", check=af.check_alive)
    except AirflowStackError as e:
        raise AssertionError(f"{e}; the log ends:\n{seen[0][-3000:]}") from None


def held_job(jobs: RemoteJobs, job_id: str, *lines: str) -> str:
    """A job that notes each start, prints LINES, then waits for its release file."""
    starts, release = jobs.file("starts", job_id), jobs.file("release", job_id)
    prints = "".join(f"echo '{line}'; " for line in lines)
    return f'echo "$$" >> {starts}; {prints}while [ ! -e {release} ]; do sleep 0.2; done; echo finished'


def release(jobs: RemoteJobs, job_id: str) -> None:
    path = jobs.file("release", job_id)
    path.write_text("go\n")
    os.chown(path, jobs.home.stat().st_uid, jobs.home.stat().st_gid)


def starts(jobs: RemoteJobs, job_id: str) -> int:
    path = jobs.file("starts", job_id)
    return len(path.read_text().splitlines()) if path.exists() else 0


def job_json(jobs: RemoteJobs, job_id: str) -> dict[str, Any]:
    return json.loads((jobs.dir(job_id) / "job.json").read_text())


def result_json(jobs: RemoteJobs, job_id: str) -> dict[str, Any] | None:
    path = jobs.dir(job_id) / "result.json"
    return json.loads(path.read_text()) if path.exists() else None


def wait_running(jobs: RemoteJobs, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """job.json written and the job's process alive on the host."""

    def probe() -> dict[str, Any] | None:
        path = jobs.dir(job_id) / "job.json"
        if not path.exists():
            return None
        info = json.loads(path.read_text())
        return info if os.path.exists(f"/proc/{info['pid']}") else None

    return wait_until(probe, timeout, f"job {job_id} to run on the host", interval=0.1)


def defer_and_hold(af: AirflowStack, dag_id: str, run_id: str, task_id: str = "job") -> dict[str, Any]:
    """Wait until the task is deferred, a triggerer holds it and no worker does."""
    ti = af.wait_for_task_state(dag_id, run_id, task_id, "deferred", timeout=60)
    af.wait_for_trigger_holder(dag_id, run_id, task_id, timeout=30)
    af.wait_for_no_worker(ti["id"], timeout=20)
    return ti


# Airflow 3.3's scheduler can fail a deferred task whose trigger fired before it
# processed the executor's "success" for the defer exit (apache/airflow#66374,
# #72716); seen here only with the machine saturated. Say so, not "no result".
STALE_DEFER_EXIT = "finished with state success, but the task instance's state attribute is"


class StaleDeferExit(AssertionError):
    """Airflow's scheduler, not the job, decided the run (see STALE_DEFER_EXIT)."""


def rerun_on_stale_defer_exit(test: Callable[..., None]) -> Callable[..., None]:
    """Run a scenario once more when that Airflow race decided it; every other failure stands.

    For the scenarios whose trigger fires within seconds of the deferral,
    which a starved scheduler can lose to the race (docs/reliability.md).
    """

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            test(*args, **kwargs)
        except StaleDeferExit as race:
            warnings.warn(f"{test.__name__} runs again: {race}", stacklevel=1)
            kwargs["metrics"]["reran_after_airflow_race"] = True  # shown in the suite's metrics report
            test(*args, **kwargs)

    return run


def clear_and_wait_for_second_try(dag_id: str, run_id: str, af: AirflowStack) -> None:
    """Clear the running task, as the UI does, and wait until its second try has deferred."""
    af.clear_tasks(dag_id, run_id, ["job"])
    wait_until(
        lambda: (ti := af.task_instance(dag_id, run_id, "job"))["try_number"] == 2 and ti["state"] == "deferred",
        60,
        "the cleared task's second try to defer",
        check=af.check_alive,
    )


def finish(af: AirflowStack, dag_id: str, run_id: str, expected: str, timeout: float = 90) -> None:
    state = af.wait_for_dag_run(dag_id, run_id, timeout=timeout)
    stale = [line for line in af.component_log("scheduler").splitlines() if STALE_DEFER_EXIT in line and run_id in line]
    if stale:
        raise StaleDeferExit(f"Airflow's scheduler failed {run_id} on a stale executor event:\n{stale[0]}")
    assert state == expected, f"run {run_id} ended {state}, expected {expected}\n{af.diagnostics(30)}"


def status_of(sshd: SSHServer, job_dir: str) -> str:
    """The job's state as the hook reads it over SSH (what `airflow-ssh-async` shows)."""
    from airflow_ssh_async.hooks import SSHAsyncJobHook

    return SSHAsyncJobHook("test_asyncdash").status([job_dir])[job_dir][0].state.value


# --- scenarios ------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_01_happy_path_defers_streams_and_returns_result(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, metrics: dict
) -> None:
    af, jobs = airflow_stack, remote_jobs
    job_id = jobs.new("happy")
    run_id = af.trigger_dag(JOB_DAG, conf={"job_id": job_id, "command": held_job(jobs, job_id, "line one", "line two")})

    ti = defer_and_hold(af, JOB_DAG, run_id)
    assert not af.busy_workers(), f"a worker holds a task while only a deferred one exists: {af.busy_workers()}"
    # The job's output reaches the log served by the API while the job still runs.
    text = wait_for_log(af, JOB_DAG, run_id, r"line two", timeout=30)
    assert "line one" in text
    metrics["output_in_api_log_after_launch_s"] = round(time.time() - job_json(jobs, job_id)["start_time"], 1)
    assert result_json(jobs, job_id) is None and job_processes(job_id), "the job should still be running"
    assert af.task_instance(JOB_DAG, run_id, "job")["state"] == "deferred"
    assert not af.has_worker(ti["id"])

    release(jobs, job_id)
    finish(af, JOB_DAG, run_id, "success")
    result = af.xcom(JOB_DAG, run_id, "job")
    assert result["job_id"] == job_id and result["state"] == "succeeded" and result["exit_code"] == 0
    assert result["stdout_tail"] == "line one\nline two\nfinished\n"
    assert starts(jobs, job_id) == 1
    assert job_processes(job_id) == []


@pytest.mark.timeout(240)
def test_02_triggerer_sigkill_then_restart_completes_and_job_ran_once(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, metrics: dict
) -> None:
    af, jobs = airflow_stack, remote_jobs
    job_id = jobs.new("trigkill")
    run_id = af.trigger_dag(JOB_DAG, conf={"job_id": job_id, "command": held_job(jobs, job_id, "before the crash")})
    defer_and_hold(af, JOB_DAG, run_id)
    wait_for_log(af, JOB_DAG, run_id, r"before the crash")
    info = job_json(jobs, job_id)
    assert af.trigger_holder(JOB_DAG, run_id, "job"), "a triggerer holds the trigger before the crash"

    for triggerer in af.triggerers:  # the holder, and any other: none is left to take over
        af.kill_triggerer(triggerer.name, sig=signal.SIGKILL)
    assert not af.triggerers, "no triggerer should be left running"
    time.sleep(3)  # a dead triggerer must not have touched the job
    assert os.path.exists(f"/proc/{info['pid']}") and result_json(jobs, job_id) is None, "the job was stopped"
    assert af.task_instance(JOB_DAG, run_id, "job")["state"] == "deferred"

    killed = time.monotonic()
    fresh = af.start_triggerer()
    wait_until(
        lambda: af.trigger_holder(JOB_DAG, run_id, "job") == fresh.name,
        60,
        f"{fresh.name} to take over the trigger",
        check=af.check_alive,
    )
    metrics["kill_to_new_holder_s"] = round(time.monotonic() - killed, 1)
    release(jobs, job_id)
    finish(af, JOB_DAG, run_id, "success")
    result = af.xcom(JOB_DAG, run_id, "job")
    assert result["pid"] == info["pid"] and result["state"] == "succeeded"
    assert starts(jobs, job_id) == 1, "the job ran more than once"
    assert not (jobs.async_dir / ".archive" / job_id).exists()


@pytest.mark.timeout(240)
def test_03_two_triggerers_one_killed_the_other_takes_over(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, metrics: dict
) -> None:
    af, jobs = airflow_stack, remote_jobs
    while len(af.triggerers) < 2:
        af.start_triggerer()
    job_id = jobs.new("failover")
    run_id = af.trigger_dag(JOB_DAG, conf={"job_id": job_id, "command": held_job(jobs, job_id, "watched")})
    defer_and_hold(af, JOB_DAG, run_id)
    wait_for_log(af, JOB_DAG, run_id, r"watched")
    holder = af.trigger_holder(JOB_DAG, run_id, "job")
    [survivor] = [t.name for t in af.triggerers if t.name != holder]

    af.kill_triggerer(holder, sig=signal.SIGKILL)
    killed = time.monotonic()
    wait_until(
        lambda: af.trigger_holder(JOB_DAG, run_id, "job") == survivor,
        60,
        f"{survivor} to take over the trigger of the killed {holder}",
        check=af.check_alive,
    )
    metrics["kill_to_takeover_s"] = round(time.monotonic() - killed, 1)
    assert job_processes(job_id) and result_json(jobs, job_id) is None
    release(jobs, job_id)
    finish(af, JOB_DAG, run_id, "success")
    assert af.xcom(JOB_DAG, run_id, "job")["state"] == "succeeded"
    assert starts(jobs, job_id) == 1


@pytest.mark.timeout(180)
def test_04_mark_failed_cancels_the_whole_process_group(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, sshd: SSHServer, metrics: dict
) -> None:
    af, jobs = airflow_stack, remote_jobs
    job_id = jobs.new("markfailed")
    command = f'echo "$$" >> {jobs.file("starts", job_id)}; sleep 300 & sleep 300 & echo children started; wait'
    run_id = af.trigger_dag(JOB_DAG, conf={"job_id": job_id, "command": command})
    defer_and_hold(af, JOB_DAG, run_id)
    wait_for_log(af, JOB_DAG, run_id, r"children started")
    pgid = job_json(jobs, job_id)["pgid"]
    assert len(live_group_members(pgid, limit=0)) >= 3, "the job and its two children should run"

    marked = time.monotonic()
    af.mark_failed(JOB_DAG, run_id, "job")
    # The triggerer notices its trigger is gone on its next loop; a loaded machine takes
    # longer than the ~3 s seen idle. The bound says "cancelled, not left to run".
    wait_until(lambda: not live_group_members(pgid, limit=0), 45, f"process group {pgid} to be gone", interval=0.1)
    gone_after = time.monotonic() - marked
    metrics["mark_failed_to_group_gone_s"] = round(gone_after, 1)
    assert gone_after < 45, f"the job's process group lived {gone_after:.1f}s after mark failed"
    wait_until(lambda: result_json(jobs, job_id), 10, "result.json of the cancelled job", interval=0.2)
    assert status_of(sshd, str(jobs.dir(job_id))) == "cancelled"
    assert job_processes(job_id) == [], "the supervisor or a job process is left"
    assert af.task_instance(JOB_DAG, run_id, "job")["state"] == "failed"


@pytest.mark.timeout(180)
@rerun_on_stale_defer_exit
def test_06_kill_9_of_the_job_fails_killed_within_two_polls(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, metrics: dict
) -> None:
    af, jobs, dag_id, poll = airflow_stack, remote_jobs, "e2e_watch_2s", 2.0
    job_id = jobs.new("kill9")
    command = f'echo "$$" >> {jobs.file("starts", job_id)}; echo started; sleep 120; echo never'
    run_id = af.trigger_dag(dag_id, conf={"job_id": job_id, "command": command})
    defer_and_hold(af, dag_id, run_id)
    wait_for_log(af, dag_id, run_id, r"started")
    pid = job_json(jobs, job_id)["pid"]

    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    finish(af, dag_id, run_id, "failed", timeout=60)
    failed_after = time.time() - killed_at

    entries = log_entries(af, dag_id, run_id)
    noticed = stamp(first_entry(entries, r"Trigger fired event")) - killed_at
    metrics.update(kill_to_event_s=round(noticed, 2), kill_to_task_failed_s=round(failed_after, 1), poll_s=poll)
    assert noticed <= 2 * poll, f"the trigger noticed the kill after {noticed:.1f}s (> 2 polls of {poll}s)"
    assert failed_after < 30, f"the task failed {failed_after:.0f}s after the kill: that is a timeout, not detection"
    wait_for_log(af, dag_id, run_id, re.escape("killed: killed by signal 9"))
    result = af.xcom(dag_id, run_id, "job", key="result")
    assert (result["state"], result["signal"], result["exit_code"]) == ("killed", 9, None)


@pytest.mark.timeout(180)
def test_07_sshd_outage_longer_than_a_poll_is_survived(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, sshd: SSHServer, metrics: dict
) -> None:
    af, jobs = airflow_stack, remote_jobs
    job_id = jobs.new("outage")
    run_id = af.trigger_dag(JOB_DAG, conf={"job_id": job_id, "command": held_job(jobs, job_id, "before outage")})
    defer_and_hold(af, JOB_DAG, run_id)
    wait_for_log(af, JOB_DAG, run_id, r"before outage")

    sshd.stop()
    try:
        time.sleep(4)  # four poll intervals without sshd
        assert job_processes(job_id) and result_json(jobs, job_id) is None, "the outage stopped the job"
        assert af.task_instance(JOB_DAG, run_id, "job")["state"] == "deferred"
    finally:
        sshd.start()
    release(jobs, job_id)
    finish(af, JOB_DAG, run_id, "success")
    text = wait_for_log(af, JOB_DAG, run_id, r"reached \S+ again; watching job")
    retries = re.findall(r"cannot poll job \S+ \(.*\); retrying in", text)
    metrics["logged_retries"] = len(retries)
    assert len(retries) >= 2, f"expected the retries in the log:\n{text[-4000:]}"
    assert af.xcom(JOB_DAG, run_id, "job")["stdout_tail"] == "before outage\nfinished\n"
    assert starts(jobs, job_id) == 1


@pytest.mark.timeout(180)
@rerun_on_stale_defer_exit
def test_08_job_timeout_fails_timed_out_and_leaves_no_process(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, metrics: dict
) -> None:
    af, jobs, dag_id = airflow_stack, remote_jobs, "e2e_timeout"
    job_id = jobs.new("timeout")
    # A child that dies on SIGTERM, and a shell and child that ignore it: SIGKILL must follow.
    command = "sleep 300 & trap '' TERM; echo waiting; sleep 300; wait"
    run_id = af.trigger_dag(dag_id, conf={"job_id": job_id, "command": command})
    info = wait_running(jobs, job_id)
    finish(af, dag_id, run_id, "failed", timeout=90)
    result = af.xcom(dag_id, run_id, "job", key="result")
    assert (result["state"], result["signal"]) == ("timed_out", 9), result
    metrics["job_duration_s"] = result["duration"]
    assert TIME_LIMIT_S <= result["duration"] <= TIME_LIMIT_S + 1 + 3, result
    wait_for_log(af, dag_id, run_id, re.escape(f"timed_out: time limit of {TIME_LIMIT_S} s reached"))
    assert live_group_members(info["pgid"]) == []
    deadline = time.monotonic() + 5  # the supervisor exits just after writing result.json
    while job_processes(job_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job_processes(job_id) == [], "a process of the timed-out job is left"


@pytest.mark.timeout(240)
@rerun_on_stale_defer_exit
def test_09_retry_after_a_failed_job_starts_a_fresh_attempt(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, metrics: dict
) -> None:
    af, jobs, dag_id = airflow_stack, remote_jobs, "e2e_retry"
    job_id = jobs.new("retry")
    tries = jobs.file("tries", job_id)
    command = f"if [ -e {tries} ]; then echo second try; else : > {tries}; echo first try; exit 3; fi"
    run_id = af.trigger_dag(dag_id, conf={"job_id": job_id, "command": command})
    finish(af, dag_id, run_id, "success", timeout=150)
    ti = af.task_instance(dag_id, run_id, "job")
    assert ti["try_number"] == 2, ti
    result = af.xcom(dag_id, run_id, "job")
    assert (result["state"], result["stdout_tail"]) == ("succeeded", "second try\n")
    first = jobs.async_dir / ".archive" / job_id / "1"
    assert json.loads((first / "result.json").read_text())["exit_code"] == 3, "the first attempt's files are kept"
    assert (first / "stdout").read_text() == "first try\n"
    wait_for_log(af, dag_id, run_id, re.escape("failed: exited with code 3"), try_number=1)
    archived = r"archived its folder to \S+/\.archive/\S+/1 and starting a new attempt"
    wait_for_log(af, dag_id, run_id, archived, try_number=2)


@pytest.mark.timeout(180)
@rerun_on_stale_defer_exit
def test_10_reboot_edited_boot_id_fails_lost_within_two_polls(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, metrics: dict
) -> None:
    af, jobs, dag_id, poll = airflow_stack, remote_jobs, "e2e_watch_2s", 2.0
    job_id = jobs.new("reboot")
    # The job rewrites the boot id recorded in its job.json as soon as the
    # supervisor has written it: to every later reader, the host rebooted.
    command = (
        'f="$AIRFLOW_ASYNC_JOB_DIR/job.json"; while [ ! -s "$f" ]; do sleep 0.02; done; '
        'sed \'s/"boot_id": "[^"]*"/"boot_id": "00000000-0000-4000-8000-000000000000"/\' '
        '"$f" > "$f.edit" && mv "$f.edit" "$f"; echo edited; sleep 120'
    )
    run_id = af.trigger_dag(dag_id, conf={"job_id": job_id, "command": command})
    info = wait_running(jobs, job_id)
    wait_until(lambda: job_json(jobs, job_id)["boot_id"].startswith("00000000"), 10, "the edited boot id")
    finish(af, dag_id, run_id, "failed", timeout=60)

    entries = log_entries(af, dag_id, run_id)
    watching = stamp(first_entry(entries, r"trigger .*starting|Trigger .*start|edited"))
    noticed = stamp(first_entry(entries, r"Trigger fired event")) - watching
    metrics.update(trigger_start_to_event_s=round(noticed, 2), poll_s=poll)
    assert noticed <= 2 * poll, f"lost noticed {noticed:.1f}s after the trigger started (> 2 polls of {poll}s)"
    result = af.xcom(dag_id, run_id, "job", key="result")
    assert result["state"] == "lost" and "boot id differs" in result["reason"], result
    wait_for_log(af, dag_id, run_id, re.escape("lost: the host rebooted since launch"))
    assert result["pid"] == info["pid"]


@pytest.mark.timeout(240)
def test_11_fire_and_forget_then_sensor_in_a_later_run(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, metrics: dict
) -> None:
    af, jobs = airflow_stack, remote_jobs
    job_id = jobs.new("sensed")
    launch_run = af.trigger_dag(
        "e2e_launch_only", conf={"job_id": job_id, "command": held_job(jobs, job_id, "from the launcher")}
    )
    finish(af, "e2e_launch_only", launch_run, "success", timeout=60)
    ref = af.xcom("e2e_launch_only", launch_run, "launch")
    assert ref["job_id"] == job_id and ref["job_dir"] == str(jobs.dir(job_id)), ref
    assert job_processes(job_id), "the fire-and-forget job should still run"

    sensor_run = af.trigger_dag("e2e_sensor", conf={"job_id": ref["job_id"]})
    ti = af.wait_for_task_state("e2e_sensor", sensor_run, "watch", "deferred", timeout=60)
    af.wait_for_trigger_holder("e2e_sensor", sensor_run, "watch")
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:  # it holds no worker while it waits
        assert not af.has_worker(ti["id"]), af.worker_processes(ti["id"])
        time.sleep(0.2)
    wait_for_log(af, "e2e_sensor", sensor_run, r"from the launcher", task_id="watch")
    assert af.task_instance("e2e_sensor", sensor_run, "watch")["state"] == "deferred"

    release(jobs, job_id)
    finish(af, "e2e_sensor", sensor_run, "success", timeout=60)
    result = af.xcom("e2e_sensor", sensor_run, "watch")
    assert (result["job_id"], result["state"], result["exit_code"]) == (job_id, "succeeded", 0), result
    assert starts(jobs, job_id) == 1


BAD_INPUTS = {
    "unknown_conn": (
        "-unknown-conn",
        [r"Airflow connection 'e2e_no_such_conn' is not defined", r"AIRFLOW_CONN_E2E_NO_SUCH_CONN"],
    ),
    "wrong_key": ("-wrong-key", [r"authentication failed", r"Check the login, key file or password"]),
    "host_key_mismatch": ("-host-key", [r"host key not trusted", r"update that entry"]),
    "missing_cwd": ("-cwd", [r"cwd '/nonexistent/{job}' does not exist"]),
    "invalid_job_id": ("/../../etc", [r"invalid job id '{job}/\.\./\.\./etc'", r"Pass job_id= with such a name"]),
}


@pytest.mark.timeout(180)
def test_12_bad_input_fails_at_once_saying_what_to_fix(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, metrics: dict
) -> None:
    af, jobs, dag_id = airflow_stack, remote_jobs, "e2e_bad_input"
    job_id = jobs.new("bad")
    run_id = af.trigger_dag(dag_id, conf={"job_id": job_id})
    finish(af, dag_id, run_id, "failed", timeout=120)
    problems = []
    for task_id, (suffix, patterns) in BAD_INPUTS.items():
        ti = af.task_instance(dag_id, run_id, task_id)
        text = wait_for_log(af, dag_id, run_id, r"Task failed with exception", task_id=task_id)
        if (ti["state"], ti["try_number"]) != ("failed", 1):
            problems.append(f"{task_id}: {ti['state']} on try {ti['try_number']}, expected failed on try 1")
        metrics[f"{task_id}_task_s"] = ti["duration"]
        if ti["duration"] is None or ti["duration"] > 30:  # task-runner start included; 2 busy cores
            problems.append(f"{task_id}: took {ti['duration']}s to fail")
        for pattern in patterns:
            if not re.search(pattern.format(job=re.escape(job_id)), text):
                problems.append(f"{task_id}: no {pattern!r} in its log:\n{text[-2000:]}")
        sub_id = job_id + suffix
        if task_id != "invalid_job_id" and job_processes(sub_id):
            problems.append(f"{task_id}: processes of {sub_id} run on the host")
    left = [p.name for p in jobs.async_dir.glob(f"{job_id}*")] + [p.name for p in jobs.home.glob(f"ran-{job_id}*")]
    assert not left, f"left on the host: {left}"
    assert not list(jobs.async_dir.glob(".incoming.*")), "a half-read launch payload is left"
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(300)
def test_retry_after_a_worker_kill_reattaches_and_runs_the_job_once(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, metrics: dict
) -> None:
    af, jobs, dag_id = airflow_stack, remote_jobs, "e2e_worker_kill"
    job_id = jobs.new("workerkill")
    run_id = af.trigger_dag(dag_id, conf={"job_id": job_id, "command": held_job(jobs, job_id, "before the kill")})
    info = wait_running(jobs, job_id)
    ti = af.wait_for_task_state(dag_id, run_id, "job", "running", timeout=60)
    wait_until(lambda: af.has_worker(ti["id"]), 30, f"a worker process for TI {ti['id']}", check=af.check_alive)

    killed = time.monotonic()
    af.kill_task_worker(ti["id"])  # Celery: the whole worker machine; SQLite: the task's processes
    assert os.path.exists(f"/proc/{info['pid']}") and result_json(jobs, job_id) is None, "the job died with the worker"
    wait_until(
        lambda: (t := af.task_instance(dag_id, run_id, "job"))["try_number"] == 2 and t["state"] == "running",
        150,
        "Airflow to notice the dead worker and run try 2",
        interval=1,
        check=af.check_alive,
    )
    metrics["kill_to_try_2_running_s"] = round(time.monotonic() - killed, 1)
    wait_for_log(af, dag_id, run_id, r"re-attaching instead of starting it again", try_number=2)
    # The retry's own execution_timeout now bounds the job on the host, not the killed try's.
    wait_for_log(af, dag_id, run_id, r"execution_timeout of this try: job \S+'s deadline moved", try_number=2)
    first, second = counted_start(af, dag_id, run_id, 1), counted_start(af, dag_id, run_id, 2)
    deadline = int((jobs.dir(job_id) / "deadline").read_text())
    metrics["try_gap_s"] = round(second - first, 1)
    assert second - first > 5, "try 2 started too soon after try 1 to tell their deadlines apart"
    assert second + WORKER_KILL_EXEC_TIMEOUT_S - 2 <= deadline <= second + WORKER_KILL_EXEC_TIMEOUT_S + 3, (
        f"deadline {deadline}: not try 2's start {second:.0f} + {WORKER_KILL_EXEC_TIMEOUT_S} s"
    )
    release(jobs, job_id)
    finish(af, dag_id, run_id, "success", timeout=90)
    result = af.xcom(dag_id, run_id, "job")
    assert result["pid"] == info["pid"] and result["state"] == "succeeded", result
    assert starts(jobs, job_id) == 1, f"the job was started {starts(jobs, job_id)} times"


@pytest.mark.timeout(300)
@rerun_on_stale_defer_exit
def test_mapped_tasks_over_two_hosts_each_run_once_on_their_host(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, sshd: SSHServer, second_host: SSHServer, metrics: dict
) -> None:
    af, jobs, dag_id = airflow_stack, remote_jobs, "e2e_mapped"
    hosts = [("test_asyncdash", sshd), ("test_asyncdash_b", second_host)]
    entries = []
    for i in range(4):
        conn_id, _ = hosts[i % 2]
        job_id = jobs.new(f"mapped{i}")
        entries.append({"ssh_conn_id": conn_id, "job_id": job_id, "command": held_job(jobs, job_id, f"map {i}")})
    run_id = af.trigger_dag(dag_id, conf={"jobs": entries})
    for i in range(len(entries)):
        af.wait_for_task_state(dag_id, run_id, "job", "deferred", map_index=i, timeout=90)
        af.wait_for_trigger_holder(dag_id, run_id, "job", map_index=i)
    assert all(job_processes(e["job_id"]) for e in entries), "every mapped job should run"

    for e in entries:
        release(jobs, e["job_id"])
    finish(af, dag_id, run_id, "success", timeout=90)
    for i, e in enumerate(entries):
        server = hosts[i % 2][1]
        result = af.xcom(dag_id, run_id, "job", map_index=i)
        assert (result["job_id"], result["state"]) == (e["job_id"], "succeeded"), result
        assert result["host"] == f"asyncdash@{server.address}:{server.port}", result
        assert result["stdout_tail"] == f"map {i}\nfinished\n", result
        assert starts(jobs, e["job_id"]) == 1, f"map {i}: the job was started {starts(jobs, e['job_id'])} times"


@pytest.mark.timeout(240)
def test_scheduler_down_while_the_job_ends_the_run_completes_once_it_is_back(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, metrics: dict
) -> None:
    af, jobs = airflow_stack, remote_jobs
    job_id = jobs.new("schedkill")
    run_id = af.trigger_dag(JOB_DAG, conf={"job_id": job_id, "command": held_job(jobs, job_id, "scheduled")})
    defer_and_hold(af, JOB_DAG, run_id)
    wait_for_log(af, JOB_DAG, run_id, r"scheduled")
    info = job_json(jobs, job_id)

    comp = af.components["scheduler"]
    comp.expected_dead = True
    comp.signal_group(signal.SIGKILL)
    assert comp.wait(30), "the scheduler ignored SIGKILL"
    release(jobs, job_id)  # the job ends, and the trigger fires, while no scheduler runs
    wait_until(lambda: result_json(jobs, job_id), 30, "the job to end on the host", interval=0.5)
    time.sleep(3)
    assert af.task_instance(JOB_DAG, run_id, "job")["state"] in ("deferred", "scheduled"), "the task ended alone"
    af.restart_component("scheduler")
    finish(af, JOB_DAG, run_id, "success")
    result = af.xcom(JOB_DAG, run_id, "job")
    assert result["pid"] == info["pid"] and result["state"] == "succeeded", result
    assert starts(jobs, job_id) == 1


DB_DOWN_S = 30  # the database is gone longer than every heartbeat threshold of the stack (10 s, 20 s)


def supervised(af: AirflowStack, probe: Callable[[], Any], timeout: float, what: str, revived: list[str]) -> Any:
    """Wait for PROBE while a process supervisor's part is played: what exits is started again."""

    def round_() -> Any:
        revived.extend(af.revive())
        af.adopt_triggerer_jobs()
        try:
            return probe()
        except (httpx.HTTPError, AirflowStackError):  # the API server reconnecting to the database
            return None

    return wait_until(round_, timeout, what, interval=1)


@pytest.mark.stacks("celery")
@pytest.mark.outage
@pytest.mark.timeout(300)
def test_database_down_while_deferred_the_job_runs_on_and_the_run_succeeds_once_it_is_back(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, metrics: dict
) -> None:
    """PostgreSQL stops (``pg_ctl stop -m fast``) for 30 s while the task is deferred.

    The job must run on untouched (the host needs no database), and once the
    database is back and whatever Airflow component exited has been started
    again (as systemd or Kubernetes would), the run succeeds with the job started
    once. Which components exit, and when, goes into the metrics.
    """
    af, jobs = airflow_stack, remote_jobs
    assert af.postgres is not None
    job_id = jobs.new("dbdown")
    run_id = af.trigger_dag(JOB_DAG, conf={"job_id": job_id, "command": held_job(jobs, job_id, "before the outage")})
    defer_and_hold(af, JOB_DAG, run_id)
    wait_for_log(af, JOB_DAG, run_id, r"before the outage")
    info = job_json(jobs, job_id)
    holder = af.task_instance(JOB_DAG, run_id, "job")["trigger"]["triggerer_id"]

    af.postgres.halt("fast")
    down = time.monotonic()
    exited: dict[str, float] = {}
    while (elapsed := time.monotonic() - down) < DB_DOWN_S:
        for name, comp in af.components.items():
            if not comp.expected_dead and not comp.alive():
                exited.setdefault(name, round(elapsed, 1))
        assert os.path.exists(f"/proc/{info['pid']}"), "the job died while the database was down"
        time.sleep(0.5)
    assert result_json(jobs, job_id) is None, "the job ended while the database was down"
    assert starts(jobs, job_id) == 1
    metrics["exited_while_down_s"] = exited
    af.postgres.start()
    back = time.monotonic()

    revived: list[str] = []

    def held_by_a_live_triggerer() -> int | None:
        alive = {j["id"] for j in af.triggerer_jobs(alive_only=True)}
        trigger = af.task_instance(JOB_DAG, run_id, "job").get("trigger") or {}
        return trigger.get("triggerer_id") if trigger.get("triggerer_id") in alive else None

    new_holder = supervised(af, held_by_a_live_triggerer, 150, "a live triggerer to hold the trigger", revived)
    metrics["db_back_to_trigger_held_s"] = round(time.monotonic() - back, 1)
    metrics["trigger_moved"] = new_holder != holder
    assert af.task_instance(JOB_DAG, run_id, "job")["state"] == "deferred"
    assert os.path.exists(f"/proc/{info['pid']}") and starts(jobs, job_id) == 1

    release(jobs, job_id)
    state = supervised(
        af,
        lambda: (s := af.dag_run_state(JOB_DAG, run_id)) in ("success", "failed") and s,
        120,
        f"run {run_id} to finish",
        revived,
    )
    metrics["revived"] = sorted(set(revived))
    metrics["db_back_to_run_done_s"] = round(time.monotonic() - back, 1)
    assert state == "success", f"run {run_id} ended {state} after the outage\n{af.diagnostics(30)}"
    result = af.xcom(JOB_DAG, run_id, "job")
    assert result["pid"] == info["pid"] and result["state"] == "succeeded", result
    assert starts(jobs, job_id) == 1, f"the job was started {starts(jobs, job_id)} times"
    # Leave the stack as whole as it came: every component running, the API healthy.
    supervised(af, lambda: all(c.alive() for c in af.components.values() if not c.expected_dead), 60, "all up", revived)


# --- issue 22: execution_timeout and dagrun_timeout end the remote job --------------------


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def try_start(af: AirflowStack, dag_id: str, run_id: str, try_number: int, task_id: str = "job") -> float:
    """When a try started as the API records it (the scheduler's side)."""
    path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries/{try_number}"
    return epoch(af.request("GET", path)["start_date"])


COUNTED_START = r"execution_timeout counts from the try's start at (\S+)\)"


def counted_start(
    af: AirflowStack, dag_id: str, run_id: str, try_number: int = 1, metrics: dict | None = None
) -> float:
    """The try's start that execution_timeout counted from (``ti.start_date``, from the launch's log line).

    The task SDK sets it once the API server let the worker run, which a
    loaded machine makes seconds later than the start the API records: the
    difference goes into METRICS.
    """
    text = wait_for_log(af, dag_id, run_id, COUNTED_START, try_number=try_number)
    match = re.search(COUNTED_START, text)
    assert match, text[-2000:]
    start = epoch(match.group(1))
    if metrics is not None:
        metrics[f"{dag_id}_try{try_number}_api_start_to_sdk_start_s"] = round(
            start - try_start(af, dag_id, run_id, try_number), 1
        )
    return start


def no_job_process_left(job_id: str) -> bool:
    """True once nothing of the job runs on the host (the supervisor exits just after result.json)."""
    deadline = time.monotonic() + 5
    while job_processes(job_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not job_processes(job_id)


POLL_S = 1  # the poll_interval of the issue-22 DAGs


@pytest.mark.timeout(240)
@rerun_on_stale_defer_exit
def test_13_execution_timeout_ends_deferred_jobs_the_sooner_limit_wins_dagrun_timeout_cancels(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, tmp_path_factory: pytest.TempPathFactory, metrics: dict
) -> None:
    """Four runs at once (one stack, ~30 s): execution_timeout with a retry, a TERM-ignoring
    job, a smaller job_timeout, a dagrun_timeout."""
    af, jobs = airflow_stack, remote_jobs
    marker = tmp_path_factory.mktemp("exec-timeout") / "failure-callback"
    plain, stubborn, capped, dagrun = (jobs.new(n) for n in ("exec", "exec-term", "exec-capped", "dagrun"))
    runs = {
        plain: ("e2e_exec_timeout", "echo started; sleep 120", {"marker": str(marker)}),
        stubborn: ("e2e_exec_once", "trap '' TERM; echo started; sleep 120", {}),
        capped: ("e2e_exec_job_limit", "echo started; sleep 120", {}),
        dagrun: ("e2e_dagrun_timeout", "echo started; sleep 120", {}),
    }
    run_ids = {j: af.trigger_dag(d, conf={"job_id": j, "command": c, **x}) for j, (d, c, x) in runs.items()}
    for job_id, (dag_id, _, _) in runs.items():
        finish(af, dag_id, run_ids[job_id], "failed", timeout=150)

    def fired_after_start(job_id: str, try_number: int = 1) -> float:
        dag_id, run_id = runs[job_id][0], run_ids[job_id]
        entries = log_entries(af, dag_id, run_id, try_number=try_number)
        return stamp(first_entry(entries, r"Trigger fired event")) - counted_start(
            af, dag_id, run_id, try_number, metrics
        )

    problems = []
    # execution_timeout, deferred: the job ends and the task fails as a timed-out task, and is retried.
    dag_id, run_id = runs[plain][0], run_ids[plain]
    ti = af.task_instance(dag_id, run_id, "job")
    if (ti["state"], ti["try_number"]) != ("failed", 2):
        problems.append(f"execution_timeout: {ti['state']} after try {ti['try_number']}, expected failed after 2")
    for n in (1, 2):
        text = wait_for_log(af, dag_id, run_id, r"AirflowTaskTimeout", try_number=n)
        if "execution_timeout" not in text:
            problems.append(f"execution_timeout: try {n}'s log does not name the limit:\n{text[-2000:]}")
    took = fired_after_start(plain)
    metrics["exec_timeout_try_start_to_event_s"] = round(took, 1)
    if took > EXEC_TIMEOUT_S + EXEC_GRACE_S + 2 * POLL_S:
        problems.append(f"execution_timeout: the trigger fired {took:.1f}s after the try started")
    result = af.xcom(dag_id, run_id, "job", key="result")
    if (result["state"], result["limit"], result["signal"]) != ("timed_out", "execution_timeout", 15):
        problems.append(f"execution_timeout: result {result}")
    first = json.loads((jobs.async_dir / ".archive" / plain / "1" / "result.json").read_text())
    if first["limit"] != "execution_timeout":
        problems.append(f"execution_timeout: the first try's job ended {first}")
    if not marker.exists() or marker.read_text() != "AirflowTaskTimeout":
        problems.append(f"on_failure_callback saw {marker.read_text() if marker.exists() else 'nothing'}")

    # A job that ignores SIGTERM: SIGKILL after the grace, still the execution_timeout.
    took = fired_after_start(stubborn)
    metrics["exec_timeout_term_ignored_try_start_to_event_s"] = round(took, 1)
    if took > EXEC_TIMEOUT_S + 1 + EXEC_GRACE_S + 2 * POLL_S:  # + 1: the host counts whole seconds
        problems.append(f"TERM ignored: the trigger fired {took:.1f}s after the try started")
    result = af.xcom(runs[stubborn][0], run_ids[stubborn], "job", key="result")
    if (result["state"], result["limit"], result["signal"]) != ("timed_out", "execution_timeout", 9):
        problems.append(f"TERM ignored: result {result}")

    # job_timeout smaller than execution_timeout: the job's limit wins, and says so.
    result = af.xcom(runs[capped][0], run_ids[capped], "job", key="result")
    if (result["state"], result["limit"]) != ("timed_out", "job_timeout") or not (
        JOB_LIMIT_S <= result["duration"] <= JOB_LIMIT_S + 2
    ):
        problems.append(f"job_timeout: result {result}")
    reason = f"time limit of {JOB_LIMIT_S} s reached (job_timeout)"
    wait_for_log(af, runs[capped][0], run_ids[capped], re.escape(reason))

    # dagrun_timeout: Airflow sets the deferred task skipped and drops its trigger (on_kill): the job is cancelled.
    dag_id, run_id = runs[dagrun][0], run_ids[dagrun]
    assert jobs.dir(dagrun).exists(), "the run timed out before its task launched the job: raise DAGRUN_TIMEOUT_S"
    if (state := af.task_instance(dag_id, run_id, "job")["state"]) != "skipped":
        problems.append(f"dagrun_timeout: the task is {state}, expected skipped (Airflow 3.3's rule)")
    ended = wait_until(lambda: result_json(jobs, dagrun), 40, "the dagrun_timeout's job to end", interval=0.2)
    run = af.dag_run(dag_id, run_id)
    took = ended["end_time"] - epoch(run["start_date"])
    metrics["dagrun_timeout_run_start_to_job_end_s"] = round(took, 1)
    if ended["reason"] != "cancelled" or took > DAGRUN_TIMEOUT_S + 40:  # scheduler, trigger cleanup, on_kill: 17 s seen
        problems.append(f"dagrun_timeout: the job ended {ended}, {took:.0f}s after the run started")
    wait_for_log(af, dag_id, run_id, r"dagrun_timeout passed\): cancelling job")

    for job_id in runs:
        if not no_job_process_left(job_id):
            problems.append(f"{job_id}: processes left on the host: {job_processes(job_id)}")
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(180)
def test_14_the_host_ends_the_job_at_execution_timeout_with_no_triggerer_running(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, metrics: dict
) -> None:
    af, jobs, dag_id = airflow_stack, remote_jobs, "e2e_exec_once"
    job_id = jobs.new("exec-notrig")
    run_id = af.trigger_dag(dag_id, conf={"job_id": job_id, "command": "echo started; sleep 120"})
    defer_and_hold(af, dag_id, run_id)
    started = counted_start(af, dag_id, run_id, 1, metrics)
    for triggerer in af.triggerers:
        af.kill_triggerer(triggerer.name, sig=signal.SIGKILL)
    assert not af.triggerers, "no triggerer should be left running"
    assert time.time() < started + EXEC_TIMEOUT_S, "too slow: the triggerers stopped after the deadline"
    assert result_json(jobs, job_id) is None and job_processes(job_id), "the job ended before its deadline"

    result = wait_until(lambda: result_json(jobs, job_id), 30, "the host to end the job", interval=0.2)
    metrics["try_start_to_job_end_s"] = round(result["end_time"] - started, 1)
    assert (result["reason"], result["limit"]) == ("timed_out", "execution_timeout"), result
    assert result["end_time"] <= started + EXEC_TIMEOUT_S + 2, f"ended {result['end_time'] - started:.0f}s in"
    assert no_job_process_left(job_id), job_processes(job_id)
    assert af.task_instance(dag_id, run_id, "job")["state"] == "deferred"

    # Still no triggerer when the deferral's own (backstop) timeout passes: brought
    # forward in the database rather than waited for (limit + grace + 120 s). The
    # scheduler times the deferral out; the worker asks the host and fails the task as
    # the host's limit would, not as TaskDeferralTimeout.
    try:
        expire_deferral(af, dag_id, run_id, "job")
        finish(af, dag_id, run_id, "failed", timeout=90)
    finally:
        af.start_triggerer(timeout=60)  # the default is what is left of the stack's startup budget
    log = wait_for_log(af, dag_id, run_id, r"AirflowTaskTimeout")
    assert "No triggerer reported job" in log and "TaskDeferralTimeout" not in log, log[-3000:]
    assert af.xcom(dag_id, run_id, "job", key="result")["limit"] == "execution_timeout"


def expire_deferral(af: AirflowStack, dag_id: str, run_id: str, task_id: str) -> None:
    """Make a deferred task's trigger timeout already past (its start_date, in Airflow's own format)."""
    db = sqlalchemy.create_engine(af.db_url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with db.begin() as conn:
            done = conn.execute(
                sqlalchemy.text(
                    "UPDATE task_instance SET trigger_timeout = start_date"
                    " WHERE dag_id = :dag AND run_id = :run AND task_id = :task AND state = 'deferred'"
                ),
                {"dag": dag_id, "run": run_id, "task": task_id},
            )
            assert done.rowcount == 1, f"{dag_id}/{run_id}/{task_id} is not deferred"
    finally:
        db.dispose()


@pytest.mark.timeout(180)
def test_15_a_cleared_task_reattaching_gets_its_own_execution_timeout_and_moves_the_jobs_deadline(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, metrics: dict
) -> None:
    af, jobs, dag_id = airflow_stack, remote_jobs, "e2e_exec_clear"
    job_id = jobs.new("exec-clear")
    command = f'echo "$$" >> {jobs.file("starts", job_id)}; echo started; sleep 120'
    run_id = af.trigger_dag(dag_id, conf={"job_id": job_id, "command": command})
    defer_and_hold(af, dag_id, run_id)
    wait_for_log(af, dag_id, run_id, r"started")
    first = counted_start(af, dag_id, run_id, 1, metrics)
    time.sleep(max(0.0, first + 3 - time.time()))  # the next try starts measurably later

    clear_and_wait_for_second_try(dag_id, run_id, af)
    second = counted_start(af, dag_id, run_id, 2, metrics)
    wait_for_log(af, dag_id, run_id, r"execution_timeout of this try: job \S+'s deadline moved", try_number=2)
    result = wait_until(lambda: result_json(jobs, job_id), EXEC_CLEAR_TIMEOUT_S + 30, "the job to end", interval=0.2)
    metrics.update(try_gap_s=round(second - first, 1), second_try_to_job_end_s=round(result["end_time"] - second, 1))
    assert (result["reason"], result["limit"]) == ("timed_out", "execution_timeout"), result
    assert result["end_time"] >= second + EXEC_CLEAR_TIMEOUT_S - 1, "the first try's deadline ended the job"
    assert result["end_time"] <= second + EXEC_CLEAR_TIMEOUT_S + 2, "the job ran past the second try's deadline"
    finish(af, dag_id, run_id, "failed")
    assert starts(jobs, job_id) == 1, "the clear started the job again"
    assert no_job_process_left(job_id)


# Last in the file: it failed before bug 1 of docs/reliability.md was fixed; `-x` should not hide the others.
@pytest.mark.timeout(240)
def test_05_clear_while_running_reattaches_and_runs_the_job_once(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, metrics: dict
) -> None:
    af, jobs = airflow_stack, remote_jobs
    job_id = jobs.new("clear")
    run_id = af.trigger_dag(JOB_DAG, conf={"job_id": job_id, "command": held_job(jobs, job_id, "first try")})
    defer_and_hold(af, JOB_DAG, run_id)
    wait_for_log(af, JOB_DAG, run_id, r"first try")
    info = job_json(jobs, job_id)

    clear_and_wait_for_second_try(JOB_DAG, run_id, af)
    try2 = wait_for_log(af, JOB_DAG, run_id, r"Pausing task as DEFERRED", try_number=2)
    reattached = "re-attaching instead of starting it again" in try2
    # Airflow drops the first try's trigger about a second after the clear
    # (Trigger.clean_unused) and calls its on_kill; hold the job past that.
    time.sleep(8)
    ended = result_json(jobs, job_id)
    assert reattached and ended is None and starts(jobs, job_id) == 1, (
        "the clear stopped the running job: the first try's trigger ran on_kill and cancelled it "
        f"(second try re-attached: {reattached}; result.json: {ended}; job started {starts(jobs, job_id)} "
        "times). See docs/reliability.md, bug 1."
    )
    release(jobs, job_id)
    finish(af, JOB_DAG, run_id, "success")
    assert starts(jobs, job_id) == 1, f"the job was started {starts(jobs, job_id)} times"
    result = af.xcom(JOB_DAG, run_id, "job")
    assert result["pid"] == info["pid"] and result["state"] == "succeeded"
