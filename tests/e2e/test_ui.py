"""The Remote jobs view (issue 18) on the real stack: the plugin loaded by `airflow api-server`,
SimpleAuthManager's admin and a read-only (VIEWER) user, the real sshd with running jobs.

Jobs for the permission and listing checks are launched straight through the hook into
async_dirs of their own, so each listing can be compared with the folders on disk; the
task-instance tab uses a real DAG run (e2e_job). SQLite stack only: the view reads the
same records on both, and the suite's wall time stays modest.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import USER, RemoteJobs, job_processes, kill_jobs_processes
from tests.harness.airflow_stack import AirflowStack, wait_until
from tests.harness.sshd import home

pytestmark = [pytest.mark.e2e, pytest.mark.stacks("sqlite")]

UI = "/ssh-async"
CONN = "test_asyncdash"
ORIGIN_DAG = "e2e_job"  # a DAG the stack has parsed: the viewer may read it
UI_DAG, UI_DIR = "e2e_ui", "~/.airflow_async_ui"  # its jobs live in an async_dir of their own (dags/ssh_async_e2e.py)
REFRESHED = 5.5  # just past the view's refresh period (hosts.REFRESH): the next look asks the host
HOST_BOUND = 12.0  # AIRFLOW__SSH_ASYNC__UI_HOST_TIMEOUT in tests/e2e/conftest.py


def client(af: AirflowStack, token: str | None = None, cookie: str | None = None) -> httpx.Client:
    c = httpx.Client(base_url=af.base_url + UI, timeout=60)
    if token:
        c.headers["Authorization"] = f"Bearer {token}"
    if cookie:
        c.cookies.set("_token", cookie)
    return c


@pytest.fixture(scope="module")
def tokens(airflow_stack: AirflowStack) -> dict[str, str]:
    """Tokens of the admin and the viewer, once a DAG of the viewer's has used CONN (the viewer
    cannot read connections: it may ask about CONN's host because a DAG it reads uses it)."""
    af = airflow_stack
    job_id = f"ui-records-{os.urandom(3).hex()}"
    run_id = af.trigger_dag(UI_DAG, conf={"job_id": job_id, "command": "echo recorded"})
    try:
        assert af.wait_for_dag_run(UI_DAG, run_id, timeout=120) == "success"
    finally:
        shutil.rmtree(home(USER) / UI_DIR[2:] / job_id, ignore_errors=True)
    return {"admin": af.token(), "viewer": af.token(af.viewer_username)}


class UIJobs:
    """Jobs launched through the hook into an async_dir of their own; all gone at teardown."""

    def __init__(self, name: str) -> None:
        self.async_dir = f"~/.airflow_async_ui_{name}_{os.urandom(3).hex()}"
        self.path = home(USER) / self.async_dir[2:]
        self.ids: list[str] = []

    def launch(self, name: str, command: str, dag: bool = True) -> str:
        from airflow_ssh_async.hooks import SSHAsyncJobHook

        job_id = f"ui-{name}-{os.urandom(3).hex()}"
        self.ids.append(job_id)
        origin = f"{ORIGIN_DAG}/job/manual__ui_{job_id}/-1" if dag else ""
        SSHAsyncJobHook(CONN, async_dir=self.async_dir).launch(job_id, command, origin=origin)
        wait_until(lambda: (self.path / job_id / "job.json").exists(), 30, f"{job_id}'s job.json", interval=0.1)
        return job_id

    def cleanup(self) -> None:
        kill_jobs_processes(self.ids)
        shutil.rmtree(self.path, ignore_errors=True)


@pytest.fixture
def ui_jobs(request: pytest.FixtureRequest) -> Iterator[UIJobs]:
    jobs = UIJobs(request.node.name[5:25].replace("[", "_").replace("]", ""))
    try:
        yield jobs
    finally:
        jobs.cleanup()


def jobs_of(c: httpx.Client, async_dir: str, conn_id: str = CONN, **params: Any) -> dict[str, Any]:
    resp = c.get("/api/jobs", params={"conn_id": conn_id, "async_dir": async_dir, "limit": 500, **params})
    assert resp.status_code == 200, resp.text
    return resp.json()


def job_state(c: httpx.Client, async_dir: str, job_id: str) -> str:
    resp = c.get("/api/job", params={"conn_id": CONN, "async_dir": async_dir, "job_id": job_id})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["job"]["state"])


