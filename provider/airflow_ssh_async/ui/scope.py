"""What a user of the Remote jobs view may ask about: host sections, jobs, one job.

The host sections are those their DAGs use.

A host is asked only for a connection the user may read or a DAG of theirs
uses (403 otherwise, before anything connects); a job they may not see is
404, as one that is not there (access.py says who may see what).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import HTTPException, status
from starlette.concurrency import run_in_threadpool

from airflow_ssh_async.ui import hosts, sources
from airflow_ssh_async.ui.access import Access
from airflow_ssh_async.ui.params import async_dir_param, conn_id_param, job_id_param
from airflow_ssh_async.ui.records import JobRow


def visible(access: Access, conn_id: str, rows: list[JobRow]) -> list[JobRow]:
    access.prime(r.origin.dag_id for r in rows if r.origin)
    return [r for r in rows if access.can_see(conn_id, r)]


_SECTIONS: list[tuple[float, list[tuple[str, sources.Section]]]] = []
SECTIONS_TTL = 30.0


async def sections(access: Access, *, fresh: bool = False) -> list[sources.Section]:
    """The host sections in Airflow's records for the DAGs this user may read (records cached briefly)."""
    now = time.monotonic()
    if fresh or not _SECTIONS or now - _SECTIONS[0][0] > SECTIONS_TTL:
        _SECTIONS[:] = [(now, await run_in_threadpool(sources.recorded_sections))]
    found = _SECTIONS[0][1]
    readable = await run_in_threadpool(access.readable_dag_ids, {d for d, _ in found})
    return sorted({s for d, s in found if d in readable}, key=lambda s: (s.conn_id, s.become_user, s.async_dir))


async def may_ask(access: Access, conn_id: str, become_user: str = "") -> None:
    """A host is asked only for a connection the user may read, or one their DAGs use (else 403):
    a typed id must not tell who cannot read it where a connection points, or make us connect.
    Likewise a BECOME_USER: one a DAG of theirs runs its jobs as on that connection, or any
    for whoever may read the connection (who could log in and run sudo as well)."""
    if await run_in_threadpool(access.connection, conn_id):
        return
    for fresh in (False, True):  # a connection a DAG began to use since the records were read
        found = await sections(access, fresh=fresh)
        if any(s.conn_id == conn_id and (not become_user or s.become_user == become_user) for s in found):
            return
    as_user = f" as {become_user!r}" if become_user else ""
    raise HTTPException(
        status.HTTP_403_FORBIDDEN,
        f"connection {conn_id!r} is used{as_user} by no DAG you may read, and you may not read the connection",
    )


def try_of(tries: dict[tuple[str, str, str, int], int], row: JobRow) -> int | None:
    return tries.get(row.origin.key) if row.origin else None


async def tries_of(rows: list[JobRow]) -> dict[tuple[str, str, str, int], int]:
    """The launching try of each row's task instance (one query for a page)."""
    jobs = [(r.origin, r.start_time) for r in rows if r.origin is not None]
    try:
        return await run_in_threadpool(sources.launching_tries, jobs)
    except Exception:  # the tries are a courtesy: a DB hiccup must not hide the jobs
        return {}


async def find_job(
    user: Any,
    conn_id: str,
    async_dir: str | None,
    job_id: str,
    become: tuple[str, str] = ("", ""),
    *,
    fresh: bool = False,
) -> tuple[hosts.Snapshot, JobRow, Access]:
    """The job as this user may see it; 404 when it is not there or not theirs to see (no hint which)."""
    conn, job = conn_id_param(conn_id), job_id_param(job_id)
    access = Access(user)
    await may_ask(access, conn, become[0])
    snap = await hosts.CACHE.snapshot(conn, async_dir_param(async_dir), *become, fresh=fresh)
    if snap.error:
        status_code = 404 if snap.error_kind == "unknown_connection" else 502
        raise HTTPException(status_code, f"{snap.label or conn}: {snap.error}")
    row = snap.find(job)
    if row is None or not await run_in_threadpool(access.can_see, conn, row):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job!r} on {snap.label or conn} that you may see")
    return snap, row, access
