# shellcheck shell=sh
# airflow-ssh-async launch: start one detached job.
#
# Usage: launch ASYNC_DIR JOB_ID TIMEOUT GRACE ORIGIN
#        ORIGIN: who launched it (the Airflow task instance), kept in job.json.
# Stdin: "airflow-ssh-async-payload 1 CWD_LEN SUPERVISOR_LEN ENV_LEN COMMAND_LEN\n"
#        then the cwd, the supervisor program, the env exports and the command,
#        back to back.
# Stdout: framed fields protocol, job_dir, pid, pgid, supervisor_pid, start_time.
#
# AIRFLOW_ASYNC_SH, when set in the SSH user's environment, names the shell
# that runs the supervisor (default /bin/sh); the job itself always runs
# under /bin/sh. The tests use it to run the supervisor under each shell.
#
# The `mkdir` of the job directory is the lock: of two launches of one id,
# exactly one gets past it; the other exits E_EXISTS with the directory.

# session_settings: shell lines that give the job the SSH session's own umask
# and LC_ALL back: the launcher runs with umask 077 (private job files) and
# LC_ALL=C (byte counts), which are ours, not the job's.
session_settings() {
    printf 'umask %s\n' "$_session_umask"
    if [ -n "$_session_lc_all_set" ]; then
        printf "LC_ALL='%s'; export LC_ALL\n" "$(printf '%s' "$_session_lc_all" | sed "s/'/'\\\\''/g")"
    else
        printf 'unset LC_ALL\n'
    fi
}

launch() {
    [ $# -eq 5 ] || err "$E_USAGE" "usage: launch ASYNC_DIR JOB_ID TIMEOUT GRACE ORIGIN"
    _base=$(expand_home "$1")
    _id=$2
    _timeout=$3
    _grace=$4
    _origin=$5
    need_cmd setsid "start the job in its own session"

    umask 077
    if ! mkdir -p "$_base" 2>/dev/null || [ ! -w "$_base" ]; then
        err "$E_DIR" "cannot create or write async_dir '$_base'"
    fi
    _base=$(cd "$_base" && pwd -P) || err "$E_DIR" "cannot enter async_dir '$1'"
    _dir=$_base/$_id

    # Read the payload before taking the lock so that a bad payload or cwd
    # leaves nothing behind.
    _tmp=$_base/.incoming.$$
    cat >"$_tmp" || {
        rm -f "$_tmp"
        err "$E_WRITE" "cannot write the job payload under '$_base' (disk full?)"
    }
    IFS=' ' read -r _magic _version _ncwd _nsup _nenv _ncmd <"$_tmp"
    if [ "$_magic" != airflow-ssh-async-payload ] || [ "$_version" != "$PROTOCOL" ]; then
        rm -f "$_tmp"
        err "$E_USAGE" "unknown payload header (protocol $PROTOCOL expected)"
    fi
    _skip=$(($(head -n 1 "$_tmp" | wc -c) + 1))
    _total=$(wc -c <"$_tmp")
    if [ $((_skip - 1 + _ncwd + _nsup + _nenv + _ncmd)) -ne $((_total + 0)) ]; then
        rm -f "$_tmp"
        err "$E_WRITE" "payload arrived incomplete ($_total bytes); nothing was started"
    fi
    _cwd=$(tail -c +"$_skip" "$_tmp" | head -c "$_ncwd")
    [ -n "$_cwd" ] || _cwd=$HOME
    _cwd=$(expand_home "$_cwd")
    _cwd_abs=$(cd "$_cwd" 2>/dev/null && pwd -P) || {
        rm -f "$_tmp"
        err "$E_CWD" "cwd '$_cwd' does not exist or is not a directory the SSH user can enter"
    }

    mkdir "$_dir" 2>/dev/null || {
        rm -f "$_tmp"
        [ -d "$_dir" ] && {
            field job_dir "$_dir"
            err "$E_EXISTS" "job directory '$_dir' exists already"
        }
        err "$E_DIR" "cannot create job directory '$_dir'"
    }
    _off=$((_skip + _ncwd))
    if tail -c +"$_off" "$_tmp" | head -c "$_nsup" >"$_dir/supervise.sh" &&
        _off=$((_off + _nsup)) &&
        tail -c +"$_off" "$_tmp" | head -c "$_nenv" >"$_dir/env" &&
        _off=$((_off + _nenv)) &&
        tail -c +"$_off" "$_tmp" | head -c "$_ncmd" >"$_dir/command" &&
        [ "$(wc -c <"$_dir/command")" -eq "$_ncmd" ] &&
        [ "$(wc -c <"$_dir/env")" -eq "$_nenv" ] &&
        session_settings >>"$_dir/env"; then
        rm -f "$_tmp"
    else
        # Our own half-written launch, never started: remove it so the id is
        # not blocked by a job that never ran.
        rm -rf "$_dir" "$_tmp"
        err "$E_WRITE" "cannot write the job files under '$_dir' (disk full?); nothing was started"
    fi

    # The supervisor prints its report and closes stdout; the command
    # substitution returns at that EOF, not when the job ends.
    _report=$(setsid "${AIRFLOW_ASYNC_SH:-/bin/sh}" "$_dir/supervise.sh" "$_dir" "$_id" "$_timeout" "$_grace" "$_cwd_abs" "$_origin" \
        </dev/null 2>>"$_dir/supervisor.log" &)
    [ -n "$_report" ] || err "$E_WRITE" "the supervisor of '$_dir' did not start: see $_dir/supervisor.log"
    # $(...) dropped the report's final newline; put it back.
    printf '%s\n' "$_report"
}

main() {
    _session_umask=$(umask)
    _session_lc_all=${LC_ALL-}
    _session_lc_all_set=${LC_ALL+x}
    LC_ALL=C
    export LC_ALL
    launch "$@"
}

main "$@" || exit 1
