"""The hook's Airflow side: which connection, as whom (become), and one host connection to run calls on.

SSHAsyncJobHook (hooks.py) is this plus its remote calls (hook_calls.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from airflow.sdk.bases.hook import BaseHook

from airflow_ssh_async.client import ARG_SEPARATOR, RemoteHost, remote_host
from airflow_ssh_async.connection import SSHOptions, become_options, options_from_connection
from airflow_ssh_async.errors import ConnectionNotFoundError, SSHAsyncJobError
from airflow_ssh_async.job_ids import DEFAULT_ASYNC_DIR, job_dir_in

T = TypeVar("T")


class ConnectionHook(BaseHook):
    """An Airflow `ssh` connection with this hook's async_dir and become settings (see SSHAsyncJobHook)."""

    conn_name_attr = "ssh_conn_id"
    default_conn_name = "ssh_default"
    conn_type = "ssh"
    hook_name = "SSH async job"

    def __init__(
        self,
        ssh_conn_id: str = default_conn_name,
        async_dir: str = DEFAULT_ASYNC_DIR,
        become_user: str | None = None,
        become_method: str | None = None,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.async_dir = async_dir or DEFAULT_ASYNC_DIR
        self.become_user = become_user or None
        self.become_method = become_method or None
        # Checked before any connection lookup: a typo fails at once.
        become_options(self.become_user, self.become_method, ssh_conn_id)
        if ARG_SEPARATOR in self.async_dir:
            # Batches carry job folders on stdin, one ended by this byte.
            raise SSHAsyncJobError(
                f"async_dir {self.async_dir!r} holds the control byte 0x1f (connection {ssh_conn_id!r})",
                hint="Any other byte may be in async_dir: choose one without 0x1f.",
            )
        self._options: SSHOptions | None = None

    def _not_found(self, exc: Exception) -> ConnectionNotFoundError:
        return ConnectionNotFoundError(
            f"Airflow connection {self.ssh_conn_id!r} is not defined ({exc})",
            hint="Create it (type ssh) in the UI, with `airflow connections add`, or as "
            f"AIRFLOW_CONN_{self.ssh_conn_id.upper()}.",
        )

    def get_options(self) -> SSHOptions:
        if self._options is None:
            try:
                conn = self.get_connection(self.ssh_conn_id)
            except Exception as exc:  # the SDK raises AirflowNotFoundException; keep the cause
                raise self._not_found(exc) from exc
            self._options = self._with_become(options_from_connection(conn))
        return self._options

    def _with_become(self, options: SSHOptions) -> SSHOptions:
        """The connection's options with this hook's become_user/become_method, which win over its extras."""
        if self.become_user is None and self.become_method is None:
            return options
        user = self.become_user or options.become_user
        method = self.become_method or options.become_method
        return replace(options, **become_options(user, method, self.ssh_conn_id))

    async def aget_options(self) -> SSHOptions:
        """The options, fetched without blocking the event loop."""
        if self._options is None:
            try:
                conn = await self.aget_connection(self.ssh_conn_id)
            except Exception as exc:
                raise self._not_found(exc) from exc
            self._options = self._with_become(options_from_connection(conn))
        return self._options

    def job_dir(self, job_id: str) -> str:
        return job_dir_in(self.async_dir, job_id)

    async def _with_host(self, fn: Callable[[RemoteHost], Awaitable[T]]) -> T:
        async with remote_host(await self.aget_options()) as host:
            return await fn(host)
