"""The Remote jobs view: a FastAPI app the plugin mounts at ``/ssh-async``.

Every route, the static pages included, depends on :func:`access.current_user`
(401 without Airflow's token). Jobs are filtered per user (access.py) before
anything about them is sent. What the browser gets is JSON built from
whitelisted fields (records.py) and pages that put every value in with
``textContent``; a Content-Security-Policy forbids inline script, so even a
value that slipped into markup could not run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from airflow_ssh_async.become import validate_become
from airflow_ssh_async.job import DEFAULT_ASYNC_DIR, JOB_ID_RE
from airflow_ssh_async.masking import MASK, Masker, airflow_min_length, can_seal
from airflow_ssh_async.ui import hosts, sources
from airflow_ssh_async.ui.access import Access, CurrentUser, check_forgery, csrf_token, user_name
from airflow_ssh_async.ui.records import DAMAGED, JobRow, lead_cut, select, state_counts, whole_utf8

URL_PREFIX = "/ssh-async"
STREAMS = ("stdout", "stderr")
DEFAULT_CHUNK = 64 * 1024
MAX_GRACE = 3600
AUDIT_EVENT = "ssh_async.kill"
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


def _conn_id(value: str) -> str:
    value = value.strip()
    # Airflow's own rule for connection ids, so a typed id never reaches a lookup malformed.
    if not value or len(value) > 250 or not all(c.isalnum() or c in "._-" for c in value):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"invalid connection id {value[:80]!r}")
    return value


def _async_dir(value: str | None) -> str:
    value = (value or "").strip() or DEFAULT_ASYNC_DIR
    if "\x00" in value or "\x1f" in value or len(value) > 4096:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid async_dir")
    return value


def _become(user: object, method: object) -> tuple[str, str]:
    """(become_user, become_method) as a section names them; "" is the connection's own."""
    if user in (None, "") and method in (None, ""):
        return "", ""
    try:
        name, how = validate_become(user, method)
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    return name or "", how


def _job_id(value: str) -> str:
    if not JOB_ID_RE.fullmatch(value):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"invalid job id {value[:80]!r}")
    return value


def _visible(access: Access, conn_id: str, rows: list[JobRow]) -> list[JobRow]:
    access.prime(r.origin.dag_id for r in rows if r.origin)
    return [r for r in rows if access.can_see(conn_id, r)]


@app.get("/api/session")
async def session_info(user: Any = CurrentUser) -> dict[str, Any]:
    """Who is signed in, and the token a kill must carry (readable by this origin only)."""
    return {"user": user_name(user), "csrf_token": csrf_token(user)}


_SECTIONS: list[tuple[float, list[tuple[str, sources.Section]]]] = []
SECTIONS_TTL = 30.0


async def _sections(access: Access, *, fresh: bool = False) -> list[sources.Section]:
    """The host sections in Airflow's records for the DAGs this user may read (records cached briefly)."""
    now = time.monotonic()
    if fresh or not _SECTIONS or now - _SECTIONS[0][0] > SECTIONS_TTL:
        _SECTIONS[:] = [(now, await run_in_threadpool(sources.recorded_sections))]
    found = _SECTIONS[0][1]
    readable = await run_in_threadpool(access.readable_dag_ids, {d for d, _ in found})
    return sorted({s for d, s in found if d in readable}, key=lambda s: (s.conn_id, s.become_user, s.async_dir))


async def _may_ask(access: Access, conn_id: str, become_user: str = "") -> None:
    """A host is asked only for a connection the user may read, or one their DAGs use (else 403):
    a typed id must not tell who cannot read it where a connection points, or make us connect.
    Likewise a BECOME_USER: one a DAG of theirs runs its jobs as on that connection, or any
    for whoever may read the connection (who could log in and run sudo as well)."""
    if await run_in_threadpool(access.connection, conn_id):
        return
    for fresh in (False, True):  # a connection a DAG began to use since the records were read
        found = await _sections(access, fresh=fresh)
        if any(s.conn_id == conn_id and (not become_user or s.become_user == become_user) for s in found):
            return
    as_user = f" as {become_user!r}" if become_user else ""
    raise HTTPException(
        status.HTTP_403_FORBIDDEN,
        f"connection {conn_id!r} is used{as_user} by no DAG you may read, and you may not read the connection",
    )


