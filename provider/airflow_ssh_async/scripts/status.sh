# shellcheck shell=sh
# airflow-ssh-async status: facts about one or many jobs, in one call.
#
# Usage: status JOB_DIR...   (a leading '+' on a JOB_DIR: the caller has its
#        job.json already, do not send it again). A batch comes as
#        `status --stdin-args` with the folders on stdin (see lib.sh).
# Stdout: framed fields; `protocol`, `now`, `boot_id` once, then per job
# `job` (the dir as given), `path` (it with ~ resolved) and its facts. This script only reports;
# the client decides the state (job.py), so the rules live in one place.
#
# A triggerer asks about every job it watches on a host in one call, so the
# cost must not grow with forks per job: whatever the number of jobs, this
# runs `date` once and one `wc -c` per WC_BATCH stream files (lib.sh wc_list)
# (and one more wc for each job found finished, whose sizes must be read
# after its result); job.json, result.json, the boot id and /proc/PID/stat
# are read with the `read` builtin.

# read_json_file PATH WANT_BODY: a job.json or result.json that we wrote
# (one key a line, or one line). Sets _pid and _sup from the "pid" and
# "supervisor_pid" lines, and with WANT_BODY=1 the whole text in _body (the
# final newline kept only when the file has one). Without WANT_BODY it stops
# once both pids are read. _have=0 when there is no such file.
read_json_file() {
    _pid=
    _sup=
    _body=
    _have=0
    [ -f "$1" ] || return 0
    _have=1
    while :; do
        _l=
        if IFS= read -r _l; then
            _nl=$NL
        else
            [ -n "$_l" ] || break
            _nl=
        fi
        case $_l in
            '  "pid": '*)
                _pid=${_l#'  "pid": '}
                _pid=${_pid%,}
                ;;
            '  "supervisor_pid": '*)
                _sup=${_l#'  "supervisor_pid": '}
                _sup=${_sup%,}
                ;;
        esac
        if [ "$2" -eq 1 ]; then
            _body=$_body$_l$_nl
        elif [ -n "$_pid" ] && [ -n "$_sup" ]; then
            break
        fi
        [ -n "$_nl" ] || break
    done 2>/dev/null <"$1" || _have=0
    case $_pid in '' | *[!0-9]*) _pid= ;; esac
    case $_sup in '' | *[!0-9]*) _sup= ;; esac
}

# stream_sizes JOB...: wc_list lines for the streams of every job, in the
# order status_one asks for their sizes. A path with a newline in it is
# left out (status_one then asks wc about it alone).
stream_sizes() {
    while [ $# -gt 0 ]; do
        _wl=
        _wi=0
        while [ $# -gt 0 ] && [ "$_wi" -lt "$WC_BATCH" ]; do
            expand_home_v "${1#+}"
            # shellcheck disable=SC2154 # _path is set by lib.sh's helper above
            case $_path in *"$NL"*) ;; *) _wl=$_wl$NL$_path/stdout$NL$_path/stderr$NL$_path/progress ;; esac
            shift
            _wi=$((_wi + 3))
        done
        wc_list "$_wl"
    done
}

# sizes_now DIR: _out, _err, _prog from a wc of DIR's streams alone.
sizes_now() {
    _out=0
    _err=0
    _prog=0
    _wcout=$(cd "$1" 2>/dev/null && wc -c stdout stderr progress 2>/dev/null)
    while read -r _n _f; do
        case $_f in
            stdout) _out=$_n ;;
            stderr) _err=$_n ;;
            progress) _prog=$_n ;;
        esac
    done <<EOF
$_wcout
EOF
}

status_one() {
    _want_job_json=1
    _arg=$1
    case $_arg in +*)
        _want_job_json=0
        _arg=${_arg#+}
        ;;
    esac
    expand_home_v "$_arg"
    _d=$_path
    # Take this job's lines of the shared wc first, whatever follows.
    size_of "$_d/stdout"
    # shellcheck disable=SC2154 # _size is set by lib.sh's size_of
    _out=$_size
    size_of "$_d/stderr"
    _err=$_size
    size_of "$_d/progress"
    _prog=$_size
    field job "$1"
    field path "$_d"
    if [ ! -d "$_d" ]; then
        field exists 0
        return 0
    fi
    field exists 1
    read_json_file "$_d/job.json" "$_want_job_json"
    [ "$_want_job_json" -eq 1 ] && [ "$_have" -eq 1 ] && field job.json "$_body"
    if [ "$_have" -eq 0 ] && [ "$_want_job_json" -eq 1 ]; then
        # No job.json: a launch in progress, or one that died half way.
        if launch_over "$_d"; then field launch_over 1; else field launch_over 0; fi
        # shellcheck disable=SC2154 # _launch_age is set by lib.sh's helper above
        [ -n "$_launch_age" ] && field launch_age "$_launch_age"
    fi
    # Liveness before result.json: a supervisor seen gone has written its
    # result already, if it ever will, so "no result and no supervisor" is
    # never a supervisor that was just writing it.
    if [ -n "$_pid" ]; then
        if kill -0 "$_pid" 2>/dev/null; then field job_alive 1; else field job_alive 0; fi
        proc_start_v "$_pid"
        # shellcheck disable=SC2154 # _pstart is set by lib.sh's helper above
        field pid_start "$_pstart"
    fi
    if [ -n "$_sup" ]; then
        if kill -0 "$_sup" 2>/dev/null; then field supervisor_alive 1; else field supervisor_alive 0; fi
        proc_start_v "$_sup"
        field supervisor_start "$_pstart"
    fi
    read_json_file "$_d/result.json" 1
    if [ "$_have" -eq 1 ]; then
        field result.json "$_body"
        # The shared wc ran before this result was read: the job may have
        # written its last output in between. Sizes taken now are final.
        sizes_now "$_d"
    fi
    [ -e "$_d/cancel" ] && field cancel_requested 1
    field stdout_size "$_out"
    field stderr_size "$_err"
    field progress_size "$_prog"
}

report() {
    next_wc
    for _job do
        status_one "$_job"
    done
    # Drain what is left so that wc never dies of a closed pipe.
    while read -r _wn _wname; do :; done
}

main() {
    LC_ALL=C
    export LC_ALL
    field protocol "$PROTOCOL"
    _now=$(now)
    field now "$_now"
    boot_id_v
    # shellcheck disable=SC2154 # _boot is set by lib.sh's helper above
    field boot_id "$_boot"
    [ $# -gt 0 ] || return 0
    # A few wc runs for every stream of every job; their lines come in
    # argument order.
    stream_sizes "$@" | report "$@"
}

main "$@" || exit 1
