# shellcheck shell=sh
# airflow-ssh-async status: facts about one or many jobs, in one call.
#
# Usage: status [--wait|--wait-parts MAX GROW_AFTER KNOWN] JOB_DIR...   (a leading '+' on
#        a JOB_DIR: the caller has its job.json already, do not send it
#        again). A batch comes as `status --stdin-args` with the folders on
#        stdin (see lib.sh). With --wait the report is held until a watched
#        job ends, or for at most MAX seconds (see wait_news). With
#        --wait-parts a job's end does not end the call: the ended jobs'
#        report goes out at once as a part (`part_begin`, a report of those
#        jobs only, `part_end`) and the wait goes on for the others; the
#        report at the end then covers only the jobs not reported in a part.
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
    free_of "$_d"
    [ -n "$_free" ] && field free_kb "$_free"
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
        # written its last output in between. Sizes taken now are final
        # (in a part the wc ran after the end was seen: they are already).
        [ "$_sizes_final" -eq 1 ] || sizes_now "$_d"
    fi
    [ -e "$_d/cancel" ] && field cancel_requested 1
    # output_limit or a full disk cut a stream short: its cap's record
    # (supervise.sh cap: STATE CAUSE AT DROPPED), read with the builtin.
    for _s in stdout stderr; do
        [ -f "$_d/$_s.cut" ] || continue
        _cut=
        { IFS= read -r _cut || :; } 2>/dev/null <"$_d/$_s.cut"
        # shellcheck disable=SC2086 # splitting the record's fields is the point
        set -- $_cut
        [ $# -eq 4 ] && [ "$2" != - ] && field "${_s}_cut" "$2 $3 $4"
    done
    field stdout_size "$_out"
    field stderr_size "$_err"
    field progress_size "$_prog"
}

