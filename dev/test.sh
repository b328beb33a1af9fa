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

# Two pytest sessions at once, each with its own sshd and Airflow stack: most of
# an e2e scenario is waiting, so the Celery stack's scenarios and load scenario
# overlap the rest (docs/reliability.md, "Time budget"). Every test has its own
# timeout (setup.cfg); `timeout` bounds each session.
echo "test: pytest (unit, integration, e2e on the SQLite stack; the Celery stack's e2e in a second session)"
celery_log=$(mktemp)
E2E_STACKS=celery timeout 1500 "$VENV/bin/python" -m pytest -p no:cacheprovider -q "$@" tests/e2e \
    >"$celery_log" 2>&1 &
celery=$!
rc=0
E2E_STACKS=sqlite timeout 1500 "$VENV/bin/python" -m pytest -p no:cacheprovider -q "$@" tests || rc=$?
celery_rc=0
wait "$celery" || celery_rc=$?
echo "test: the Celery stack's session (exit $celery_rc):"
cat "$celery_log"
rm -f "$celery_log"
[ "$rc" -eq 0 ] && [ "$celery_rc" -eq 0 ]
