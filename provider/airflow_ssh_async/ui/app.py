"""The Remote jobs view: a FastAPI app the plugin mounts at ``/ssh-async``.

Every route, the static pages included, depends on :func:`access.current_user`
(401 without Airflow's token). Jobs are filtered per user (access.py) before
anything about them is sent. What the browser gets is JSON built from
whitelisted fields (records.py) and pages that put every value in with
``textContent``; a Content-Security-Policy forbids inline script, so even a
value that slipped into markup could not run.

Here: the app, its headers and its routes. What a query parameter may be is
params.py; which hosts and jobs a user may ask about, scope.py; masking what
is shown of a job, masks.py; the audit record of a kill, audit.py.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from airflow_ssh_async.ui import hosts, sources
from airflow_ssh_async.ui.access import Access, CurrentUser, check_forgery, csrf_token, user_name
from airflow_ssh_async.ui.audit import audit_kill
from airflow_ssh_async.ui.masks import Masking, masked, task_masker, task_maskers
from airflow_ssh_async.ui.params import async_dir_param, become_param, conn_id_param
from airflow_ssh_async.ui.records import DAMAGED, JobRow, lead_cut, select, state_counts, whole_utf8
from airflow_ssh_async.ui.scope import find_job, may_ask, sections, tries_of, try_of, visible

URL_PREFIX = "/ssh-async"
STREAMS = ("stdout", "stderr")
DEFAULT_CHUNK = 64 * 1024
MAX_GRACE = 3600
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}

app = FastAPI(title="SSH async: Remote jobs", docs_url=None, redoc_url=None, openapi_url=None)


@app.middleware("http")
async def _headers(request: Request, call_next: Any) -> Response:
    response: Response = await call_next(request)
    for k, v in SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)
    return response


def _static(name: str) -> Response:
    suffix = name[name.rfind(".") :]
    if "/" in name or suffix not in STATIC_TYPES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
    try:
        body = resources.files("airflow_ssh_async.ui").joinpath("static", name).read_bytes()
    except (FileNotFoundError, OSError):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file") from None
    return Response(body, media_type=STATIC_TYPES[suffix])


# --- pages --------------------------------------------------------------------------


@app.get("/", include_in_schema=False)
async def index_page(user: Any = CurrentUser) -> Response:
    return _static("index.html")


@app.get("/job", include_in_schema=False)
async def job_page(user: Any = CurrentUser) -> Response:
    return _static("job.html")


@app.get("/ti", include_in_schema=False)
async def ti_page(user: Any = CurrentUser) -> Response:
    return _static("job.html")


@app.get("/static/{name}", include_in_schema=False)
async def static_file(name: str, user: Any = CurrentUser) -> Response:
    return _static(name)


# --- data ---------------------------------------------------------------------------


@app.get("/api/session")
async def session_info(user: Any = CurrentUser) -> dict[str, Any]:
    """Who is signed in, and the token a kill must carry (readable by this origin only)."""
    return {"user": user_name(user), "csrf_token": csrf_token(user)}


@app.get("/api/hosts")
async def host_list(user: Any = CurrentUser) -> dict[str, Any]:
    """The host sections found in Airflow's records, for the DAGs this user may read."""
    found = await sections(Access(user), fresh=True)
    keys = ("conn_id", "async_dir", "become_user", "become_method")
    return {"hosts": [{k: getattr(s, k) for k in keys} for s in found]}


def _snapshot_head(snap: hosts.Snapshot) -> dict[str, Any]:
    return {
        "conn_id": snap.conn_id,
        "async_dir": snap.async_dir,
        "become_user": snap.become_user,
        "become_method": snap.become_method,
        "resolved_dir": snap.resolved_dir,
        "host": snap.label,
        "error": snap.error,
        "error_kind": snap.error_kind,
        "now": snap.now,
        "read_seconds": round(snap.seconds, 3),
        "age_seconds": round(time.monotonic() - snap.read_at, 1),
        "ssh_calls": hosts.CACHE.calls.get(snap.conn_id, 0),
    }


