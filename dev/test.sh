#!/bin/sh
# The whole test suite on a fresh Debian/Ubuntu machine (run as root: the
# tests create SSH test users and start sshd on 127.0.0.1): shellcheck of
# the remote scripts, unit tests, integration tests against a real sshd, and
# the end-to-end suite against a real running Airflow.
set -eu
cd "$(dirname "$0")/.."
sh dev/setup.sh
VENV=${VENV:-.venv}

echo "test: shellcheck -s sh (the remote scripts and our own, as POSIX sh)"
shellcheck -s sh provider/airflow_ssh_async/scripts/*.sh dev/*.sh bench/*.sh

echo "test: pytest"
# Every test has its own timeout (setup.cfg); this bounds the whole run.
timeout 1500 "$VENV/bin/python" -m pytest -p no:cacheprovider -q "$@" tests
