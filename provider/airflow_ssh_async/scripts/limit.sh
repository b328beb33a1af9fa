# shellcheck shell=sh
# airflow-ssh-async limit: move a running job's execution_timeout deadline.
#
# Usage: limit JOB_DIR SECONDS
#        SECONDS: from now (on this host's clock), when the task's try that
#        watches the job runs out of its execution_timeout.
# Stdout: framed `outcome`: moved (the supervisor ends the job then, or at
# its job_timeout if that comes sooner), finished (it had ended already),
# unsupported (its supervisor predates the deadline file: the limit it
# started with stays) or gone (no result, and its supervisor is gone).
#
# Used when a retry re-attaches to a job still running: each try has its
# own execution_timeout. The file is replaced whole (rename), then SIGUSR1
# wakes the supervisor, which reads it again (supervise.sh, "limits").

move_deadline() {
    _d=$(expand_home "$1")
    case $2 in
        '' | *[!0-9]*) err "$E_USAGE" "SECONDS must be a whole number of seconds, not '$2'" ;;
    esac
    [ -d "$_d" ] || err "$E_NOTFOUND" "no job directory '$_d'"
    [ -f "$_d/job.json" ] || err "$E_NOTFOUND" "'$_d' has no job.json: the launch never completed"
    if [ -f "$_d/result.json" ]; then
        field outcome finished
        return 0
    fi
    if [ "$(json_text deadline_file "$_d/job.json")" != deadline ]; then
        field outcome unsupported
        return 0
    fi
    _sup=$(json_int supervisor_pid "$_d/job.json")
    if ! same_process "$_sup" "$(json_text supervisor_start "$_d/job.json")"; then
        field outcome gone
        return 0
    fi
    printf '%s\n' $(($(now) + $2)) | write_atomic "$_d/deadline" ||
        err "$E_WRITE" "cannot write '$_d/deadline' (disk full?)"
    kill -USR1 "$_sup" 2>/dev/null
    field outcome moved
}

main() {
    [ $# -eq 2 ] || err "$E_USAGE" "usage: limit JOB_DIR SECONDS"
    move_deadline "$@"
}

main "$@" || exit 1