@app.get("/api/hosts")
async def host_list(user: Any = CurrentUser) -> dict[str, Any]:
    """The host sections found in Airflow's records, for the DAGs this user may read."""
    found = await _sections(Access(user), fresh=True)
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
    conn, become = _conn_id(conn_id), _become(become_user, become_method)
    access = Access(user)
    await _may_ask(access, conn, become[0])
    snap = await hosts.CACHE.snapshot(conn, _async_dir(async_dir), *become)
    rows = await run_in_threadpool(_visible, access, conn, snap.rows)
    page, total = select(rows, states=state, dag_id=dag_id, offset=offset, limit=limit)
    tries = await _tries(page)
    maskers = await _maskers(page)
    return {
        **_snapshot_head(snap),
        "total": total,
        "visible": len(rows),
        "counts": state_counts(rows),
        "dag_ids": sorted({r.dag_id for r in rows if r.dag_id}),
        "offset": offset,
        "limit": limit,
        "jobs": [_shown(r, snap, _try(tries, r), maskers.get(r.origin.key) if r.origin else None) for r in page],
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


def _try(tries: dict[tuple[str, str, str, int], int], row: JobRow) -> int | None:
    return tries.get(row.origin.key) if row.origin else None


async def _tries(rows: list[JobRow]) -> dict[tuple[str, str, str, int], int]:
    """The launching try of each row's task instance (one query for a page)."""
    jobs = [(r.origin, r.start_time) for r in rows if r.origin is not None]
    try:
        return await run_in_threadpool(sources.launching_tries, jobs)
    except Exception:  # the tries are a courtesy: a DB hiccup must not hide the jobs
        return {}


async def _find(
    user: Any,
    conn_id: str,
    async_dir: str | None,
    job_id: str,
    become: tuple[str, str] = ("", ""),
    *,
    fresh: bool = False,
) -> tuple[hosts.Snapshot, JobRow, Access]:
    """The job as this user may see it; 404 when it is not there or not theirs to see (no hint which)."""
    conn, job = _conn_id(conn_id), _job_id(job_id)
    access = Access(user)
    await _may_ask(access, conn, become[0])
    snap = await hosts.CACHE.snapshot(conn, _async_dir(async_dir), *become, fresh=fresh)
    if snap.error:
        status_code = 404 if snap.error_kind == "unknown_connection" else 502
        raise HTTPException(status_code, f"{snap.label or conn}: {snap.error}")
    row = snap.find(job)
    if row is None or not await run_in_threadpool(access.can_see, conn, row):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job!r} on {snap.label or conn} that you may see")
    return snap, row, access


@app.get("/api/job")
async def job_detail(
    user: Any = CurrentUser,
    conn_id: str = Query(...),
    async_dir: str | None = Query(None),
    job_id: str = Query(...),
    become_user: str = Query(""),
    become_method: str = Query(""),
) -> dict[str, Any]:
    snap, row, access = await _find(user, conn_id, async_dir, job_id, _become(become_user, become_method))
    can_kill = await run_in_threadpool(access.can_kill, snap.conn_id, row)
    can_read = await run_in_threadpool(access.can_read_output, snap.conn_id, row)
    command = None
    if row.origin is not None:
        o = row.origin
        command = await run_in_threadpool(sources.rendered_command, o.dag_id, o.run_id, o.task_id, o.map_index)
    masking = await _masker(row)
    return {
        **_snapshot_head(snap),
        "job": _shown(row, snap, _try(await _tries([row]), row), masking),
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
    snap, row, access = await _find(user, conn_id, async_dir, job_id, _become(become_user, become_method))
    if not await run_in_threadpool(access.can_read_output, snap.conn_id, row):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "you may not read this job's output (its DAG's task logs)")
    if row.state == DAMAGED:
        return {"stream": stream, "offset": 0, "next_offset": 0, "size": 0, "text": "", "missing": True}
    masking = await _masker(row)
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
        text, whole = _masked(masker, text, whole, lead=start > 0, end=end)
    return {
        "stream": stream,
        "offset": start,
        "next_offset": start + whole,
        "size": max(chunk.size, start + whole),
        "text": text,
        "missing": chunk.missing,
        "masked": bool(masker),
    }


@dataclass(frozen=True)
class Masking:
    """How a job's output is shown: masked with its launching task's secrets, or withheld."""

    masker: Masker
    withheld: str = ""  # why the output is not shown at all ("" : it is shown, masked)


