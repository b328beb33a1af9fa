# shellcheck shell=sh
# airflow-ssh-async status: facts about one or many jobs, in one call.
#
# Usage: status JOB_DIR...   (a leading '+' on a JOB_DIR: the caller has its
#        job.json already, do not send it again)
# Stdout: framed fields; `protocol`, `now`, `boot_id` once, then per job
# `job` (the dir as given), `path` (it with ~ resolved) and its facts. This script only reports;
# the client decides the state (job.py), so the rules live in one place.

status_one() {
    _want_job_json=1
    _arg=$1
    case $_arg in +*)
        _want_job_json=0
        _arg=${_arg#+}
        ;;
    esac
    field job "$1"
    _d=$(expand_home "$_arg")
    field path "$_d"
    if [ ! -d "$_d" ]; then
        field exists 0
        return 0
    fi
    field exists 1
    [ "$_want_job_json" -eq 1 ] && field_file job.json "$_d/job.json"
    field_file result.json "$_d/result.json"
    if [ -f "$_d/job.json" ]; then
        _pid=$(json_int pid "$_d/job.json")
        _sup=$(json_int supervisor_pid "$_d/job.json")
        if [ -n "$_pid" ]; then
            if kill -0 "$_pid" 2>/dev/null; then field job_alive 1; else field job_alive 0; fi
            field pid_start "$(proc_start "$_pid")"
        fi
        if [ -n "$_sup" ]; then
            if kill -0 "$_sup" 2>/dev/null; then field supervisor_alive 1; else field supervisor_alive 0; fi
            field supervisor_start "$(proc_start "$_sup")"
        fi
    fi
    [ -e "$_d/cancel" ] && field cancel_requested 1
    # One wc for the three streams: its lines come in argument order.
    for _f in stdout stderr progress; do
        [ -f "$_d/$_f" ] || field "${_f}_size" 0
    done
    set --
    for _f in stdout stderr progress; do
        [ -f "$_d/$_f" ] && set -- "$@" "$_f"
    done
    [ $# -eq 0 ] && return 0
    (cd "$_d" && wc -c "$@") | while read -r _n _name; do
        [ "$_name" = total ] || field "${_name}_size" "$_n"
    done
}

main() {
    LC_ALL=C
    export LC_ALL
    field protocol "$PROTOCOL"
    field now "$(now)"
    field boot_id "$(boot_id)"
    for _job do
        status_one "$_job"
    done
}

main "$@" || exit 1
