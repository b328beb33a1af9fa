#!/bin/sh
# The main job, end to end: the nightly_migration example DAG against a
# throwaway local sshd, with the remote output streamed into the task log.
set -eu
cd "$(dirname "$0")/.."
sh dev/setup.sh
VENV=${VENV:-.venv}
exec timeout 600 "$VENV/bin/python" dev/demo.py "$@"
