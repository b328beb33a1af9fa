"""Long remote jobs over SSH from Airflow: detached, deferrable, re-attachable."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "SSHAsyncJobHook",
    "SSHAsyncJobOperator",
    "SSHAsyncJobSensor",
    "SSHAsyncJobTrigger",
    "__version__",
]


def __getattr__(name: str) -> object:
    # Lazy, so that importing the package (provider discovery, the remote
    # scripts) does not import Airflow's operator machinery.
    if name == "SSHAsyncJobHook":
        from airflow_ssh_async.hooks import SSHAsyncJobHook

        return SSHAsyncJobHook
    if name == "SSHAsyncJobOperator":
        from airflow_ssh_async.operators import SSHAsyncJobOperator

        return SSHAsyncJobOperator
    if name == "SSHAsyncJobSensor":
        from airflow_ssh_async.sensors import SSHAsyncJobSensor

        return SSHAsyncJobSensor
    if name == "SSHAsyncJobTrigger":
        from airflow_ssh_async.triggers import SSHAsyncJobTrigger

        return SSHAsyncJobTrigger
    raise AttributeError(name)
