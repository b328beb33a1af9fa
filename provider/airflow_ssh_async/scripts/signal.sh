# shellcheck shell=sh
# airflow-ssh-async signal: cancel a job (SIGTERM to its whole process group,
# SIGKILL after the grace period).
#
# Usage: signal JOB_DIR GRACE
# Stdout: framed `outcome`: cancelled, finished (it had ended already),
# gone (no result, and its process is no longer the one we started, or a
# launch that died before job.json: lib.sh's launch_over) or pending (the
# launch is still starting: the cancel is recorded for its supervisor).
#
# The `cancel` file records when it was asked and the grace period asked
# for (`TIME GRACE`): the supervisor escalates to SIGKILL that many seconds
# after the SIGTERM, whatever grace the launch gave; when it is gone, this
# script does so itself. A job that then exits 0 on its own reads
# `succeeded` (its exit status wins); any other end reads `cancelled`.
#
# A job still starting (no job.json, its launch not over): this script writes
# `cancel`, then looks for job.json again, and reports `pending` if there is
# still none; the supervisor writes job.json, then looks for `cancel` (its
# first act()). Whichever comes second sees the other's file, so a cancel is
# never lost between the launch report and job.json.

# end_group PGID GRACE: SIGTERM to the group, then SIGKILL once GRACE
# seconds passed with any member of it (not only its leader) alive.
end_group() {
    kill_group TERM "$1"
    _i=0
    while kill -0 "-$1" 2>/dev/null && [ "$_i" -lt "$2" ]; do
        sleep 1
        _i=$((_i + 1))
    done
    kill_group KILL "$1"
}

cancel() {
    _d=$(expand_home "$1")
    _grace=$2
    case $_grace in '' | *[!0-9]*) err "$E_USAGE" "grace must be a number of seconds, not '$_grace'" ;; esac
    [ -d "$_d" ] || err "$E_NOTFOUND" "no job directory '$_d'"
    if [ ! -f "$_d/job.json" ]; then
        # A launch that died half way: nothing runs, only its secrets remain.
        if launch_over "$_d"; then
            # Removing them changes the folder: say that it was found over.
            now >"$_d/launch_died"
            remove_secrets "$_d"
            field outcome gone
            return 0
        fi
        printf '%s %s\n' "$(now)" "$_grace" >"$_d/cancel" || err "$E_WRITE" "cannot write '$_d/cancel'"
        if [ ! -f "$_d/job.json" ]; then
            field outcome pending
            return 0
        fi
    fi
    _pid=$(json_int pid "$_d/job.json")
    _pid_start=$(json_text pid_start "$_d/job.json")
    if [ -f "$_d/result.json" ]; then
        # Ended, but what it left in the background of its process group
        # still runs: end that (a retry never starts beside it).
        if [ "$(json_text boot_id "$_d/job.json")" = "$(boot_id)" ] && group_alive "$_pid" "$_pid_start"; then
            end_group "$_pid" "$_grace"
        fi
        field outcome finished
        return 0
    fi
    _sup=$(json_int supervisor_pid "$_d/job.json")
    _sup_start=$(json_text supervisor_start "$_d/job.json")
    # Never signal a process group that is not ours: after a reboot or pid
    # reuse the number belongs to someone else.
    if [ "$(json_text boot_id "$_d/job.json")" != "$(boot_id)" ] ||
        ! group_alive "$_pid" "$_pid_start"; then
        field outcome gone
        return 0
    fi
    printf '%s %s\n' "$(now)" "$_grace" >"$_d/cancel"
    kill_group TERM "$_pid"
    # Wake the supervisor so that it escalates at once rather than at its
    # next timer: only one that says it takes the signal (older ones would
    # die of it) and is still the process it was.
    if [ "$(json_text wake_signal "$_d/job.json")" = USR1 ] && same_process "$_sup" "$_sup_start"; then
        kill -USR1 "$_sup" 2>/dev/null
    fi
    if ! same_process "$_sup" "$_sup_start"; then
        end_group "$_pid" "$_grace"
    fi
    field outcome cancelled
}

main() {
    [ $# -eq 2 ] || err "$E_USAGE" "usage: signal JOB_DIR GRACE"
    cancel "$@"
}

main "$@" || exit 1
