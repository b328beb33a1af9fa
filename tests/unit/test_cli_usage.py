"""The ops console's usage: help, exit codes, version, argument errors (no SSH).

These run the installed console script (exit status, output) or ``cli.main``
on arguments refused before any connection.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from airflow_ssh_async import cli

SCRIPT = Path(sys.executable).parent / "airflow-ssh-async"
DASH = "cli_asyncdash"


def run_script(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.exists(), f"{SCRIPT} is missing: pip install -e the repo to get the console script"
    return subprocess.run([str(SCRIPT), *argv], capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(60)
def test_help_has_examples_and_documents_exit_codes() -> None:
    proc = run_script("--help")
    assert proc.returncode == 0, proc.stderr
    for text in ("examples:", "exit codes:", "jobs", "status", "logs", "kill", "gc", "--older-than 7d"):
        assert text in proc.stdout
    for code, word in [
        (2, "usage"),
        (3, "SSH or connection"),
        (4, "failed"),
        (5, "killed"),
        (6, "timed_out"),
        (7, "cancelled"),
        (8, "lost"),
        (9, "missing"),
    ]:
        assert any(line.strip().startswith(f"{code}  ") and word in line for line in proc.stdout.splitlines()), word
    sub = run_script("logs", "--help")
    assert sub.returncode == 0 and "--follow" in sub.stdout and "--stderr" in sub.stdout


@pytest.mark.timeout(60)
def test_usage_errors_exit_2_before_any_ssh(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    for argv in (["status", DASH, "../etc"], ["gc", DASH], ["gc", DASH, "--older-than", "soon"], ["frobnicate"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2, argv
    assert "invalid job id '../etc'" in capsysbinary.readouterr().err.decode()
    assert cli.parse_duration("7d") == 7 * 86400
    assert cli.parse_duration("90") == 90
    assert cli.parse_duration("1.5h") == 5400


@pytest.mark.timeout(60)
def test_version_prints_the_package_version() -> None:
    from airflow_ssh_async import __version__

    proc = run_script("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"airflow-ssh-async {__version__}", proc


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["jobs", "status", "logs", "kill", "gc", "host-key"])
def test_each_subcommand_help_shows_its_own_examples_only(command) -> None:
    proc = run_script(command, "--help")
    assert proc.returncode == 0, proc.stderr
    examples = proc.stdout.split("examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert examples, proc.stdout
    assert all(line.split()[:2] == ["airflow-ssh-async", command] for line in examples), examples
    assert "exit codes:" in proc.stdout