def wait_state(c: httpx.Client, async_dir: str, job_id: str, state: str, timeout: float = 30) -> None:
    wait_until(lambda: job_state(c, async_dir, job_id) == state, timeout, f"{job_id} to show {state}")


COUNTER = (
    'i=0; while true; do i=$((i+1)); echo "line $i"; echo "progress $i" >> "$AIRFLOW_ASYNC_PROGRESS"; sleep 0.2; done'
)


# --- authentication -----------------------------------------------------------------------


def test_plugin_is_registered_and_every_route_needs_airflow_authentication(
    airflow_stack: AirflowStack, tokens: dict[str, str]
) -> None:
    from fastapi.routing import APIRoute
    from starlette.routing import Route

    from airflow_ssh_async.ui.app import app

    af = airflow_stack
    plugins = af.request("GET", "/plugins", params={"limit": 100})["plugins"]
    ours = [p for p in plugins if p["name"] == "ssh_async_jobs"]
    assert ours, f"plugin not loaded; plugins: {[p['name'] for p in plugins]}"
    views = {v["url_route"]: v for v in ours[0]["external_views"]}
    assert views["remote-jobs"]["destination"] == "nav" and views["remote-jobs"]["href"] == f"{UI}/"
    assert views["remote-job"]["destination"] == "task_instance"

    routes = [(m, r.path) for r in app.routes if isinstance(r, (APIRoute, Route)) for m in sorted(r.methods or ())]
    routes = [(m, p.replace("{name}", "common.js")) for m, p in routes if m != "HEAD"]
    assert len(routes) >= 11, routes  # pages, static, session, hosts, jobs, job, output, ti, kill
    params = {"conn_id": CONN, "job_id": "x", "dag_id": ORIGIN_DAG, "run_id": "r", "task_id": "job"}
    with client(af) as anonymous, client(af, cookie="not-a-jwt") as forged, client(af, tokens["viewer"]) as viewer:
        for method, path in routes:
            kw: dict[str, Any] = {"params": params} if method == "GET" else {"json": {"conn_id": CONN, "job_id": "x"}}
            resp = anonymous.request(method, path, **kw)
            assert resp.status_code == 401, f"{method} {path} without credentials: HTTP {resp.status_code}"
            resp = forged.request(method, path, **kw)
            assert resp.status_code in (401, 403), f"{method} {path} with a forged cookie: HTTP {resp.status_code}"
            if method == "GET":  # and it is a real route: a valid token gets past authentication
                assert viewer.request(method, path, **kw).status_code not in (401, 403), f"{method} {path}"
        page = viewer.get("/")
        assert page.status_code == 200 and "Remote jobs" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]


# --- permissions, following, kill, audit log ---------------------------------------------------


