"""The Remote jobs view's query parameters, checked before anything is looked up or connected to (400 otherwise)."""

from __future__ import annotations

from fastapi import HTTPException, status

from airflow_ssh_async.become import validate_become
from airflow_ssh_async.job_ids import DEFAULT_ASYNC_DIR, JOB_ID_RE


def conn_id_param(value: str) -> str:
    """A connection id as typed; 400 unless it is one Airflow could hold."""
    value = value.strip()
    # Airflow's own rule for connection ids, so a typed id never reaches a lookup malformed.
    if not value or len(value) > 250 or not all(c.isalnum() or c in "._-" for c in value):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"invalid connection id {value[:80]!r}")
    return value


def async_dir_param(value: str | None) -> str:
    """An async_dir as given (empty: the default); 400 for bytes no script could take."""
    value = (value or "").strip() or DEFAULT_ASYNC_DIR
    if "\x00" in value or "\x1f" in value or len(value) > 4096:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid async_dir")
    return value


def become_param(user: object, method: object) -> tuple[str, str]:
    """(become_user, become_method) as a section names them; "" is the connection's own."""
    if user in (None, "") and method in (None, ""):
        return "", ""
    try:
        name, how = validate_become(user, method)
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    return name or "", how


def job_id_param(value: str) -> str:
    """A job id; 400 unless it is one (nothing else ever names a path on a host)."""
    if not JOB_ID_RE.fullmatch(value):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"invalid job id {value[:80]!r}")
    return value