WITHHELD = (
    "the output is withheld: the task that launched this job has left no secrets with Airflow to mask it "
    "with (no trigger waits, and its task_state_store entry ssh_async_secrets is missing or not sealed "
    "for it), so it could show them in clear"
)
_SECRETS: dict[tuple[str, str, str, int], tuple[float, Masking]] = {}
SECRETS_TTL = 10.0


def _masking_of(found: sources.TaskSecrets | None, min_length: int, sealing: bool) -> Masking:
    """Fail closed: a task of this provider's operator that is not deferred has kept its
    secrets sealed in its task_state_store whenever this deployment has a Fernet key
    (SEALING; every task has some: Airflow masks its own config's). Without that entry
    (deleted, or replaced by an editor of the task instance) the output is withheld."""
    found = found or sources.TaskSecrets()
    withheld = WITHHELD if sealing and found.launcher and not found.kept and not found.from_trigger else ""
    return Masking(Masker(found.values, min_length=min_length), withheld)


async def _maskers(rows: list[JobRow]) -> dict[tuple[str, str, str, int], Masking]:
    """The masking of each task that launched one of ROWS, from the secrets it left with
    Airflow (sources.task_secrets; cached briefly, one lookup for all that are not)."""
    now = time.monotonic()
    for k in [k for k, (at, _) in _SECRETS.items() if now - at > SECRETS_TTL]:
        del _SECRETS[k]
    keys = {r.origin.key for r in rows if r.origin is not None}
    todo = [k for k in keys if k not in _SECRETS]
    if todo:
        found = await run_in_threadpool(sources.task_secrets, todo)
        length, sealing = airflow_min_length(), can_seal()
        for k in todo:
            _SECRETS[k] = (now, _masking_of(found.get(k), length, sealing))
    return {k: _SECRETS[k][1] for k in keys}


async def _masker(row: JobRow) -> Masking:
    """The masking of the task that launched ROW (none for a job no task launched)."""
    if row.origin is None:
        return Masking(Masker())
    return (await _maskers([row]))[row.origin.key]


def _masked(masker: Masker, text: str, whole: int, *, lead: bool, end: str) -> tuple[str, int]:
    """TEXT masked. END says what its end is: ``end`` of the stream (nothing more can come);
    ``hold``: more comes (a running job, or more bytes after the chunk), so a tail that may
    still become a secret is held back (WHOLE shrinks to where it starts) for the next read;
    ``mask``: the caller already has what follows, so that tail is masked. A chunk from inside
    the stream (LEAD) that may begin inside a secret has that head masked too."""
    tail = ""
    if end in ("hold", "mask"):
        keep = masker.held_from(text)
        if keep < len(text):
            if end == "hold":
                whole -= len(text[keep:].encode())
            else:
                tail = MASK
            text = text[:keep]
    head = masker.cut_lead(text) if lead else 0
    return (MASK if head else "") + masker.mask(text[head:]) + tail, whole


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


def _audit(user: Any, snap: hosts.Snapshot, row: JobRow, grace: int, outcome: str) -> None:
    """The kill in Airflow's audit log (the Log table, the UI's Audit Log): who, which host, which job."""
    from airflow.models.log import Log
    from airflow.utils.session import create_session

    origin = row.origin
    extra = {
        "conn_id": snap.conn_id,
        "host": snap.label,
        "become_user": snap.become_user,
        "job_id": row.job_id,
        "job_dir": row.job_dir,
        "grace": grace,
        "outcome": outcome,
    }
    kwargs: dict[str, Any] = {}
    if origin is not None:
        kwargs = {"dag_id": origin.dag_id, "task_id": origin.task_id, "run_id": origin.run_id}
        kwargs["map_index"] = origin.map_index
    with create_session() as session:
        session.add(Log(event=AUDIT_EVENT, owner=user_name(user), extra=json.dumps(extra), **kwargs))


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
        become = _become(body.get("become_user"), body.get("become_method"))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "give conn_id, job_id and grace (seconds)") from None
    if not 0 <= grace <= MAX_GRACE:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"grace is 0 to {MAX_GRACE} seconds")
    snap, row, access = await _find(user, conn_id, body.get("async_dir"), job_id, become, fresh=True)
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
        await run_in_threadpool(_audit, user, snap, row, grace, f"error: {exc}")
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"{snap.label}: {exc}") from None
    await run_in_threadpool(_audit, user, snap, row, grace, outcome)
    return JSONResponse({"outcome": outcome, "job_id": row.job_id, "host": snap.label})