@app.get("/api/jobs")
async def job_list(
    user: Any = CurrentUser,
    conn_id: str = Query(...),
    async_dir: str | None = Query(None),
    become_user: str = Query(""),
    become_method: str = Query(""),
    state: list[str] = Query(default=[]),  # noqa: B008 - FastAPI's way to declare a repeated parameter
    dag_id: str = Query(""),
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    """One host's section: the jobs this user may see, filtered, newest first, one page."""
    conn, become = conn_id_param(conn_id), become_param(become_user, become_method)
    access = Access(user)
    await may_ask(access, conn, become[0])
    snap = await hosts.CACHE.snapshot(conn, async_dir_param(async_dir), *become)
    rows = await run_in_threadpool(visible, access, conn, snap.rows)
    page, total = select(rows, states=state, dag_id=dag_id, offset=offset, limit=limit)
    tries = await tries_of(page)
    maskers = await task_maskers(page)
    return {
        **_snapshot_head(snap),
        "total": total,
        "visible": len(rows),
        "counts": state_counts(rows),
        "dag_ids": sorted({r.dag_id for r in rows if r.dag_id}),
        "offset": offset,
        "limit": limit,
        "jobs": [_shown(r, snap, try_of(tries, r), maskers.get(r.origin.key) if r.origin else None) for r in page],
    }


def _shown(row: JobRow, snap: hosts.Snapshot, try_number: int | None, masking: Masking | None) -> dict[str, Any]:
    """ROW as the browser gets it: what the job wrote (its progress line) and what the host
    holds from the launch (its working directory) masked with the launching task's secrets;
    no progress line where the output is withheld."""
    shown = row.to_dict(snap.now, snap.progress.get(row.job_id, ""), try_number)
    shown["output_withheld"] = masking.withheld if masking else ""
    if masking and masking.withheld:
        shown["progress"] = ""
    elif masking and masking.masker:
        shown["progress"] = masking.masker.mask(shown["progress"])
        shown["facts"] = masking.masker.redact(shown["facts"])
    return shown


@app.get("/api/job")
async def job_detail(
    user: Any = CurrentUser,
    conn_id: str = Query(...),
    async_dir: str | None = Query(None),
    job_id: str = Query(...),
    become_user: str = Query(""),
    become_method: str = Query(""),
) -> dict[str, Any]:
    snap, row, access = await find_job(user, conn_id, async_dir, job_id, become_param(become_user, become_method))
    can_kill = await run_in_threadpool(access.can_kill, snap.conn_id, row)
    can_read = await run_in_threadpool(access.can_read_output, snap.conn_id, row)
    command = None
    if row.origin is not None:
        o = row.origin
        command = await run_in_threadpool(sources.rendered_command, o.dag_id, o.run_id, o.task_id, o.map_index)
    masking = await task_masker(row)
    return {
        **_snapshot_head(snap),
        "job": _shown(row, snap, try_of(await tries_of([row]), row), masking),
        "command": masking.masker.mask(command) if command else command,
        "can_kill": can_kill,
        "can_read_output": can_read,
    }


@app.get("/api/output")
async def job_output(
    user: Any = CurrentUser,
    conn_id: str = Query(...),
    async_dir: str | None = Query(None),
    job_id: str = Query(...),
    become_user: str = Query(""),
    become_method: str = Query(""),
    stream: str = Query("stdout"),
    offset: int = Query(-1, ge=-1),
    max_bytes: int = Query(DEFAULT_CHUNK, ge=1, le=hosts.MAX_CHUNK),
    before: bool = Query(False),
) -> dict[str, Any]:
    """At most MAX_BYTES of a stream from OFFSET (-1: the tail), ending on a whole character.

    BEFORE: the chunk ends where the caller's text begins (*Load earlier*), so
    an end that may be the start of a secret is masked rather than held back.
    """
    if stream not in STREAMS:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"stream is one of {', '.join(STREAMS)}")
    snap, row, access = await find_job(user, conn_id, async_dir, job_id, become_param(become_user, become_method))
    if not await run_in_threadpool(access.can_read_output, snap.conn_id, row):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "you may not read this job's output (its DAG's task logs)")
    if row.state == DAMAGED:
        return {"stream": stream, "offset": 0, "next_offset": 0, "size": 0, "text": "", "missing": True}
    masking = await task_masker(row)
    if masking.withheld:
        raise HTTPException(status.HTTP_403_FORBIDDEN, masking.withheld)
    size = dict(row.sizes).get(stream, 0)
    start = max(0, size - max_bytes) if offset < 0 else offset
    if start >= size:  # nothing new since the snapshot: no SSH call
        return {"stream": stream, "offset": start, "next_offset": start, "size": size, "text": "", "missing": False}
    want = min(max_bytes, size - start)  # only what the snapshot saw: those bytes do not change
    try:
        chunk = await hosts.CACHE.read(snap, row.job_dir, stream, start, want, size)
    except Exception as exc:  # a host gone since the listing: the page shows it and tries again
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"{snap.label}: {exc}") from None
    if chunk.shrunk:
        start, data = 0, b""
    else:
        data = chunk.data
    if start > 0:
        cut = lead_cut(data, at_tail=offset < 0)
        start, data = start + cut, data[cut:]
    whole = whole_utf8(data)
    text = data[:whole].decode("utf-8", "replace")
    masker = masking.masker
    if masker:
        # The chunk's end is a cut unless it is the end of a finished job's stream.
        end = "mask" if before else "hold" if not row.finished or start + len(data) < size else "end"
        text, whole = masked(masker, text, whole, lead=start > 0, end=end)
    return {
        "stream": stream,
        "offset": start,
        "next_offset": start + whole,
        "size": max(chunk.size, start + whole),
        "text": text,
        "missing": chunk.missing,
        "masked": bool(masker),
    }


