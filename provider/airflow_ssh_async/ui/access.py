"""Who may see and kill which job: the plugin's own checks, failing closed.

A FastAPI app that a plugin mounts inherits none of the API server's
authentication, so every route of ours takes :func:`current_user`, which is
Airflow's own REST dependency (``airflow.api_fastapi.core_api.security.get_user``):
a ``Authorization: Bearer`` JWT, or the UI's ``_token`` cookie (what the
in-UI frame sends). No valid token: 401.

Rules (docs/ui.md states them for users):

* A job launched by a task (job.json's origin names its DAG) is visible to
  whoever the auth manager lets read that DAG's task instances
  (``GET``, ``TASK_INSTANCE``), and its output to whoever may read its task
  logs (``GET``, ``TASK_LOGS``). Kill needs edit on that DAG's task
  instances (``PUT``, ``TASK_INSTANCE``).
* A job no DAG launched (the ops command, Ansible, a hand-made folder) is
  visible to whoever may read the SSH connection it runs on (``GET`` on the
  connection) and killable by whoever may edit it (``PUT``).
* Kill is a POST with a JSON body. With the cookie (the browser) it also
  needs the ``X-CSRF-Token`` header that only a page of this origin can
  read (``GET /api/session``); a third-party page can send the cookie but
  not read the token, nor set the header without a CORS preflight. A
  Bearer token in the Authorization header needs no CSRF token: no other
  site can make a browser send one.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

from fastapi import Depends, HTTPException, Request, status

from airflow_ssh_async.ui.records import JobRow

CSRF_HEADER = "X-CSRF-Token"


async def _airflow_user(request: Request) -> Any:
    # Imported here: the plugin module is loaded by every Airflow component,
    # the API server's security module only where it runs.
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPBearer

    bearer = await HTTPBearer(auto_error=False)(request)
    return await get_user(request, None, bearer)


async def current_user(request: Request) -> Any:
    """The authenticated Airflow user; 401 without a valid token (Airflow's own check)."""
    user = await _airflow_user(request)
    if user is None:  # pragma: no cover - get_user raises instead
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Not authenticated")
    request.state.ssh_async_user = user
    return user


CurrentUser = Depends(current_user)


def _secret() -> bytes:
    from airflow.configuration import conf

    return (conf.get("api", "secret_key", fallback="") or "").encode()


def user_name(user: Any) -> str:
    for attr in ("get_name", "get_id"):
        fn = getattr(user, attr, None)
        if callable(fn):
            value = fn()
            if value:
                return str(value)
    return str(getattr(user, "username", "") or "")


def csrf_token(user: Any) -> str:
    """A token bound to the user and to this deployment's API secret."""
    return hmac.new(_secret(), f"ssh-async-kill\0{user_name(user)}".encode(), hashlib.sha256).hexdigest()


def check_forgery(request: Request, user: Any) -> None:
    """Refuse a POST a third-party page could have made (403)."""
    if "application/json" not in request.headers.get("content-type", ""):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "send the request as application/json")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return  # not sent by a browser on another site's behalf
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent, csrf_token(user)):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"missing or wrong {CSRF_HEADER} header")


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def _team_names(dag_ids: Iterable[str]) -> dict[str, str | None]:
    from airflow.models.dag import DagModel

    ids = list(dag_ids)
    try:
        return dict(DagModel.get_dag_id_to_team_name_mapping(ids))
    except Exception:  # a DAG unknown to the DB: no team
        return {}


class Access:
    """One request's permission answers, asked once per DAG and connection."""

    def __init__(self, user: Any) -> None:
        self.user = user
        self._dag: dict[tuple[str, str, str], bool] = {}
        self._conn: dict[tuple[str, str], bool] = {}
        self._teams: dict[str, str | None] = {}

    def prime(self, dag_ids: Iterable[str]) -> None:
        """Look up the teams of many DAGs in one query."""
        todo = [d for d in set(dag_ids) if d not in self._teams]
        if todo:
            found = _team_names(todo)
            self._teams.update({d: found.get(d) for d in todo})

    def dag(self, dag_id: str, method: str = "GET", entity: str = "TASK_INSTANCE") -> bool:
        key = (dag_id, method, entity)
        if key not in self._dag:
            from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

            self.prime([dag_id])
            self._dag[key] = bool(
                _auth_manager().is_authorized_dag(
                    method=method,
                    access_entity=DagAccessEntity[entity],
                    details=DagDetails(id=dag_id, team_name=self._teams.get(dag_id)),
                    user=self.user,
                )
            )
        return self._dag[key]

    def connection(self, conn_id: str, method: str = "GET") -> bool:
        key = (conn_id, method)
        if key not in self._conn:
            from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails

            self._conn[key] = bool(
                _auth_manager().is_authorized_connection(
                    method=method, details=ConnectionDetails(conn_id=conn_id), user=self.user
                )
            )
        return self._conn[key]

    def can_see(self, conn_id: str, row: JobRow) -> bool:
        if row.origin is not None:
            return self.dag(row.origin.dag_id)
        return self.connection(conn_id)

    def can_read_output(self, conn_id: str, row: JobRow) -> bool:
        if row.origin is not None:
            return self.dag(row.origin.dag_id, entity="TASK_LOGS")
        return self.connection(conn_id)

    def can_kill(self, conn_id: str, row: JobRow) -> bool:
        if row.origin is not None:
            return self.dag(row.origin.dag_id, method="PUT")
        return self.connection(conn_id, method="PUT")

    def readable_dag_ids(self, dag_ids: Iterable[str]) -> set[str]:
        ids = set(dag_ids)
        self.prime(ids)
        return {d for d in ids if self.dag(d)}
