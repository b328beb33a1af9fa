# shellcheck shell=sh
# airflow-ssh-async supervise: watch one job to its end.
#
# Usage: supervise JOB_DIR JOB_ID TIMEOUT GRACE CWD ORIGIN   (started by launch under setsid)
#
# Starts the job (`/bin/sh command`) in its own session and process group,
# writes job.json, prints the launch report on stdout and closes it, then
# waits. It enforces the time limit (SIGTERM to the job's process group,
# SIGKILL after GRACE seconds), escalates a cancel the same way, and writes
# result.json atomically when the job ends. Beside the job it costs this one
# shell and a short `sleep`.

# tick: how long to sleep between checks; short at first so that quick jobs
# report at once, then one second.
tick() {
    if [ "$_ticks" -lt 20 ]; then
        _ticks=$((_ticks + 1))
        sleep 0.1 2>/dev/null || sleep 1
    else
        sleep 1
    fi
}

write_job_json() {
    {
        printf '{\n'
        printf '  "protocol": %s,\n' "$PROTOCOL"
        printf '  "id": %s,\n' "$(json_str "$_id")"
        printf '  "host": %s,\n' "$(json_str "$(uname -n)")"
        printf '  "user": %s,\n' "$(json_str "$(id -un 2>/dev/null)")"
        printf '  "job_dir": %s,\n' "$(json_str "$_dir")"
        printf '  "cwd": %s,\n' "$(json_str "$_cwd")"
        printf '  "origin": %s,\n' "$(json_str "$_origin")"
        printf '  "pid": %s,\n' "$_pid"
        printf '  "pgid": %s,\n' "$_pid"
        printf '  "pid_start": %s,\n' "$(json_str "$(proc_start "$_pid")")"
        printf '  "supervisor_pid": %s,\n' "$$"
        printf '  "supervisor_start": %s,\n' "$(json_str "$(proc_start "$$")")"
        printf '  "boot_id": %s,\n' "$(json_str "$(boot_id)")"
        printf '  "start_time": %s,\n' "$_start"
        printf '  "timeout": %s,\n' "$_timeout"
        printf '  "grace": %s\n' "$_grace"
        printf '}\n'
    } | write_atomic "$_dir/job.json"
}

# write_result REASON EXIT_CODE SIGNAL
write_result() {
    printf '{"protocol": %s, "reason": "%s", "exit_code": %s, "signal": %s, "end_time": %s}\n' \
        "$PROTOCOL" "$1" "$2" "$3" "$(now)" | write_atomic "$_dir/result.json"
}

# When the job ends: the reason a person or the time limit gave, else what
# the exit status says (128+N from the shell is signal N).
finish() {
    _status=$1
    if [ "$_status" -gt 128 ]; then
        _code=null
        _sig=$((_status - 128))
    else
        _code=$_status
        _sig=null
    fi
    if [ -e "$_dir/cancel" ]; then
        _reason=cancelled
    elif [ -e "$_dir/timed_out" ]; then
        _reason=timed_out
    elif [ "$_sig" != null ]; then
        _reason=signal
    else
        _reason=exited
    fi
    write_result "$_reason" "$_code" "$_sig"
}

supervise() {
    _dir=$1
    _id=$2
    _timeout=$3
    _grace=$4
    _cwd=$5
    _origin=$6
    _ticks=0
    trap '' HUP
    cd "$_dir" || exit 1
    : >stdout
    : >stderr
    _start=$(now)
    # The env file holds the task's environment (secrets included): sourced
    # by the job's own shell and removed before the command runs, so it never
    # reaches argv and lives on disk only as long as the launch.
    (
        # shellcheck source=/dev/null # written by launch at run time
        . ./env
        rm -f ./env
        AIRFLOW_ASYNC_JOB_ID=$_id
        AIRFLOW_ASYNC_JOB_DIR=$_dir
        AIRFLOW_ASYNC_PROGRESS=$_dir/progress
        export AIRFLOW_ASYNC_JOB_ID AIRFLOW_ASYNC_JOB_DIR AIRFLOW_ASYNC_PROGRESS
        cd "$_cwd" || exit 126
        exec setsid /bin/sh "$_dir/command"
    ) </dev/null >stdout 2>stderr &
    _pid=$!
    write_job_json || say "cannot write $_dir/job.json"
    (
        LC_ALL=C
        field protocol "$PROTOCOL"
        field job_dir "$_dir"
        field pid "$_pid"
        field start_time "$_start"
    )
    exec >/dev/null

    _deadline=0
    [ "$_timeout" -gt 0 ] && _deadline=$((_start + _timeout))
    _term_at=0
    while kill -0 "$_pid" 2>/dev/null; do
        tick
        _now=$(now)
        if [ "$_term_at" -eq 0 ]; then
            if [ -e cancel ]; then
                # signal.sh has sent SIGTERM already; send it again in case
                # it came before the job's setsid made its process group.
                _term_at=$_now
                kill_group TERM "$_pid"
            elif [ "$_deadline" -gt 0 ] && [ "$_now" -ge "$_deadline" ]; then
                now >timed_out
                _term_at=$_now
                kill_group TERM "$_pid"
            fi
        elif [ "$_now" -ge $((_term_at + _grace)) ]; then
            kill_group KILL "$_pid"
        fi
    done
    wait "$_pid"
    finish "$?"
}

main() {
    supervise "$@"
}

main "$@" || exit 1