# --- the long poll ------------------------------------------------------------
# wait_news MAX GROW_AFTER KNOWN JOB...: hold the report until a watcher has
# something to act on, at most MAX seconds:
# - a watched job ended: its result.json is there, its folder is gone, or
#   its supervisor's pid is not alive (killed with SIGKILL, writing nothing);
# - its output grew: the streams' total size is not KNOWN (what the caller's
#   last report said; `-`: what it is now), once GROW_AFTER seconds have
#   passed (-1: never), so the caller bounds how often output ends a wait.
# The supervisor rewrites ASYNC_DIR/.ended as a job ends (supervise.sh).
# With inotifywait one watcher runs beside the loop for the whole call (see
# watcher): `inotifywait -m` on each async_dir (and on the job folders once
# growth counts) and a tick a second, both into one FIFO that the loop
# reads, so the loop sleeps in `read` and forks nothing while nothing
# happens (it counts the ticks instead of asking `date`). Without
# inotifywait, or when it cannot watch, the loop naps NAP seconds between
# reads of .ended. Whichever: every SCAN_EVERY seconds it looks at every job
# itself, for a supervisor that died (killed with SIGKILL: it writes no
# .ended) and for supervisors older than .ended. Every second
# it also writes an empty `wait` record: a caller that gave up (closed the
# channel) ends this script by SIGPIPE within a second. _woke says why it
# returned: ended, grew, time.
NAP=0.25
SCAN_EVERY=5
wait_news() {
    _max=$1
    _grow=$2
    _known=$3
    shift 3
    case $_max in '' | *[!0-9]*) _max=0 ;; esac
    case $_grow in '' | *[!0-9]*) _grow=-1 ;; esac
    _woke='time'
    [ "$_max" -gt 0 ] || return 0
    # "SUPERVISOR_PID ARG" a job (ARG as given), and the distinct async_dirs.
    _watch=
    _bases=
    _ended_args=
    for _w do
        expand_home_v "${_w#+}"
        case $_path in *"$NL"*)
            _parts=0 # a part could not name it: report all at the end
            continue
            ;;
        esac
        if [ ! -d "$_path" ] || [ -e "$_path/result.json" ]; then
            [ "$_parts" -eq 1 ] || { _woke=ended && return 0; }
            _ended_args=$_ended_args$NL$_w
            continue
        fi
        read_json_file "$_path/job.json" 0
        _watch="$_watch$NL${_sup:-0} $_w"
        case $NL$_bases$NL in *"$NL${_path%/*}$NL"*) ;; *) _bases=$_bases$NL${_path%/*} ;; esac
    done
    if [ -n "$_ended_args" ]; then
        [ "$_parts" -eq 1 ] || { _woke=ended && return 0; }
        report_part
    fi
    if [ "$_parts" -eq 1 ] && [ -z "$_watch" ]; then
        _woke=ended
        return 0
    fi
    _start_w=$(now)
    _until=$((_start_w + _max))
    [ "$_grow" -ge 0 ] && _grow=$((_start_w + _grow))
    if [ "$_known" = - ] && [ "$_grow" -ge 0 ]; then _known=$(total_size "$@"); fi
    _inotify=0
    command -v inotifywait >/dev/null 2>&1 && watcher_start 0 && _inotify=1
    ended_marks
    _seen=$_marks
    _now_w=$_start_w
    _sized=0
    _next_scan=$_start_w
    while :; do
        field wait "" 2>/dev/null || exit 1
        # Every job, every SCAN_EVERY seconds (ends reach .ended at once).
        if [ "$_now_w" -ge "$_next_scan" ]; then
            _next_scan=$((_now_w + SCAN_EVERY))
            ended_news || return 0
        fi
        if [ "$_grow" -ge 0 ] && [ "$_now_w" -ge "$_grow" ]; then
            # Growth counts from now on: the watcher also watches the job
            # folders (a stream written), once.
            [ "$_inotify" -eq 1 ] && [ "$_wgrowing" -eq 0 ] && { watcher_start 1 || watcher_lost; }
            # Sizes are read when something may have changed them: at the
            # first look, then after an event (none: no write).
            if [ "$_sized" -eq 0 ] && [ "$(total_size "$@")" != "$_known" ]; then
                _woke=grew
                return 0
            fi
            _sized=1
        fi
        [ "$_now_w" -lt "$_until" ] || return 0
        ended_marks
        if [ "$_marks" != "$_seen" ]; then
            : # an end came while this loop was busy (a part, its nap): no wait
        elif [ "$_inotify" -eq 1 ]; then
            # An event that came before its watch was set up is seen by the
            # marks check below at the next tick, a second late at most.
            watcher_next
            case $_wnext in
                t) _now_w=$((_now_w + 1)) ;;
                e) _sized=0 ;;
                *) watcher_lost ;; # no inotify here (too many watches, a file system without it): naps
            esac
        else
            _i=0
            while [ "$_i" -lt 4 ]; do
                sleep "$NAP" 2>/dev/null || { sleep 1 && break; }
                ended_marks
                [ "$_marks" = "$_seen" ] || break
                _i=$((_i + 1))
            done
            _sized=0
        fi
        ended_marks
        if [ "$_marks" != "$_seen" ]; then
            _seen=$_marks
            # A job ended in one of these folders: one of ours?
            ended_news || return 0
            # Ends come in bursts: let the next ones gather a moment, so
            # that a storm of ends costs a few looks a second, not one each.
            [ "$_parts" -eq 0 ] || sleep "$NAP" 2>/dev/null || :
        fi
        [ "$_inotify" -eq 1 ] || _now_w=$(now)
    done
}

# ended_news: 1 when the wait is over because a watched job ended (without
# parts, or the last watched job in a part), else 0 (with parts, the ended
# jobs were reported and are no longer watched).
ended_news() {
    scan_watched && return 0
    if [ "$_parts" -eq 1 ]; then
        # Only now the watch list is rebuilt: take_ended copies it line by
        # line, which at 1,000 jobs costs more than the look itself.
        take_ended
        [ -n "$_ended_args" ] && report_part
        [ -n "$_watch" ] && return 0
    fi
    _woke=ended
    return 1
}

# report_part: the report of the jobs in _ended_args (one ARG a line), as a
# part: part_begin, protocol, now, boot_id, the jobs, part_end. Their sizes
# are read after their ends were seen, so they are final.
report_part() {
    field part_begin ""
    field protocol "$PROTOCOL"
    field now "$(now)"
    boot_id_v
    # shellcheck disable=SC2154 # _boot is set by lib.sh's boot_id_v above
    field boot_id "$_boot"
    _spaces=
    _sizes_final=1
    set -f
    IFS=$NL
    # shellcheck disable=SC2086 # one ARG a line: splitting is the point
    set -- $_ended_args
    unset IFS
    set +f
    stream_sizes "$@" | part_jobs "$@"
    _sizes_final=0
    _reported=$_reported$_ended_args
    _ended_args=
    field part_end ""
}

part_jobs() {
    next_wc
    for _job do
        status_one "$_job"
    done
    while read -r _wn _wname; do :; done
}

# watched_ended LINE: true when the job of a _watch LINE ("SUPERVISOR_PID
# JOB_ARG") has ended (see wait_news): its folder or supervisor is gone, or
# its result is there. Sets _sa to its JOB_ARG.
watched_ended() {
    _sp=${1%% *}
    _sa=${1#* }
    expand_home_v "${_sa#+}"
    [ ! -d "$_path" ] || [ -e "$_path/result.json" ] || { [ "$_sp" != 0 ] && ! kill -0 "$_sp" 2>/dev/null; }
}

# take_ended: move every watched job that has ended from _watch to _ended_args.
take_ended() {
    _still=
    set -f
    IFS=$NL
    for _l in $_watch; do
        if watched_ended "$_l"; then
            _ended_args=$_ended_args$NL$_sa
        else
            _still=$_still$NL$_l
        fi
    done
    unset IFS
    set +f
    _watch=$_still
}

# scan_watched: 1 when a watched job has ended (see wait_news), else 0.
scan_watched() {
    _ended=0
    set -f
    IFS=$NL
    for _l in $_watch; do
        if watched_ended "$_l"; then
            _ended=1
            break
        fi
    done
    unset IFS
    set +f
    return "$_ended"
}

# total_size JOB...: the size of every stream of the JOBs, together.
total_size() {
    stream_sizes "$@" | awk '$2 == "total" { s += $1 } END { print s + 0 }'
}

# ended_marks: the .ended lines of the watched async_dirs into _marks.
ended_marks() {
    _marks=
    set -f
    IFS=$NL
    for _b in $_bases; do
        _x=
        { IFS= read -r _x || :; } 2>/dev/null <"$_b/.ended"
        _marks=$_marks$NL$_x
    done
    unset IFS
    set +f
}

# watcher_start GROWING: (re)start the watcher of wait_news, with GROWING=1
# on the job folders too. The first start makes a private folder for its
# FIFO and opens the FIFO's reading end on fd 3; a restart starts the new
# watcher before it stops the old one, so the FIFO never lacks a writer
# (a reader would see its end). Status 1: no FIFO could be made.
_wpid=
_wtmp=
_wgrowing=0
watcher_start() {
    if [ -z "$_wtmp" ]; then
        _wtmp=${TMPDIR:-/tmp}/airflow-ssh-async-wait.$$
        if ! { mkdir -m 700 "$_wtmp" && mkfifo "$_wtmp/fifo"; } 2>/dev/null; then
            rm -rf "$_wtmp" 2>/dev/null
            _wtmp=
            return 1
        fi
        trap watcher_stop EXIT
    fi
    _wgrowing=$1
    _ev=close_write
    [ "$1" -eq 1 ] && _ev=close_write,modify
    {
        set -f
        IFS=$NL
        for _b in $_bases; do printf '%s\n' "$_b"; done
        if [ "$1" -eq 1 ]; then
            for _l in $_watch; do
                _sa=${_l#* }
                expand_home_v "${_sa#+}"
                printf '%s\n' "$_path"
            done
        fi
        unset IFS
        set +f
    } >"$_wtmp/paths$1"
    _wold=$_wpid
    # Its stdio is never the channel's (sshd would hold the call open until
    # the watcher ends), and it holds no reading end of the FIFO (it would
    # never see that this script has gone, and block once the FIFO is full).
    # `exec` in a subshell, not redirections on the call: for a function
    # call the shell keeps copies of the fds it replaces (dash: fd 10 and
    # up), the channel's and fd 3 among them.
    (
        exec 3<&- </dev/null 2>/dev/null >"$_wtmp/fifo"
        watcher "$_ev" "$_wtmp" "$1"
    ) &
    _wpid=$!
    if [ -z "$_wold" ]; then
        exec 3<"$_wtmp/fifo"
    else
        kill "$_wold" 2>/dev/null
    fi
    return 0
}

# watcher EVENTS TMP GROWING (in the background, stdout the FIFO): a `t`
# line a second, and a line per event of `inotifywait -m` on the paths of
# TMP/pathsGROWING; `x` each second once inotifywait has gone (it could not
# watch). It ends with its inotifywait on TERM (wait_news is done) and once
# the FIFO has no reader: this script ended, even by SIGKILL or SIGPIPE
# without its EXIT trap, so the watcher then also removes TMP.
watcher() {
    # The TERM trap before inotifywait starts (a restart may stop this
    # watcher at once: without the trap it died and left inotifywait
    # running), and SIGPIPE ignored only after, so that an inotifywait left
    # anyway dies at its next event into a FIFO that has no reader.
    _ip=
    trap '[ -n "$_ip" ] && kill "$_ip" 2>/dev/null; exit 0' TERM
    inotifywait -m -q -e "$1" -e moved_to --fromfile "$2/paths$3" &
    _ip=$!
    trap '' PIPE
    # A tick after each second, not at the start: a restarted watcher must
    # not add a second to the loop's clock.
    while sleep 1 && printf 't\n'; do
        kill -0 "$_ip" 2>/dev/null || printf 'x\n'
    done
    kill "$_ip" 2>/dev/null
    rm -rf "$2"
}

# watcher_next: the watcher's next line into _wnext: `t` a tick, `e` an
# event, `x` no watcher (inotifywait gone, or the FIFO ended).
watcher_next() {
    _wnext=
    if ! IFS= read -r _wnext <&3; then
        _wnext=x
        return 0
    fi
    case $_wnext in t | x) ;; *) _wnext=e ;; esac
}

# watcher_lost: inotify cannot serve this call: stop the watcher, nap instead.
watcher_lost() {
    _inotify=0
    watcher_stop
    _now_w=$(now)
}

# watcher_stop: the watcher and its inotifywait end, its folder goes.
watcher_stop() {
    [ -n "$_wpid" ] && kill "$_wpid" 2>/dev/null
    _wpid=
    [ -n "$_wtmp" ] && { exec 3<&- ; rm -rf "$_wtmp"; } 2>/dev/null
    _wtmp=
}

# spaces JOB...: one `df -Pk` for the folders the jobs are in (their
# async_dirs, nearly always one), into _spaces: `AVAIL_KB DIR` lines. A
# path with a newline, or a df that answers for fewer folders than asked
# (one vanished meanwhile), gives no figures: the space is a hint only.
spaces() {
    _dirs=
    for _job do
        expand_home_v "${_job#+}"
        _p=${_path%/*}
        case $_p in '' | *"$NL"*) continue ;; esac
        [ -d "$_p" ] || continue
        case "$NL$_dirs$NL" in *"$NL$_p$NL"*) continue ;; esac
        _dirs=$_dirs${_dirs:+$NL}$_p
    done
    _spaces=
    [ -n "$_dirs" ] || return 0
    set -f
    IFS=$NL
    # shellcheck disable=SC2086 # one folder a line: splitting is the point
    _dfout=$(df -Pk $_dirs 2>/dev/null)
    unset IFS
    set +f
    _dfout=${_dfout#*"$NL"}
    _rest=$_dirs
    while [ -n "$_rest" ]; do
        _p=${_rest%%"$NL"*}
        case $_rest in *"$NL"*) _rest=${_rest#*"$NL"} ;; *) _rest= ;; esac
        _line=${_dfout%%"$NL"*}
        case $_dfout in *"$NL"*) _dfout=${_dfout#*"$NL"} ;; *) _dfout= ;; esac
        set -f
        # shellcheck disable=SC2086 # the fields of a df line
        set -- $_line
        set +f
        _avail=
        [ $# -ge 6 ] && _avail=$4
        case $_avail in '' | *[!0-9]*)
            _spaces=
            return 0
            ;;
        esac
        _spaces=$_spaces$_avail' '$_p$NL
    done
}

# free_of DIR: the free KiB of the job folder DIR's parent from _spaces, in
# _free (empty: unknown).
free_of() {
    _free=
    _want=${1%/*}
    _rest=$_spaces
    while [ -n "$_rest" ]; do
        _line=${_rest%%"$NL"*}
        _rest=${_rest#*"$NL"}
        if [ "${_line#* }" = "$_want" ]; then
            _free=${_line%% *}
            return 0
        fi
    done
}

report() {
    spaces "$@"
    next_wc
    for _job do
        status_one "$_job"
    done
    # Drain what is left so that wc never dies of a closed pipe.
    while read -r _wn _wname; do :; done
}

main() {
    _woke=
    _parts=0
    _sizes_final=0
    _reported=
    if [ "${1-}" = --wait ] || [ "${1-}" = --wait-parts ]; then
        [ $# -ge 4 ] || err "$E_USAGE" "usage: status --wait MAX GROW_AFTER KNOWN JOB_DIR..."
        [ "$1" = --wait-parts ] && _parts=1
        _wmax=$2
        _wgrow=$3
        _wknown=$4
        shift 4
        wait_news "$_wmax" "$_wgrow" "$_wknown" "$@"
        if [ -n "$_reported" ]; then
            # The report covers the jobs that no part reported.
            _rest=
            set -f
            IFS=$NL
            for _l in $_watch; do _rest=$_rest$NL${_l#* }; done
            # shellcheck disable=SC2086 # one ARG a line: splitting is the point
            set -- $_rest
            unset IFS
            set +f
        fi
    fi
    field protocol "$PROTOCOL"
    [ -n "$_woke" ] && field woke "$_woke"
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
