"""Secrets stay masked (issue 21), on a real Airflow: log, XCom, trigger table, the Remote jobs view.

One run of the ``e2e_secrets`` DAG: the job echoes a connection password, a
sensitive-named variable, a ``mask_secret`` value and a literal under a
sensitive env name, also across a read boundary, at the end of an 8 KB
line and across the 64 KiB boundary of reads and log pieces; watched by the
trigger, by the operator's own wait in the worker, and by a sensor started
in the triggerer. ``SSHOperator`` with the same script is Airflow's own
reference. One run of ``e2e_ui_secrets``: the same secrets never reach the
Remote jobs view's answers, while its jobs run and after they ended.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import sqlalchemy

from tests.e2e.conftest import RemoteJobs
from tests.e2e.test_scenarios import finish, rerun_on_stale_defer_exit
from tests.harness.airflow_stack import AirflowStack, wait_until

pytestmark = pytest.mark.e2e
DAG_ID = "e2e_secrets"


def trigger_kwargs(db: sqlalchemy.engine.Engine) -> list[str]:
    """The kwargs column of every trigger row now, as stored (SQLite file or PostgreSQL)."""
    try:
        with db.connect() as conn:
            return [str(row[0]) for row in conn.execute(sqlalchemy.text("SELECT kwargs FROM trigger"))]
    except sqlalchemy.exc.OperationalError:  # SQLite locked by a writer this instant: next round
        return []


# Both stacks: on Celery the worker that rendered the secrets and the triggerer that
# streams the output share no process, environment or machine-local file.
@pytest.mark.timeout(420)
@rerun_on_stale_defer_exit  # Airflow's scheduler race (docs/troubleshooting.md), never the secrets
def test_secrets_never_reach_the_task_log_the_result_or_the_trigger_table(
    airflow_stack: AirflowStack, remote_jobs: RemoteJobs, secret_values: dict[str, str], metrics: dict
) -> None:
    af = airflow_stack
    job_id = remote_jobs.new("secrets")
    run_id = af.trigger_dag(DAG_ID, conf={"job_id": job_id})
    stored: list[str] = []
    deadline = time.monotonic() + 240
    db = sqlalchemy.create_engine(af.db_url, poolclass=sqlalchemy.pool.NullPool)
    try:
        while af.dag_run_state(DAG_ID, run_id) in ("queued", "running") and time.monotonic() < deadline:
            stored += trigger_kwargs(db)
            time.sleep(0.3)
    finally:
        db.dispose()
    finish(af, DAG_ID, run_id, "success", timeout=30)

    secrets = list(secret_values.values())
    # Airflow's own masking, the reference: the worker knows these secrets and masks
    # them in its log. (SSHOperator logs per read, so the secret split across two
    # reads shows in its log in two clear halves: seen as "split=e2e-Db-" / "Pa55-...".)
    reference = af.task_log(DAG_ID, run_id, "reference")
    assert "export DB_PASSWORD='***'" in reference and "export API_VALUE='***'" in reference, reference[-3000:]
    for known in ("api_secret", "context"):
        assert secret_values[known] not in reference, known

    for task_id in ("ours", "ours_in_worker", "watch"):
        log = af.task_log(DAG_ID, run_id, task_id)
        assert "dsn=postgres://app:***@db/app" in log, (task_id, log[-3000:])
        assert "split=***@db" in log, (task_id, "a secret across two reads")
        assert "x" * 100 + "***" in log, (task_id, "a secret at the end of a long line")
        # 65,530 y then the secret: it straddles the 64 KiB read and log-piece boundaries.
        assert log.count("y" * 1000) >= 65, (task_id, "the 64 KiB line is logged whole, in pieces")
        assert "y" * 100 + "***" in log, (task_id, "a secret across the 64 KiB boundary")
        leaked = [s for s in secrets if s in log]
        assert not leaked, f"{task_id}'s log shows {leaked}"
        result = af.xcom(DAG_ID, run_id, task_id)
        assert result["state"] == "succeeded" and "***" in result["stdout_tail"], (task_id, result)
        assert not [s for s in secrets if s in repr(result)], f"{task_id}'s result holds a secret: {result}"
    ours = af.task_log(DAG_ID, run_id, "ours")
    assert "api=*** ctx=*** tok=***" in ours and "err ***" in ours and "progress: step ***" in ours, ours[-3000:]

    assert any('"secrets"' in row for row in stored), f"no trigger row was seen: {stored[:3]}"
    assert not [s for s in secrets if any(s in row for row in stored)], "a trigger row holds a secret in clear"


# --- the Remote jobs view (issue 21: "the UI view shows output as the task log does") ---------

UI_DAG, CONN = "e2e_ui_secrets", "test_asyncdash"  # its async_dir: the ui_secrets_dir fixture
UI_JOBS = {"deferred": "", "launched": "-bg"}  # task id -> job id suffix (dags/ssh_async_e2e.py)
VIEW_SECRETS_TTL = 11  # past the view's cache of a task's secrets (ui/masks.py SECRETS_TTL)


def leaks(text: str, secrets: list[str]) -> list[str]:
    """Pieces (8 characters or more) of any secret in TEXT: a secret cut across a read counts too."""
    return sorted({s[i : i + 8] for s in secrets for i in range(len(s) - 7) if s[i : i + 8] in text})


def view_answers(af: AirflowStack, token: str, run_id: str, ui_dir: str, job_dirs: dict[str, Path]) -> dict[str, str]:
    """Every answer of the Remote jobs view about these jobs, as the browser gets it (JSON text):
    the list, each job's page data, and its output from the start, from the tail, from inside
    the first secret, and cut inside it (followed, and paged back)."""
    import httpx

    where = {"conn_id": CONN, "async_dir": ui_dir}
    out: dict[str, str] = {}
    with httpx.Client(base_url=af.base_url + "/ssh-async", timeout=60) as c:
        c.headers["Authorization"] = f"Bearer {token}"

        def get(name: str, path: str, **params: object) -> dict:
            resp = c.get(path, params={**where, **params})
            assert resp.status_code == 200, (name, resp.status_code, resp.text)
            out[name] = resp.text
            return resp.json()

        get("list", "/api/jobs", limit=500)
        for job_id, folder in job_dirs.items():
            get(f"{job_id} job", "/api/job", job_id=job_id)
            raw = (folder / "stdout").read_bytes()
            inside = raw.index(b"app:") + 8  # a few bytes into the password
            for stream in ("stdout", "stderr"):
                get(f"{job_id} {stream} start", "/api/output", job_id=job_id, stream=stream, offset=0)
                get(f"{job_id} {stream} tail", "/api/output", job_id=job_id, stream=stream, offset=-1)
            q = {"job_id": job_id, "stream": "stdout"}
            get(f"{job_id} from inside", "/api/output", **q, offset=inside)
            get(f"{job_id} cut inside", "/api/output", **q, offset=0, max_bytes=inside)
            get(f"{job_id} earlier, cut", "/api/output", **q, offset=0, max_bytes=inside, before="true")
        for task_id in UI_JOBS:
            resp = c.get("/api/ti", params={"dag_id": UI_DAG, "run_id": run_id, "task_id": task_id})
            assert resp.status_code == 200, resp.text
            out[f"{task_id} tab"] = resp.text
    return out


def view_state(af: AirflowStack, token: str, ui_dir: str, job_id: str) -> str:
    import httpx

    resp = httpx.get(
        f"{af.base_url}/ssh-async/api/job",
        params={"conn_id": CONN, "async_dir": ui_dir, "job_id": job_id},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["job"]["state"])


def check_view(
    af: AirflowStack,
    token: str,
    run_id: str,
    ui_dir: str,
    job_dirs: dict[str, Path],
    secrets: list[str],
    *,
    ended: bool,
) -> None:
    answers = view_answers(af, token, run_id, ui_dir, job_dirs)
    leaked = {name: leaks(text, secrets) for name, text in answers.items() if leaks(text, secrets)}
    where = {name: answers[name][max(0, answers[name].find(p[0]) - 200) :][:400] for name, p in leaked.items()}
    assert not leaked, f"the Remote jobs view shows secrets ({'after' if ended else 'while'} the job ran): {where}"
    for job_id in job_dirs:
        start = answers[f"{job_id} stdout start"]
        assert "dsn=postgres://app:***@db/app" in start and "api=*** ctx=*** tok=***" in start, start
        assert "err ***" in answers[f"{job_id} stderr start"]
        assert not ended or "after=***/***/***" in start, start
        assert '"progress":"step ***"' in answers[f"{job_id} job"].replace(": ", ":"), answers[f"{job_id} job"]
        assert answers[f"{job_id} from inside"].count("***") >= 1


@pytest.mark.timeout(420)
@rerun_on_stale_defer_exit
def test_the_remote_jobs_view_masks_the_secrets_while_the_job_runs_and_after_it_ended(
    airflow_stack: AirflowStack,
    remote_jobs: RemoteJobs,
    secret_values: dict[str, str],
    ui_secrets_dir: str,
    metrics: dict,
) -> None:
    from tests.e2e.test_scenarios import defer_and_hold, release

    af = airflow_stack
    job_id = remote_jobs.new("uisecrets")
    base = remote_jobs.home / ui_secrets_dir[2:]
    job_dirs = {job_id + suffix: base / (job_id + suffix) for suffix in UI_JOBS.values()}
    secrets = list(secret_values.values())
    try:
        run_id = af.trigger_dag(UI_DAG, conf={"job_id": job_id})
        defer_and_hold(af, UI_DAG, run_id, "deferred")
        af.wait_for_task_state(UI_DAG, run_id, "launched", "success", timeout=90)  # its job runs on, no trigger
        for folder in job_dirs.values():  # the host has them in clear: what the view must not show
            wait_until(
                lambda f=folder: (
                    (f / "stdout").exists() and secret_values["db_password"].encode() in (f / "stdout").read_bytes()
                ),
                30,
                f"{folder.name}'s output",
            )
        token = af.token()
        check_view(af, token, run_id, ui_secrets_dir, job_dirs, secrets, ended=False)

        release(remote_jobs, job_id)
        finish(af, UI_DAG, run_id, "success", timeout=90)
        for job in job_dirs:  # the view serves its last snapshot while it reads the host again
            wait_until(
                lambda j=job: view_state(af, token, ui_secrets_dir, j) == "succeeded",
                30,
                f"the view to show {job} ended",
            )
        time.sleep(VIEW_SECRETS_TTL)  # no trigger holds the secrets now; the view's cache is past
        check_view(af, token, run_id, ui_secrets_dir, job_dirs, secrets, ended=True)

        # Where the view found them: the sealed copy each task keeps, never in clear.
        db = sqlalchemy.create_engine(af.db_url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with db.connect() as conn:
                rows = conn.execute(
                    sqlalchemy.text("SELECT task_id, value FROM task_state_store WHERE run_id = :r AND key = :k"),
                    {"r": run_id, "k": "ssh_async_secrets"},
                ).all()
        finally:
            db.dispose()
        assert {r[0] for r in rows} == set(UI_JOBS), rows
        assert not [r for r in rows if leaks(str(r[1]), secrets)], "a task_state_store row holds a secret in clear"

        # An editor of task instances may write the store: a token copied from another task
        # (here "deferred"'s over "launched"'s) must not unmask anything. The view fails closed.
        store = f"/dags/{UI_DAG}/dagRuns/{run_id}/taskInstances/%s/state-store/ssh_async_secrets"
        copied = af.request("GET", store % "deferred")["value"]
        af.request("PUT", store % "launched", json_body={"value": copied, "expires_at": None}, ok=(204,))
        time.sleep(VIEW_SECRETS_TTL)
        bg = job_id + UI_JOBS["launched"]
        import httpx

        with httpx.Client(base_url=af.base_url + "/ssh-async", timeout=60) as c:
            c.headers["Authorization"] = f"Bearer {token}"
            q = {"conn_id": CONN, "async_dir": ui_secrets_dir, "job_id": bg}
            out = c.get("/api/output", params={**q, "offset": 0})
            detail = c.get("/api/job", params=q)
        assert out.status_code == 403 and "withheld" in out.text and not leaks(out.text, secrets), out.text
        job = detail.json()["job"]
        assert job["output_withheld"] and job["progress"] == "" and not leaks(detail.text, secrets), job
    finally:
        for folder in job_dirs.values():
            shutil.rmtree(folder, ignore_errors=True)
