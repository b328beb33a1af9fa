"""Operator, trigger and sensor through Airflow itself (dag.test()) and a real sshd."""

from __future__ import annotations

import asyncio
import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_ssh_async import SSHAsyncJobTrigger
from airflow_ssh_async.hooks import SSHAsyncJobHook
from airflow_ssh_async.job import JobRef, JobState
from airflow_ssh_async.watch import watch_job
from tests.harness.logs import ListLog
from tests.harness.procs import live_group_members
from tests.harness.release import released_when, wait_for_release
from tests.harness.sshd import home

pytestmark = pytest.mark.timeout(180)

USER = "asyncdash"


def run_dag(dag_bag: Any, dag_id: str, **conf: Any) -> Any:
    return dag_bag.dags[dag_id].test(run_conf=conf or None)


def ti_of(dag_run: Any, task_id: str = "job") -> Any:
    [ti] = [t for t in dag_run.get_task_instances() if t.task_id == task_id]
    return ti


def xcom(dag_run: Any, task_id: str = "job", key: str = "return_value") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, key=key)
        ).all()
        assert rows, f"no XCom {key!r} for {dag_run.dag_id}.{task_id}"
        return XComModel.deserialize_value(rows[-1])


def log_times(output: str, pattern: str) -> list[datetime]:
    """Timestamps of the structlog lines matching PATTERN in dag.test()'s output."""
    stamps = []
    for line in output.splitlines():
        if re.search(pattern, line):
            stamps.append(datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")))
    return stamps


def launches(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


@pytest.fixture
def marker(job_id: str) -> Path:
    """A file each start of the job appends to: how many times it really ran."""
    path = home(USER) / f"starts-{job_id}"
    yield path
    path.unlink(missing_ok=True)


def test_defers_then_streams_output_as_it_appears(sshd, dag_bag, capfd) -> None:
    dag_run = run_dag(dag_bag, "ssh_async_stream")
    out = capfd.readouterr().out
    assert ti_of(dag_run).state == "success"
    [deferred] = log_times(out, r"Pausing task as DEFERRED")
    lines = [log_times(out, rf"\] line {i}\s")[0] for i in (1, 2, 3)]
    # The worker gave up its slot before the job printed its lines, and the
    # lines reached the log a second apart, as the job wrote them.
    assert deferred < lines[0]
    assert (lines[2] - lines[0]).total_seconds() >= 1.5
    result = xcom(dag_run)
    assert result["state"] == "succeeded" and result["exit_code"] == 0
    assert result["stdout_tail"] == "start\nline 1\nline 2\nline 3\n"
    assert result["duration"] >= 3 and result["host"] == f"{USER}@127.0.0.1:{sshd.port}"


def test_failed_job_fails_the_task_with_stderr_tail(sshd, dag_bag, job_id, capfd) -> None:
    dag_run = run_dag(
        dag_bag, "ssh_async_generic", job_id=job_id, command="echo $GREETING; echo boom >&2; exit 3", greeting="hello"
    )
    out = capfd.readouterr().out
    assert ti_of(dag_run).state == "failed"
    assert f"job '{job_id}'" in out and "failed: exited with code 3" in out and "boom" in out
    result = xcom(dag_run, key="result")
    assert (result["state"], result["exit_code"], result["stdout_tail"]) == ("failed", 3, "hello\n")


def test_exit_code_in_skip_on_exit_code_skips(sshd, dag_bag, job_id) -> None:
    dag_run = run_dag(dag_bag, "ssh_async_generic", job_id=job_id, command="exit 99")
    assert ti_of(dag_run).state == "skipped"


def test_killed_job_fails_with_the_signal(sshd, dag_bag, job_id, capfd) -> None:
    dag_run = run_dag(dag_bag, "ssh_async_generic", job_id=job_id, command="kill -9 $$")
    assert ti_of(dag_run).state == "failed"
    assert "killed: killed by signal 9" in capfd.readouterr().out


def test_time_limit_stops_the_job_and_fails_timed_out(sshd, dag_bag, job_id, capfd) -> None:
    dag_run = run_dag(dag_bag, "ssh_async_timeout", job_id=job_id)
    assert ti_of(dag_run).state == "failed"
    assert "timed_out: time limit of 1 s reached" in capfd.readouterr().out
    result = xcom(dag_run, key="result")
    assert result["state"] == "timed_out" and result["signal"] == 9
    assert live_group_members(result["pid"]) == []


def test_execution_timeout_ends_the_deferred_job_and_fails_as_a_timeout(sshd, dag_bag, job_id, capfd) -> None:
    started = time.monotonic()
    dag_run = run_dag(dag_bag, "ssh_async_exec_timeout", job_id=job_id)
    took = time.monotonic() - started
    out = capfd.readouterr().out
    assert ti_of(dag_run).state == "failed"
    assert "AirflowTaskTimeout" in out and "execution_timeout reached" in out, out[-3000:]
    result = xcom(dag_run, key="result")
    assert (result["state"], result["limit"], result["signal"]) == ("timed_out", "execution_timeout", 15), result
    assert result["duration"] <= 4, result  # 3 s, rounded up to the host's next second
    assert took < 30, f"dag.test took {took:.0f}s: the job_timeout of 600 s is not what ended it"
    assert live_group_members(result["pid"]) == []


def test_waiting_in_the_worker_when_not_deferrable(sshd, dag_bag, job_id, capfd) -> None:
    dag_run = run_dag(dag_bag, "ssh_async_in_worker", job_id=job_id, command="sleep 1; echo done-in-worker")
    out = capfd.readouterr().out
    assert ti_of(dag_run).state == "success" and "DEFERRED" not in out
    assert xcom(dag_run)["stdout_tail"] == "done-in-worker\n"


def test_second_try_reattaches_to_the_running_job(sshd, dag_bag, job_id, marker, capfd) -> None:
    release = home(USER) / f"release-{job_id}"
    command = f"echo started >> {marker}; {wait_for_release(release)}; echo finished"
    first = SSHAsyncJobHook(f"test_{USER}").launch(job_id, command)  # the first try, which "died"
    # Its job runs until the second try re-attached (a fixed sleep ended first on a loaded machine).
    with released_when(Path(first.job_dir) / "deadline", release):
        dag_run = run_dag(dag_bag, "ssh_async_reattach", job_id=job_id, command=command)
    assert ti_of(dag_run).state == "success"
    assert "re-attaching instead of starting it again" in capfd.readouterr().out
    assert launches(marker) == 1 and xcom(dag_run)["pid"] == first.pid
    assert xcom(dag_run)["stdout_tail"] == "finished\n"


def test_rerun_refuses_a_running_job_and_restarts_a_finished_one(sshd, dag_bag, job_id, marker, capfd) -> None:
    hook = SSHAsyncJobHook(f"test_{USER}")
    release = home(USER) / f"release-{job_id}"
    command = f"echo started >> {marker}; {wait_for_release(release)}"
    launched = hook.launch(job_id, command)
    try:  # the job runs until the first run_dag has met it running (a fixed sleep could end first)
        dag_run = run_dag(dag_bag, "ssh_async_rerun", job_id=job_id, command=command)
    finally:
        release.touch()
    assert ti_of(dag_run).state == "failed"
    assert "on_existing='rerun' refuses to start it again while it runs" in capfd.readouterr().out
    while hook.status([launched.job_dir])[launched.job_dir][0].state is JobState.RUNNING:
        time.sleep(0.2)
    dag_run = run_dag(dag_bag, "ssh_async_rerun", job_id=job_id, command=command)
    release.unlink()
    assert ti_of(dag_run).state == "success" and launches(marker) == 2
    archived = home(USER) / ".airflow_async" / ".archive" / job_id / "1"
    assert (archived / "result.json").exists(), "the first attempt's files are kept"


def test_fail_refuses_any_existing_job(sshd, dag_bag, job_id, capfd) -> None:
    SSHAsyncJobHook(f"test_{USER}").launch(job_id, "true")
    dag_run = run_dag(dag_bag, "ssh_async_fail_existing", job_id=job_id, command="true")
    assert ti_of(dag_run).state == "failed"
    assert "on_existing='fail' refuses" in capfd.readouterr().out


def test_retry_takes_an_undelivered_result_without_running_again(sshd, dag_bag, job_id, marker, capfd) -> None:
    dag_run = run_dag(dag_bag, "ssh_async_take_result", job_id=job_id, command=f"echo started >> {marker}; echo out")
    out = capfd.readouterr().out
    ti = ti_of(dag_run)
    assert (ti.state, ti.try_number) == ("success", 2)
    assert "simulated worker loss" in out and "taking it without running again" in out
    assert launches(marker) == 1
    assert xcom(dag_run)["stdout_tail"] == "out\n"


def test_fixed_job_id_reused_by_another_run_runs_again(sshd, dag_bag, job_id, marker) -> None:
    command = f"echo started >> {marker}"
    for _ in range(2):
        assert ti_of(run_dag(dag_bag, "ssh_async_generic", job_id=job_id, command=command)).state == "success"
    assert launches(marker) == 2, "a new DAG run must not take the previous run's result"


def test_fire_and_forget_then_sensor_picks_it_up(sshd, dag_bag, job_id) -> None:
    launched = run_dag(dag_bag, "ssh_async_launch_only", job_id=job_id, command="sleep 2; echo backed-up")
    ref = xcom(launched)
    assert ref["job_id"] == job_id and ref["job_dir"] == f"{home(USER)}/.airflow_async/{job_id}"
    watched = run_dag(dag_bag, "ssh_async_sensor", job_id=job_id)
    assert ti_of(watched, "watch").state == "success"
    result = xcom(watched, "watch")
    assert result["state"] == "succeeded" and result["stdout_tail"] == "backed-up\n"


def test_sensor_started_in_the_triggerer(sshd, dag_bag, job_id) -> None:
    SSHAsyncJobHook(f"test_{USER}").launch(job_id, "sleep 1; echo from-trigger")
    watched = run_dag(dag_bag, "ssh_async_sensor_from_trigger", job_id=job_id)
    assert ti_of(watched, "watch").state == "success"
    assert xcom(watched, "watch")["stdout_tail"] == "from-trigger\n"


def test_sensor_on_a_missing_job_fails_at_once_naming_host_and_dir(sshd, dag_bag, capfd) -> None:
    started = time.monotonic()
    watched = run_dag(dag_bag, "ssh_async_sensor", job_id="no-such-job")
    assert ti_of(watched, "watch").state == "failed"
    assert time.monotonic() - started < 30
    out = capfd.readouterr().out
    assert f"{home(USER)}/.airflow_async/no-such-job" in out and "127.0.0.1" in out


class LevelLog:
    """(level, line) of everything a sensor logs."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def info(self, fmt: str, *args: Any) -> None:
        self.records.append(("info", fmt % args))

    def warning(self, fmt: str, *args: Any) -> None:
        self.records.append(("warning", fmt % args))

    debug = info


def logging_sensor(job_id: str) -> tuple[Any, LevelLog]:
    from airflow_ssh_async.sensors import SSHAsyncJobSensor

    log = LevelLog()

    class Sensor(SSHAsyncJobSensor):
        @property
        def log(self) -> LevelLog:  # type: ignore[override]
            return log

    return Sensor(task_id="watch", ssh_conn_id=f"test_{USER}", job_id=job_id, deferrable=False), log


def test_a_poking_sensor_logs_as_the_trigger_does_stderr_as_warnings(sshd, job_id) -> None:
    hook = SSHAsyncJobHook(f"test_{USER}")
    release = home(USER) / f"release-{job_id}"
    try:
        folder = hook.launch(job_id, f"echo before; {wait_for_release(release)}; echo out; echo err >&2").job_dir
        deadline = time.monotonic() + 20
        while hook.status([folder])[folder][0].sizes.get("stdout", 0) == 0:
            assert time.monotonic() < deadline, "the job never wrote its first line"
            time.sleep(0.2)
        sensor, log = logging_sensor(job_id)
        # One sensor poking in its worker: each poke is one check of the same watch.
        pokes = [sensor.poke({})]
        release.touch()  # the job ends once a poke has seen it running
        while not pokes[-1].is_done:
            assert time.monotonic() < deadline + 20, log.records
            time.sleep(0.5)
            pokes.append(sensor.poke({}))
        assert len(pokes) >= 2 and ("info", f"job {job_id} on {pokes[-1].xcom_value['host']} is running") in log.records
        # Like tail -f: lines from the first poke on; what came before is in the result's tail.
        assert ("info", "out") in log.records and ("warning", "err") in log.records
        assert ("info", "before") not in log.records
        result = pokes[-1].xcom_value
        assert (result["stdout_tail"], result["stderr_tail"]) == ("before\nout\n", "err\n")
        # A sensor whose first poke finds the job ended logs the tails, stderr as warnings.
        again, log = logging_sensor(job_id)
        done = again.poke({})
        assert done.is_done and done.xcom_value == result
        assert [r for r in log.records if r[1] in ("before", "out", "err")] == [
            ("info", "before"),
            ("info", "out"),
            ("warning", "err"),
        ]
    finally:
        release.touch()  # a test that failed early leaves no job waiting
    release.unlink()


# --- the trigger on its own: kill, cleanup, serialization, big output ------------------


async def _start_trigger(trigger: SSHAsyncJobTrigger) -> asyncio.Task[Any]:
    task = asyncio.create_task(anext(trigger.run()))
    await asyncio.sleep(1.5)  # polling has begun
    assert not task.done()
    return task


def test_on_kill_cancels_the_whole_process_group(sshd, job_id) -> None:
    hook = SSHAsyncJobHook(f"test_{USER}")
    launched = hook.launch(job_id, "sleep 100 & sleep 101 & wait")

    async def scenario() -> None:
        trigger = SSHAsyncJobTrigger(f"test_{USER}", job_id, job_dir=launched.job_dir, poll_interval=0.5, grace=2)
        task = await _start_trigger(trigger)
        task.cancel()  # what the triggerer does on a user's mark-failed
        await asyncio.gather(task, return_exceptions=True)
        await trigger.on_kill()
        await trigger.cleanup()

    asyncio.run(scenario())
    assert live_group_members(launched.pid) == []
    status = hook.status([launched.job_dir])[launched.job_dir][0]
    assert status.state is JobState.CANCELLED


def test_cleanup_leaves_the_job_running(sshd, job_id) -> None:
    hook = SSHAsyncJobHook(f"test_{USER}")
    launched = hook.launch(job_id, "sleep 30")

    async def scenario() -> None:
        trigger = SSHAsyncJobTrigger(f"test_{USER}", job_id, job_dir=launched.job_dir, poll_interval=0.5)
        task = await _start_trigger(trigger)
        task.cancel()  # a triggerer restart: cancelled, then cleanup(), never on_kill()
        await asyncio.gather(task, return_exceptions=True)
        await trigger.cleanup()

    asyncio.run(scenario())
    time.sleep(1)
    assert hook.status([launched.job_dir])[launched.job_dir][0].state is JobState.RUNNING
    hook.cancel(launched.job_dir, grace=1)


@pytest.mark.timeout(240)
def test_5mb_of_multibyte_output_arrives_in_the_log_intact(sshd, job_id) -> None:
    # Lines of 2-, 3- and 4-byte characters, read in chunks of a prime size so
    # nearly every read boundary falls inside a character.
    line = "é€😀" * 40
    count = 5 * 1024 * 1024 // len(line.encode())
    command = f"i=0; while [ $i -lt {count} ]; do printf '%s\\n' '{line}'; i=$((i+1)); done"
    hook = SSHAsyncJobHook(f"test_{USER}")
    launched = hook.launch(job_id, command)
    log = ListLog()
    ref = JobRef(f"test_{USER}", job_id, launched.job_dir)
    event = asyncio.run(watch_job(hook, ref, log=log, poll_interval=0.5, chunk_bytes=65_521))
    assert event["result"]["state"] == "succeeded"
    assert log.lines.count(line) == count and len(log.lines) == count
    assert os.path.getsize(Path(launched.job_dir) / "stdout") == count * (len(line.encode()) + 1)


def test_a_damaged_job_file_fails_only_its_own_watcher(sshd, job_id) -> None:
    hook = SSHAsyncJobHook(f"test_{USER}")
    healthy = hook.launch(f"{job_id}-ok", "sleep 2; echo fine")
    damaged = hook.launch(f"{job_id}-bad", "true")
    time.sleep(1)
    Path(damaged.job_dir, "result.json").write_text('{"reason": "exi')  # half written

    async def scenario() -> list[dict[str, Any]]:
        # One event loop, one host: both polls go through one batched status call.
        return await asyncio.gather(
            *(
                watch_job(hook, JobRef(f"test_{USER}", j.job_id, j.job_dir), log=ListLog(), poll_interval=0.5)
                for j in (healthy, damaged)
            )
        )

    good, bad = asyncio.run(scenario())
    assert good["status"] == "finished" and good["result"]["stdout_tail"] == "fine\n"
    assert bad["status"] == "error" and f"{damaged.job_dir}/result.json is not valid JSON" in bad["message"]


def test_ssh_conn_id_is_templated(sshd, dag_bag, job_id) -> None:
    run = run_dag(dag_bag, "ssh_async_templated_conn", conn="test_asyncbash", job_id=job_id)
    assert ti_of(run).state == "success"
    result = xcom(run)
    assert result["host"].startswith("asyncbash@") and result["stdout_tail"] == "as asyncbash\n"


def test_a_missing_key_file_fails_the_task_at_once_as_a_credential_error(sshd, dag_bag, job_id, capfd) -> None:
    import json

    os.environ["AIRFLOW_CONN_TEST_OP_NO_KEY"] = json.dumps(
        {
            "conn_type": "ssh",
            "host": "127.0.0.1",
            "port": sshd.port,
            "login": USER,
            "extra": {"key_file": "/nonexistent/id_ed25519", "host_key": sshd.host_key_line},
        }
    )
    run = run_dag(dag_bag, "ssh_async_templated_conn", conn="test_op_no_key", job_id=job_id)
    ti = ti_of(run)
    log = capfd.readouterr().out
    assert ti.state == "failed" and ti.try_number == 1
    assert "cannot read the private key /nonexistent/id_ed25519" in log
    assert "AirflowFailException" in log, "a permanent error: no retry would help"
    assert "check that the host is up" not in log.lower()


@pytest.mark.timeout(120)
def test_a_secret_across_every_read_boundary_is_masked_in_log_result_and_a_late_tail(sshd, job_id) -> None:
    from airflow_ssh_async.masking import Masker

    secret = "pw-é€😀-0123456789"
    # The secret in a long line, in a line of its own and split across two writes.
    command = (
        "printf '%300s' '' | tr ' ' x; printf 'S=%s\\n' \"$PW\"; printf '%s\\n' \"$PW\"; "
        "printf '%s' \"$PW\" | head -c 5; sleep 1; printf '%s\\n' \"$PW\" | tail -c +6"
    )
    hook = SSHAsyncJobHook(f"test_{USER}")
    launched = hook.launch(job_id, command, environment={"PW": secret})
    log = ListLog()
    ref = JobRef(f"test_{USER}", job_id, launched.job_dir)
    masker = Masker([secret])
    event = asyncio.run(watch_job(hook, ref, log=log, poll_interval=0.3, chunk_bytes=7, masker=masker))
    assert event["result"]["state"] == "succeeded"
    assert log.lines == ["x" * 300 + "S=***", "***", "***"], log.lines
    assert secret not in repr(event) and event["result"]["stdout_tail"].endswith("S=***\n***\n***\n")
    status = hook.status([launched.job_dir])[launched.job_dir][0]
    for tail_bytes in range(1, 40):  # a tail read from the end may begin inside the secret
        late = hook.run_sync(
            lambda h, n=tail_bytes: hook.afinished_result(ref, status, tail_bytes=n, host=h, masker=masker)
        )
        assert not [p for p in (secret[i:] for i in range(len(secret) - 3)) if p in late["stdout_tail"]], late
