# shellcheck shell=sh
# airflow-ssh-async ansible_status: facts about jobs that Ansible started
# (`async: N`, `poll: 0`), read from Ansible's own result files, in one call.
#
# Usage: ansible_status DIR JID [DIR JID]...
#   DIR is Ansible's async dir ('~' is the SSH user's home). An empty DIR
#   means Ansible's default: $ANSIBLE_ASYNC_DIR when this host's environment
#   sets it, else ~/.ansible_async (what async_wrapper itself does).
# Stdout: framed fields; `protocol` and `now` once, then per job, in the
#   order asked: `job` (the JID), `path` (the result file, ~ resolved), what
#   liveness can be seen (`wrapper_alive` 1/0 and, when alive, `time_limit`;
#   or `liveness_unknown` with the reason), `exists`, and for a file that
#   exists `mtime` and `result` (its bytes, one version of it) or `unreadable`.
#
# What the file can tell: {"started": 1, "finished": 0, ...} while the job
# runs, the module's result once it ended. No pid, no boot id, no start time.
# The one sign of life left is Ansible's async_wrapper: its processes live as
# long as the job, with the jid (less its .PID suffix) as the word after the
# wrapper's script path. The scan for them runs before any file is read, so
# a wrapper found gone has written whatever result it ever will.
# Like status.sh this only reports; ansible.py decides the state.

# wrapper_argvs: the words of every process whose argv names async_wrapper,
# one process a line (NULs turned into spaces). grep and this script carry the
# word in their own argv too; wrapper_limit's exact match drops them.
wrapper_argvs() {
    grep -l -F async_wrapper /proc/[0-9]*/cmdline 2>/dev/null | while IFS= read -r _f; do
        tr '\000' ' ' <"$_f" 2>/dev/null && echo
    done
}

# wrapper_limit KEY: the time limit argument of KEY's async_wrapper in the
# scan (a word ending in async_wrapper.py, then KEY, then a number); empty
# when no such process ran at scan time.
wrapper_limit() {
    printf '%s\n' "$_scan" | awk -v key="$1" '{
        for (i = 1; i + 2 <= NF; i++)
            if ($i ~ /async_wrapper[.]py$/ && $(i + 1) == key && $(i + 2) ~ /^[0-9]+$/) {
                print $(i + 2)
                exit
            }
    }'
}

# hidepid: true when /proc hides other users' processes from us.
hidepid() {
    awk '$2 == "/proc" && $4 ~ /hidepid=([12]|invisible|noaccess|ptraceable)/ { f = 1 } END { exit !f }' \
        /proc/mounts 2>/dev/null
}

# owner FILE: the numeric owner of FILE (or of its folder when FILE is absent).
owner() {
    _o=$1
    [ -e "$_o" ] || _o=$(dirname "$_o")
    # shellcheck disable=SC2012 # ls -ldn is the POSIX way to a numeric owner
    ls -ldn "$_o" 2>/dev/null | awk '{ print $3 }'
}

# liveness_unknown FILE: why the scan cannot tell whether FILE's wrapper
# runs; empty when it can.
liveness_unknown() {
    if [ ! -r /proc/self/cmdline ]; then
        printf '%s' "this host has no /proc, so Ansible's async_wrapper cannot be looked for"
    elif [ "$_hidepid" = 1 ] && [ "$(owner "$1")" != "$_uid" ]; then
        printf '%s' "/proc is mounted with hidepid and $1 belongs to another user, whose processes are hidden"
    fi
}

# inode FILE: FILE's inode number (Ansible replaces the file by rename).
inode() {
    # shellcheck disable=SC2012 # ls -di is POSIX; stat -c is not
    ls -di "$1" 2>/dev/null | awk '{ print $1 }'
}

# snapshot FILE: set _data to FILE's bytes and _mtime to its mtime, both of
# one version of FILE: the read is redone when a rename replaced the file
# meanwhile. Ansible writes JSON (ASCII, no NUL), so a variable holds it.
# Returns 1 when the file went away or cannot be read.
snapshot() {
    _try=0
    while [ "$_try" -lt 3 ]; do
        _ino=$(inode "$1")
        _mtime=$(date -r "$1" +%s 2>/dev/null) || return 1
        # The trailing '.' keeps trailing newlines from $(...).
        _data=$(cat "$1" 2>/dev/null && echo .) || return 1
        if [ -n "$_ino" ] && [ "$(inode "$1")" = "$_ino" ]; then
            _data=${_data%.}
            return 0
        fi
        _try=$((_try + 1))
    done
    return 1
}

status_one() {
    _dir=$1
    _jid=$2
    # shellcheck disable=SC2088 # a literal '~/' is resolved by expand_home
    [ -n "$_dir" ] || _dir=${ANSIBLE_ASYNC_DIR:-"~/.ansible_async"}
    _f=$(expand_home "$_dir")
    _f=${_f%/}/$_jid
    field job "$_jid"
    field path "$_f"
    _why=$(liveness_unknown "$_f")
    if [ -n "$_why" ]; then
        field liveness_unknown "$_why"
    else
        _limit=$(wrapper_limit "${_jid%.*}")
        if [ -n "$_limit" ]; then
            field wrapper_alive 1
            field time_limit "$_limit"
        else
            field wrapper_alive 0
        fi
    fi
    if [ ! -e "$_f" ]; then
        field exists 0
        return 0
    fi
    field exists 1
    if [ ! -r "$_f" ] || ! snapshot "$_f"; then
        [ -e "$_f" ] || { field exists 0; return 0; }
        field unreadable 1
        return 0
    fi
    field mtime "$_mtime"
    field result "$_data"
}

main() {
    [ $(($# % 2)) -eq 0 ] || err "$E_USAGE" "usage: ansible_status DIR JID [DIR JID]..."
    _uid=$(id -u)
    _hidepid=0
    hidepid && _hidepid=1
    # Liveness first, for every job, then the files (see the header).
    _scan=$(wrapper_argvs)
    field protocol "$PROTOCOL"
    field now "$(now)"
    while [ $# -gt 0 ]; do
        status_one "$1" "$2"
        shift 2
    done
}

main "$@" || exit 1
