#!/bin/sh
# Set up this checkout on a fresh Debian/Ubuntu machine: the system packages
# the tests and the demo need (installed with apt when run as root), a venv
# with the pinned Python packages, and this package in it (editable).
# Idempotent: a second run only checks. POSIX sh, like the remote scripts.
set -eu
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
say() { printf 'setup: %s\n' "$*"; }

# command:Debian package that provides it
missing=
for need in sshd:openssh-server ssh-keygen:openssh-client shellcheck:shellcheck busybox:busybox \
    dash:dash mawk:mawk pgrep:procps runuser:util-linux setsid:util-linux redis-server:redis-server \
    chromium:chromium chromedriver:chromium-driver inotifywait:inotify-tools sudo:sudo visudo:sudo doas:opendoas; do
    cmd=${need%%:*}
    if [ ! -x "/usr/sbin/$cmd" ] && ! command -v "$cmd" >/dev/null 2>&1; then
        missing="$missing ${need#*:}"
    fi
done
# The Celery e2e stack's database: Debian keeps the server binaries off PATH.
pg_missing=
set -- /usr/lib/postgresql/*/bin/initdb
[ -x "$1" ] || { pg_missing=1; missing="$missing postgresql"; }
python3 -c 'import venv, ensurepip' 2>/dev/null || missing="$missing python3-venv"
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086 # one word per package
    pkgs=$(printf '%s\n' $missing | sort -u | tr '\n' ' ')
    if [ "$(id -u)" -ne 0 ]; then
        say "missing system packages: $pkgs- run this as root, or: sudo apt-get install -y $pkgs" >&2
        exit 1
    fi
    say "installing $pkgs"
    if [ -n "$pg_missing" ] && [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        # The tests start a throwaway cluster of their own: no system cluster, no service.
        mkdir -p /etc/postgresql-common
        printf '%s\n' 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf
    fi
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
fi
stamp="$VENV/.installed-$(cat requirements/constraints.txt requirements/dev.txt setup.cfg | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    say "installing pinned packages into $VENV (requirements/constraints.txt)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -c requirements/constraints.txt -r requirements/dev.txt -e .
    touch "$stamp"
fi
say "ready: $VENV"
