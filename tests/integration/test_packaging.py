"""The package as Airflow sees it: registered provider, shipped scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

AIRFLOW = str(Path(sys.executable).parent / "airflow")


def test_airflow_lists_the_provider_with_its_hooks_operators_sensors_triggers(airflow_db: None) -> None:
    listed = subprocess.run([AIRFLOW, "providers", "list", "-o", "json"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "airflow-provider-ssh-async" in {p["package_name"] for p in json.loads(listed.stdout)}
    got = subprocess.run(
        [AIRFLOW, "providers", "get", "airflow-provider-ssh-async", "--full", "-o", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    info = json.loads(got.stdout)[0]
    modules = {kind: info[kind][0]["python-modules"] for kind in ("hooks", "operators", "sensors", "triggers")}
    assert modules == {
        "hooks": ["airflow_ssh_async.hooks"],
        "operators": ["airflow_ssh_async.operators"],
        "sensors": ["airflow_ssh_async.sensors"],
        "triggers": ["airflow_ssh_async.triggers"],
    }