def test_viewer_follows_but_cannot_kill_and_admin_kills_the_process_group(
    airflow_stack: AirflowStack, tokens: dict[str, str], ui_jobs: UIJobs
) -> None:
    af = airflow_stack
    dag_job = ui_jobs.launch("dag", COUNTER)
    cli_job = ui_jobs.launch("cli", "sleep 300", dag=False)
    d = ui_jobs.async_dir
    with client(af, tokens["viewer"]) as viewer:
        listed = {j["job_id"]: j for j in jobs_of(viewer, d)["jobs"]}
        assert set(listed) == {dag_job}, "the viewer sees the DAG's job, not the one no DAG launched"
        assert listed[dag_job]["origin"]["dag_id"] == ORIGIN_DAG and listed[dag_job]["state"] == "running"
        assert viewer.get("/api/job", params={"conn_id": CONN, "async_dir": d, "job_id": cli_job}).status_code == 404

        # Follows: the output grows between two reads, each from where the last ended.
        q = {"conn_id": CONN, "async_dir": d, "job_id": dag_job, "stream": "stdout"}
        first = wait_until(
            lambda: (r := viewer.get("/api/output", params={**q, "offset": 0}).json())["text"] and r, 30, "output"
        )
        time.sleep(REFRESHED)  # past the cache's refresh: the sizes are read again
        later = wait_until(
            lambda: (r := viewer.get("/api/output", params={**q, "offset": first["next_offset"]}).json())["text"] and r,
            30,
            "more output",
        )
        assert later["offset"] == first["next_offset"] and later["next_offset"] > first["next_offset"]
        assert "line 1\n" in first["text"] and "line " in later["text"]

        # Cannot kill: 403, and the job runs on.
        resp = viewer.post("/api/kill", json={"conn_id": CONN, "async_dir": d, "job_id": dag_job, "grace": 1})
        assert resp.status_code == 403, resp.text
        time.sleep(1)
        assert job_processes(dag_job), "the viewer's refused kill stopped the job"
        assert job_state(viewer, d, dag_job) == "running"

    # The browser's way: the cookie. Without the CSRF header, or not as JSON, refused.
    with client(af, cookie=tokens["admin"]) as browser:
        body = {"conn_id": CONN, "async_dir": d, "job_id": dag_job, "grace": 1}
        assert browser.post("/api/kill", json=body).status_code == 403
        token = browser.get("/api/session").json()["csrf_token"]
        resp = browser.post("/api/kill", content=json.dumps(body), headers={"X-CSRF-Token": token})
        assert resp.status_code == 415, "a form or text/plain POST (what another site can send) is refused"
        assert job_processes(dag_job)
        resp = browser.post("/api/kill", json=body, headers={"X-CSRF-Token": token})
        assert resp.status_code == 200, resp.text
        assert resp.json()["outcome"] == "cancelled"
        wait_until(lambda: not job_processes(dag_job), 20, f"{dag_job}'s process group to be gone")
        wait_state(browser, d, dag_job, "cancelled")

    with client(af, tokens["admin"]) as admin:  # the admin sees the CLI job; a Bearer token needs no CSRF token
        assert cli_job in {j["job_id"] for j in jobs_of(admin, d)["jobs"]}
        resp = admin.post("/api/kill", json={"conn_id": CONN, "async_dir": d, "job_id": cli_job, "grace": 0})
        assert resp.status_code == 200 and resp.json()["outcome"] == "cancelled", resp.text
        wait_until(lambda: not job_processes(cli_job), 20, f"{cli_job}'s processes to be gone")

    logs = af.request("GET", "/eventLogs", params={"event": "ssh_async.kill", "limit": 100})["event_logs"]
    kills = {json.loads(e["extra"])["job_id"]: e for e in logs if e.get("extra")}
    assert set(kills) >= {dag_job, cli_job}, logs
    entry = kills[dag_job]
    assert entry["owner"] == af.username and entry["dag_id"] == ORIGIN_DAG
    extra = json.loads(entry["extra"])
    assert extra["conn_id"] == CONN and "127.0.0.1" in extra["host"] and extra["outcome"] == "cancelled"
    assert not any(json.loads(e["extra"]).get("owner") == af.viewer_username for e in logs)


# --- listing, damaged folders, hosts that do not answer --------------------------------------------


def test_listing_shows_exactly_the_hosts_jobs_and_a_damaged_folder_with_its_reason(
    airflow_stack: AirflowStack, tokens: dict[str, str], ui_jobs: UIJobs
) -> None:
    af = airflow_stack
    ids = [ui_jobs.launch(f"n{i}", f"echo job {i}") for i in range(3)]
    ids.append(ui_jobs.launch("slow", "sleep 300", dag=False))
    damaged = ui_jobs.path / "ui-damaged"
    damaged.mkdir(mode=0o700)
    (damaged / "job.json").write_text('{"id": "ui-damaged", "pid": ')  # half-written
    owner = ui_jobs.path.stat()
    for p in (damaged, damaged / "job.json"):
        os.chown(p, owner.st_uid, owner.st_gid)
    on_disk = {p.name for p in ui_jobs.path.iterdir() if p.is_dir() and not p.name.startswith(".")}
    time.sleep(REFRESHED)  # past the cache's refresh
    with client(af, tokens["admin"]) as admin:
        data = jobs_of(admin, ui_jobs.async_dir)
        assert not data["error"], data["error"]
        assert {j["job_id"] for j in data["jobs"]} == on_disk == {*ids, "ui-damaged"}
        rows = {j["job_id"]: j for j in data["jobs"]}
        assert rows["ui-damaged"]["state"] == "damaged" and "job.json" in rows["ui-damaged"]["reason"], rows
        assert rows[ids[-1]]["state"] == "running" and rows[ids[-1]]["origin"] is None
        assert data["resolved_dir"] == str(ui_jobs.path)

        page = jobs_of(admin, ui_jobs.async_dir, limit=2)
        assert len(page["jobs"]) == 2 and page["total"] == 5
        starts = [j["start_time"] for j in data["jobs"] if j["start_time"] is not None]
        assert starts == sorted(starts, reverse=True), "newest first"
        only_running = jobs_of(admin, ui_jobs.async_dir, state="running")
        assert {j["job_id"] for j in only_running["jobs"]} == {ids[-1]}


