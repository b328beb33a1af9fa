# shellcheck shell=sh
# airflow-ssh-async launch: start one detached job.
#
# Usage: launch ASYNC_DIR JOB_ID TIMEOUT GRACE ORIGIN [EXEC_LEFT [OUTPUT_LIMIT]]
#        ORIGIN: who launched it (the Airflow task instance), kept in job.json.
#        EXEC_LEFT: seconds left of the task's execution_timeout (0: none);
#        the supervisor keeps it as its `deadline` file.
#        OUTPUT_LIMIT: bytes each of stdout and stderr may store (0: no cap).
# Stdin: "airflow-ssh-async-payload 1 CWD_LEN ENV_LEN SUPERVISOR_LEN COMMAND_LEN SUPERVISOR_ID\n"
#        then the cwd, the env exports, the supervisor program and the
#        command, back to back. SUPERVISOR_ID (hex) names the supervisor's
#        content: ASYNC_DIR/.supervisor/ID/supervise.sh is written by the
#        first launch that brings it and run by every later one.
# Stdout: framed fields protocol, job_dir, pid, pgid, supervisor_pid, start_time.
#
# AIRFLOW_ASYNC_SH, when set in the SSH user's environment, names the shell
# that runs the supervisor (default /bin/sh); the job itself always runs
# under /bin/sh. The tests use it to run the supervisor under each shell.
#
# The `mkdir` of the job directory is the lock: of two launches of one id,
# exactly one gets past it; the other exits E_EXISTS with the directory.

# refuse CODE MESSAGE: fail before reading the payload. Read it anyway: a
# client still sending stdin to a closed channel sees a broken pipe, not
# our answer.
refuse() {
    cat >/dev/null
    err "$@"
}

# abandon MESSAGE [CODE]: our own launch failed before the job started:
# remove its folder (so the id is not blocked by a job that never ran), fail.
abandon() {
    rm -rf "$_dir"
    _msg=$1
    if [ "${2:-$E_WRITE}" = "$E_WRITE" ]; then
        free_kb_v "$_base"
        [ -n "$_free" ] && _msg="$_msg ($_free KiB free in '$_base')"
    fi
    err "${2:-$E_WRITE}" "$_msg"
}

# LAUNCH_MIN_FREE_KB: a launch into an async_dir with less free space is
# refused before anything is written: the job's files (payload, supervisor
# copy, the reserved result) need about 30 KiB, and a job started on a full
# disk could store none of its output.
LAUNCH_MIN_FREE_KB=64

# install_supervisor OFFSET COUNT: the shared copy of this supervisor, unless
# an earlier launch wrote it. It is written in the job folder (new, ours,
# 0700: no name there another user could plant) and moved into place whole.
# A copy that is a symlink, another user's, or writable by others was removed
# by launch's private_v check; the folders on its path were checked too, so
# nobody else can change it between that check and its run.
install_supervisor() {
    [ -f "$_sup" ] && [ ! -L "$_sup" ] && return 0
    mkdir -p "${_sup%/*}" 2>/dev/null
    if extract "$1" "$2" >"$_dir/supervise.sh" && mv -f "$_dir/supervise.sh" "$_sup"; then
        return 0
    fi
    rm -f "$_dir/supervise.sh"
    return 1
}

# extract OFFSET COUNT: COUNT bytes of the payload from OFFSET (1-based), on stdout.
extract() {
    [ "$2" -eq 0 ] || tail -c +"$1" "$_tmp" | head -c "$2"
}

# session_settings: shell lines that give the job the SSH session's own umask
# and LC_ALL back: the launcher runs with umask 077 (private job files) and
# LC_ALL=C (byte counts), which are ours, not the job's. They come first in
# the env file: the task's own exports follow and win (a task's LC_ALL).
# lib.sh kept the session's LC_ALL before it set its own.
# shellcheck disable=SC2154 # _session_lc_all and _session_lc_all_set: lib.sh's
session_settings() {
    printf 'umask %s\n' "$_session_umask"
    if [ -n "$_session_lc_all_set" ]; then
        printf "LC_ALL='%s'; export LC_ALL\n" "$(printf '%s' "$_session_lc_all" | sed "s/'/'\\\\''/g")"
    else
        printf 'unset LC_ALL\n'
    fi
}

