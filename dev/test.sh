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

# Three pytest sessions at once, each with its own sshd (and Airflow stack): most
# of an e2e scenario is waiting, for a poll, a heartbeat or a triggerer's health
# threshold, so each e2e session also runs the integration tests that mostly wait
# (grace periods, time limits, cancels, host waits), before its stack starts,
# and the CPU-bound unit and remaining integration tests run beside them
# (docs/reliability.md, "Time budget"). Every test has its own timeout
# (setup.cfg); `timeout` bounds each session with SIGINT, so that a session cut
# short still prints its failures and its slowest tests.
# Extra arguments go to every session (e.g. --durations=40).
echo "test: pytest in three sessions at once: unit and integration; e2e on the SQLite stack; e2e on the Celery stack"
it=tests/integration
with_sqlite="$it/test_cancel.py $it/test_become.py"
with_celery="$it/test_ansible.py $it/test_wait.py $it/test_scale.py $it/test_hard_edges_process.py"
logs=$(mktemp -d)
session() { # NAME E2E_STACKS PATHS...: one pytest session in the background, its output in $logs/NAME
    name=$1 stacks=$2
    shift 2
    E2E_STACKS=$stacks timeout -s INT -k 60 1500 "$VENV/bin/python" -m pytest -p no:cacheprovider -q \
        "$@" >"$logs/$name" 2>&1 &
    echo $! >"$logs/$name.pid"
}
# shellcheck disable=SC2086 # one word per test file
session e2e-sqlite sqlite "$@" $with_sqlite tests/e2e
# shellcheck disable=SC2086
session e2e-celery celery "$@" $with_celery tests/e2e
rest=
for file in "$it"/test_*.py; do
    case " $with_sqlite $with_celery " in
        *" $file "*) ;;
        *) rest="$rest $file" ;;
    esac
done
rc=0
# shellcheck disable=SC2086
E2E_STACKS=sqlite timeout -s INT -k 60 1500 "$VENV/bin/python" -m pytest -p no:cacheprovider -q \
    "$@" tests/unit $rest || rc=$?
for name in e2e-sqlite e2e-celery; do
    code=0
    wait "$(cat "$logs/$name.pid")" || code=$?
    echo "test: the session $name (exit $code):"
    cat "$logs/$name"
    [ "$code" -eq 0 ] || rc=1
done
rm -rf "$logs"
[ "$rc" -eq 0 ]
