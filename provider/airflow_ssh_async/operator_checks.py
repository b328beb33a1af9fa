"""The operator's checks at DAG parse time: what is wrong whatever the host fails the DAG's import, not a task at 2 a.m.

Pure (no Airflow, no SSH); templated values are checked once rendered (execute).
"""

from __future__ import annotations

from typing import Any

from airflow_ssh_async.become import validate_become
from airflow_ssh_async.job_ids import JobIdError, validate_job_id
from airflow_ssh_async.on_existing import OnExisting
from airflow_ssh_async.payload import validate_env_name

CLEANUP_CHOICES = ("never", "on_success", "always")


def templated(value: Any) -> bool:
    """A string Jinja will render (checked once rendered, not at parse time)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def check_output_limit(task_id: str, output_limit: object) -> int:
    """OUTPUT_LIMIT, a whole number of bytes (0: no cap); anything else is refused."""
    if not isinstance(output_limit, int) or isinstance(output_limit, bool) or output_limit < 0:
        raise ValueError(f"{task_id}: output_limit must be a whole number of bytes, 0 or more, not {output_limit!r}")
    return output_limit


def check_become(task_id: str, become_user: Any, become_method: Any) -> None:
    """Refuse a become_user or become_method that no host could take (unless templated)."""
    if not templated(become_user) and not templated(become_method):
        try:
            validate_become(become_user, become_method)
        except ValueError as exc:
            raise ValueError(f"{task_id}: {exc}") from None


def check_arguments(
    task_id: str, command: Any, environment: Any, job_id: Any, cleanup: str, on_existing: str
) -> OnExisting:
    """Refuse at DAG parse time what is wrong whatever the host; return on_existing as the enum."""
    where = f"{task_id}:"
    if command is None or (isinstance(command, str) and not command.strip()):
        raise ValueError(f"{where} command must be non-empty shell text, not {command!r}")
    if isinstance(environment, dict):
        for name in environment:  # Airflow renders the values of a dict, never its keys
            try:
                validate_env_name(name)
            except ValueError as exc:
                raise ValueError(f"{where} {exc}") from None
    if isinstance(job_id, str) and not templated(job_id):
        try:
            validate_job_id(job_id)
        except JobIdError as exc:
            raise ValueError(f"{where} {exc}") from None
    if cleanup not in CLEANUP_CHOICES:
        raise ValueError(f"{where} cleanup must be one of {CLEANUP_CHOICES}, not {cleanup!r}")
    try:
        return OnExisting(on_existing)
    except ValueError:
        raise ValueError(
            f"{where} on_existing must be one of {[o.value for o in OnExisting]}, not {on_existing!r}"
        ) from None
