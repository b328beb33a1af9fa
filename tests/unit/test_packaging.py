"""The package's data: the remote scripts ship inside it."""

from __future__ import annotations


def test_remote_scripts_ship_as_package_data() -> None:
    from importlib import resources

    scripts = resources.files("airflow_ssh_async").joinpath("scripts")
    names = {p.name for p in scripts.iterdir()}
    assert {"lib.sh", "launch.sh", "supervise.sh", "status.sh", "output.sh", "signal.sh", "archive.sh"} <= names
