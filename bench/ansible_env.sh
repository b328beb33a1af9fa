#!/bin/sh
# Make the Ansible venv used by bench/peers.py: ansible-core at the pin in
# requirements-ansible.txt, in its own venv so Airflow's venv stays untouched.
# Idempotent: when the venv already has the pinned version it only says so.
#
# Usage: bench/ansible_env.sh         (venv at $ANSIBLE_VENV, default .ansible-venv in the repo)
# Needs: a Python 3.11+ as $PYTHON (default python3) with venv and pip.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
venv=${ANSIBLE_VENV:-$(dirname "$here")/.ansible-venv}
python=${PYTHON:-python3}
reqs=$here/requirements-ansible.txt
pin=$(sed -n 's/^ansible-core==\([^ ]*\).*/\1/p' "$reqs")
[ -n "$pin" ] || { echo "ansible_env.sh: no ansible-core== pin in $reqs" >&2; exit 1; }

installed() {
    [ -x "$venv/bin/python" ] &&
        "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("ansible-core"))' 2>/dev/null
}

if [ "$(installed || true)" = "$pin" ] && [ -x "$venv/bin/ansible-playbook" ]; then
    echo "ansible-core $pin already in $venv"
    exit 0
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs"
[ "$(installed)" = "$pin" ] || { echo "ansible_env.sh: ansible-core $pin did not install in $venv" >&2; exit 1; }
echo "ansible-core $pin installed in $venv"