launch() {
    case $# in
        5 | 6 | 7) ;;
        *) err "$E_USAGE" "usage: launch ASYNC_DIR JOB_ID TIMEOUT GRACE ORIGIN [EXEC_LEFT [OUTPUT_LIMIT]]" ;;
    esac
    # Builtins wherever they serve (expand_home_v, cd -P and $PWD, read,
    # ${#}): every fork here is launch latency.
    expand_home_v "$1"
    # shellcheck disable=SC2154 # _path is set by lib.sh's expand_home_v
    _base=$_path
    _id=$2
    _timeout=$3
    _grace=$4
    _origin=$5
    _exec_left=${6:-0}
    _olimit=${7:-0}

    umask 077
    [ -d "$_base" ] || mkdir -p "$_base" 2>/dev/null
    if ! cd -P "$_base" 2>/dev/null || [ ! -w . ]; then
        refuse "$E_DIR" "cannot create or write async_dir '$_base'"
    fi
    _base=$PWD
    _dir=$_base/$_id
    # Before anything is written or run: async_dir and the supervisor
    # copies under it must be the SSH user's alone (docs/protocol.md).
    # shellcheck disable=SC2154 # _unsafe is set by lib.sh's private_v
    private_v "$_base" "$_base/.supervisor" "$_base/.supervisor/"* "$_base/.supervisor/"*/supervise.sh ||
        refuse "$E_DIR" "$_unsafe"

    # A full disk is refused before anything is made: no folder, no secrets.
    free_kb_v .
    if [ -n "$_free" ] && [ "$_free" -lt "$LAUNCH_MIN_FREE_KB" ]; then
        refuse "$E_WRITE" "async_dir '$_base' is full: $_free KiB free, a launch needs at least $LAUNCH_MIN_FREE_KB KiB; nothing was started. Free space on that filesystem or choose another async_dir"
    fi
    mkdir "$_dir" 2>/dev/null || {
        [ -d "$_dir" ] && {
            field job_dir "$_dir"
            refuse "$E_EXISTS" "job directory '$_dir' exists already"
        }
        refuse "$E_DIR" "cannot create job directory '$_dir'"
    }
    # Who is launching, so that a status read can tell a launch in progress
    # from one that died half way (lib.sh's launch_over).
    proc_start_v "$$"
    # shellcheck disable=SC2154 # _pstart is set by lib.sh's helper above
    printf '%s %s\n' "$$" "$_pstart" >"$_dir/launching" || {
        cat >/dev/null
        abandon "cannot write the job files under '$_dir' (disk full?); nothing was started"
    }
    # The payload lands in the job folder: a file, not stdin piece by piece,
    # as busybox head reads past the bytes it was asked for on a pipe. The
    # job's shell removes it with env (both hold the task's environment).
    _tmp=$_dir/payload
    cat >"$_tmp" || abandon "cannot write the job payload under '$_base' (disk full?); nothing was started"
    IFS= read -r _header <"$_tmp"
    set -f
    # shellcheck disable=SC2086 # the header is split on purpose
    set -- $_header
    set +f
    if [ $# -ne 7 ] || [ "$1" != airflow-ssh-async-payload ] || [ "$2" != "$PROTOCOL" ]; then
        abandon "unknown payload header (protocol $PROTOCOL expected)" "$E_USAGE"
    fi
    _ncwd=$3
    _nenv=$4
    _nsup=$5
    _ncmd=$6
    case $7 in
        '' | *[!0-9a-f]*) abandon "bad supervisor id in the payload header" "$E_USAGE" ;;
    esac
    _sup=$_base/.supervisor/$7/supervise.sh
    # tail -c +N counts from 1: the first byte after the header line.
    _off=$((${#_header} + 2))
    _total=$(wc -c <"$_tmp")
    if [ $((_off - 1 + _ncwd + _nenv + _nsup + _ncmd)) -ne $((_total + 0)) ]; then
        abandon "payload arrived incomplete ($_total bytes); nothing was started"
    fi
    _cwd=
    [ "$_ncwd" -gt 0 ] && _cwd=$(tail -c +"$_off" "$_tmp" | head -c "$_ncwd")
    expand_home_v "${_cwd:-$HOME}"
    # A relative cwd is relative to the login directory, as in an SSH
    # session, not to async_dir (where this shell stands now).
    case $_path in
        /*) _cwd=$_path ;;
        *) _cwd=$HOME/$_path ;;
    esac
    cd -P "$_cwd" 2>/dev/null ||
        abandon "cwd '$_cwd' does not exist or is not a directory the SSH user can enter" "$E_CWD"
    _cwd_abs=$PWD
    command -v setsid >/dev/null 2>&1 ||
        abandon "this host has no 'setsid' command, which is needed to start the job in its own session" "$E_NEED"

    # The total size was checked: each part is whole unless a write fails.
    _off=$((_off + _ncwd))
    if ! {
        { session_settings && extract "$_off" "$_nenv"; } >"$_dir/env" &&
            install_supervisor $((_off + _nenv)) "$_nsup" &&
            tail -c +$((_off + _nenv + _nsup)) "$_tmp" >"$_dir/command" &&
            # The room for the result, taken before the job runs: a disk the
            # job fills cannot keep the supervisor from writing its result.
            printf "%${RESERVE_BYTES}s" '' >"$_dir/result.reserve"
    }; then
        abandon "cannot write the job files under '$_dir' (disk full?); nothing was started"
    fi

    # The supervisor writes its report on our stdout (the SSH channel) and
    # then closes it; the channel ends when the last writer is gone, so the
    # client reads the report without this shell waiting for it. No report
    # means the supervisor did not start: supervisor.log says why. A shell
    # that is not there is caught here, so that no env file is left behind.
    command -v "${AIRFLOW_ASYNC_SH:-/bin/sh}" >/dev/null 2>&1 ||
        abandon "the supervisor's shell '${AIRFLOW_ASYNC_SH:-/bin/sh}' (AIRFLOW_ASYNC_SH) is not an executable; nothing was started" "$E_NEED"
    setsid "${AIRFLOW_ASYNC_SH:-/bin/sh}" "$_sup" "$_dir" "$_id" "$_timeout" "$_grace" "$_cwd_abs" \
        "$_origin" "$_exec_left" "$_olimit" </dev/null 2>>"$_dir/supervisor.log" &
    proc_start_v "$!"
    printf '%s %s\n' "$!" "$_pstart" >>"$_dir/launching"
}

main() {
    _session_umask=$(umask)
    launch "$@"
}

main "$@" || exit 1
