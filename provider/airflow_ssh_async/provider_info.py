"""Metadata for Airflow's `apache_airflow_provider` entry point."""

from __future__ import annotations

from typing import Any

from airflow_ssh_async import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-ssh-async",
        "name": "SSH async jobs",
        "description": "Detached remote jobs over SSH, watched by a deferrable trigger "
        "(Ansible's async mode for Airflow).",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "SSH async jobs",
                "external-doc-url": "https://pypi.org/project/airflow-provider-ssh-async/",
                "tags": ["protocol"],
            }
        ],
        "hooks": [{"integration-name": "SSH async jobs", "python-modules": ["airflow_ssh_async.hooks"]}],
        "operators": [{"integration-name": "SSH async jobs", "python-modules": ["airflow_ssh_async.operators"]}],
        "sensors": [{"integration-name": "SSH async jobs", "python-modules": ["airflow_ssh_async.sensors"]}],
        "triggers": [{"integration-name": "SSH async jobs", "python-modules": ["airflow_ssh_async.triggers"]}],
    }