def test_a_host_that_does_not_answer_shows_its_error_in_its_own_section(
    airflow_stack: AirflowStack, tokens: dict[str, str], ui_jobs: UIJobs
) -> None:
    af = airflow_stack
    ui_jobs.launch("ok", "echo fine")
    with client(af, tokens["admin"]) as admin, concurrent.futures.ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        hung = pool.submit(jobs_of, admin, "~/.airflow_async", "e2e_ui_silent")
        time.sleep(0.5)
        healthy = jobs_of(admin, ui_jobs.async_dir)  # answers while the hung host is still being waited for
        healthy_at = time.monotonic() - started
        assert not healthy["error"] and len(healthy["jobs"]) == 1, healthy
        silent = hung.result(timeout=HOST_BOUND + 30)
        took = time.monotonic() - started
    assert silent["error"] and silent["error_kind"] in ("timeout", "unreachable"), silent
    assert took < HOST_BOUND + 10, f"the hung host took {took:.1f}s, bound {HOST_BOUND}s"
    assert healthy_at < took, "the healthy host waited for the hung one"
    with client(af, tokens["admin"]) as admin:
        unknown = jobs_of(admin, "~/.airflow_async", "e2e_ui_no_such_conn")
    assert unknown["error_kind"] == "unknown_connection" and "e2e_ui_no_such_conn" in unknown["error"], unknown
    with client(af, tokens["viewer"]) as viewer:  # no DAG of the viewer's uses it, and it may not read it
        refused = viewer.get("/api/jobs", params={"conn_id": "e2e_ui_silent"})
    assert refused.status_code == 403 and "127.0.0.1" not in refused.text, refused.text


def test_ten_viewers_cost_the_host_what_one_does(
    airflow_stack: AirflowStack, tokens: dict[str, str], ui_jobs: UIJobs
) -> None:
    af = airflow_stack
    for i in range(3):
        ui_jobs.launch(f"c{i}", COUNTER)
    time.sleep(REFRESHED)
    with client(af, tokens["viewer"]) as viewer:
        good = wait_until(  # a snapshot that read the host (on a starved machine the first may time out)
            lambda: (a := jobs_of(viewer, ui_jobs.async_dir))["jobs"] and a, 60, "a snapshot of the three jobs"
        )
        before = good["ssh_calls"]
        time.sleep(REFRESHED)  # the snapshot is stale: the next looks start one refresh, for all ten
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda _: jobs_of(viewer, ui_jobs.async_dir), range(10)))
        after = wait_until(  # that one refresh, counted once it has run
            lambda: (n := jobs_of(viewer, ui_jobs.async_dir)["ssh_calls"]) >= before + 2 and n, 30, "the refresh"
        )
        time.sleep(1)
        after = max(after, jobs_of(viewer, ui_jobs.async_dir)["ssh_calls"])
    # On a starved machine the one refresh may hit the per-host bound: those answers show the
    # host's error (as they must); every other answer is the one shared snapshot of the three jobs.
    served = [a for a in answers if not a["error"]]
    assert served and all(len(a["jobs"]) == 3 for a in served), [a["error"] for a in answers]
    # One refresh: list, one batched status, one batched progress read.
    assert 2 <= after - before <= 3, f"{after - before} SSH calls for ten simultaneous viewers"


# --- the task instance's tab and hosts from Airflow's records -----------------------------------------