@app.get("/api/ti")
async def task_instance_job(
    user: Any = CurrentUser,
    dag_id: str = Query(...),
    run_id: str = Query(...),
    task_id: str = Query(...),
    map_index: str = Query("-1"),
) -> dict[str, Any]:
    """Which job a task instance of this provider has (for its Remote job tab)."""
    index = int(map_index) if map_index.lstrip("-").isdigit() else -1  # "{MAP_INDEX}" unfilled: not mapped
    access = Access(user)
    if not await run_in_threadpool(access.dag, dag_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"you may not read DAG {dag_id!r}")
    job, why = await run_in_threadpool(sources.task_job, dag_id, run_id, task_id, index)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, why)
    return {
        "conn_id": job.conn_id,
        "async_dir": job.async_dir,
        "become_user": job.become_user,
        "become_method": job.become_method,
        "job_id": job.job_id,
        "found_in": job.found_in,
        "try_number": job.try_number,
    }


@app.post("/api/kill")
async def kill_job(request: Request, user: Any = CurrentUser) -> JSONResponse:
    """SIGTERM the job's process group, SIGKILL after GRACE seconds; written to the audit log.

    The body is read here, after the forgery check, so that a form or text
    POST is refused as such (415) whatever it holds.
    """
    check_forgery(request, user)
    try:
        body = await request.json()
        conn_id, job_id = str(body["conn_id"]), str(body["job_id"])
        grace = int(body.get("grace", 10))
        become = become_param(body.get("become_user"), body.get("become_method"))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "give conn_id, job_id and grace (seconds)") from None
    if not 0 <= grace <= MAX_GRACE:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"grace is 0 to {MAX_GRACE} seconds")
    snap, row, access = await find_job(user, conn_id, body.get("async_dir"), job_id, become, fresh=True)
    if not await run_in_threadpool(access.can_kill, snap.conn_id, row):
        what = f"edit connection {snap.conn_id!r}"
        if row.origin:
            what = f"edit task instances of DAG {row.origin.dag_id!r}"
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"killing this job needs permission to {what}")
    if row.state == DAMAGED:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id!r} is damaged ({row.reason}): nothing to signal")
    try:
        outcome = await hosts.CACHE.cancel(snap, row.job_dir, grace)
    except Exception as exc:
        await run_in_threadpool(audit_kill, user, snap, row, grace, f"error: {exc}")
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"{snap.label}: {exc}") from None
    await run_in_threadpool(audit_kill, user, snap, row, grace, outcome)
    return JSONResponse({"outcome": outcome, "job_id": row.job_id, "host": snap.label})