def test_hosts_come_from_airflow_records_and_the_task_instance_tab_finds_its_job(
    airflow_stack: AirflowStack, tokens: dict[str, str], remote_jobs: RemoteJobs
) -> None:
    from tests.e2e.test_scenarios import defer_and_hold, held_job, release

    af = airflow_stack
    job_id = remote_jobs.new("ui-tab")
    run_id = af.trigger_dag(UI_DAG, conf={"job_id": job_id, "command": held_job(remote_jobs, job_id, "tab")})
    defer_and_hold(af, UI_DAG, run_id)
    try:
        with client(af, tokens["viewer"]) as viewer:
            hosts = viewer.get("/api/hosts").json()["hosts"]
            assert {"conn_id": CONN, "async_dir": UI_DIR, "become_user": "", "become_method": ""} in hosts, hosts
            q = {"dag_id": UI_DAG, "run_id": run_id, "task_id": "job", "map_index": "{MAP_INDEX}"}
            found = viewer.get("/api/ti", params=q)
            assert found.status_code == 200, found.text
            assert found.json() == {**found.json(), "job_id": job_id, "conn_id": CONN, "async_dir": UI_DIR}
            detail = viewer.get("/api/job", params={"conn_id": CONN, "async_dir": UI_DIR, "job_id": job_id})
            assert detail.status_code == 200, detail.text
            origin = detail.json()["job"]["origin"]
            assert origin["run_id"] == run_id and origin["try_number"] == 1 and detail.json()["can_kill"] is False
            other = viewer.get("/api/ti", params={**q, "task_id": "no_such_task"})
            assert other.status_code == 404
    finally:
        release(remote_jobs, job_id)
    assert af.wait_for_dag_run(UI_DAG, run_id, timeout=90) == "success"
    shutil.rmtree(home(USER) / UI_DIR[2:] / job_id, ignore_errors=True)


# --- a task's become_user (issue 19) ------------------------------------------------------------


def test_a_become_users_job_is_listed_followed_and_killed_through_sudo(
    airflow_stack: AirflowStack, tokens: dict[str, str]
) -> None:
    from tests.harness.become import OTHER, TARGET, processes_of, sudoers_rules

    af = airflow_stack
    dag_id, async_dir = "e2e_ui_become", "~/.airflow_async_ui_become"  # dags/ssh_async_e2e.py
    job_id = f"ui-become-{os.urandom(3).hex()}"
    section = {"conn_id": CONN, "async_dir": async_dir, "become_user": TARGET, "become_method": "sudo"}
    as_target = {"become_user": TARGET, "become_method": "sudo"}
    folder = home(TARGET) / async_dir[2:] / job_id
    with sudoers_rules():
        try:
            run_id = af.trigger_dag(dag_id, conf={"job_id": job_id, "command": COUNTER})
            af.wait_for_task_state(dag_id, run_id, "job", "deferred", timeout=90)
            with client(af, tokens["viewer"]) as viewer:
                assert section in viewer.get("/api/hosts").json()["hosts"], "the task's user is a section"
                tab = viewer.get("/api/ti", params={"dag_id": dag_id, "run_id": run_id, "task_id": "job"}).json()
                assert (tab["job_id"], tab["become_user"]) == (job_id, TARGET), tab
                rows = {j["job_id"]: j for j in jobs_of(viewer, async_dir, **as_target)["jobs"]}
                assert rows[job_id]["state"] == "running" and rows[job_id]["facts"]["user"] == TARGET, rows
                q = {"conn_id": CONN, "async_dir": async_dir, "job_id": job_id, **as_target}
                text = wait_until(
                    lambda: viewer.get("/api/output", params={**q, "offset": 0}).json()["text"], 30, "output"
                )
                assert text.startswith("line 1\n"), text
                # Not the login's: without the elevation the job is not there.
                assert viewer.get("/api/job", params={**q, "become_user": ""}).status_code == 404
                # A user no DAG of the viewer's runs jobs as: refused before anything connects.
                other = viewer.get("/api/jobs", params={"conn_id": CONN, "become_user": OTHER})
                assert other.status_code == 403, other.text
            with client(af, tokens["admin"]) as admin:
                body = {**q, "grace": 1}
                resp = admin.post("/api/kill", json=body)
                assert resp.status_code == 200 and resp.json()["outcome"] == "cancelled", resp.text
                wait_until(
                    lambda: admin.get("/api/job", params=q).json()["job"]["state"] == "cancelled",
                    30,
                    f"{job_id} to show cancelled",
                )
            pid = rows[job_id]["pid"]
            wait_until(lambda: not [p for p in processes_of(TARGET) if p[1] == pid], 20, "the group to be gone")
            assert af.wait_for_dag_run(dag_id, run_id, timeout=90) == "failed", "a cancelled job fails its task"
        finally:
            kill_jobs_processes([job_id])
            shutil.rmtree(folder, ignore_errors=True)
