# shellcheck shell=sh
# airflow-ssh-async supervise: watch one job to its end.
#
# Usage: supervise JOB_DIR JOB_ID TIMEOUT GRACE CWD ORIGIN [EXEC_LEFT [OUTPUT_LIMIT]]
#        (started by launch under setsid)
#
# Starts the job (`/bin/sh command`) in its own session and process group,
# prints the launch report on stdout and closes it, writes job.json, then
# waits. It enforces the time limit (SIGTERM to the job's process group,
# SIGKILL after GRACE seconds), escalates a cancel the same way, and writes
# result.json atomically when the job ends.
#
# Two limits, the sooner wins: TIMEOUT (job_timeout, seconds from the start)
# and the `deadline` file (Airflow's execution_timeout: one line, the epoch
# second when the task's try runs out; written here from EXEC_LEFT at the
# start, and rewritten by limit.sh when a retry re-attaches). The file is
# read again on every wake (limit.sh sends SIGUSR1), until the SIGTERM is
# sent. result.json's "limit" names the one that ended the job.
#
# No periodic tick: the supervisor sleeps in the `wait` builtin and wakes
# only when something happens.
# - Nothing due (no time limit, no SIGKILL pending): `wait JOB`. It returns
#   the moment the job ends, or when signal.sh's SIGUSR1 (a cancel; see
#   "wake_signal" in job.json) interrupts it. Beside the job: this shell only.
# - Something due at a known second: one `sleep` child for exactly the time
#   left, then
#     dash, busybox ash ("chld"): `wait SLEEP` under a CHLD trap, which these
#       shells honour by returning as soon as any child (the job) ends;
#     bash, other shells, or AIRFLOW_ASYNC_WAIT=tick ("tick"): a `sleep` of
#       at most one second, then look again, with SIGUSR1 ignored (a cancel
#       is seen within a second). bash (5.2) loses a child's exit status
#       when a trapped signal interrupts `wait` as the child ends (`wait`
#       then returns -1), so under bash no trap may interrupt a wait: it
#       ticks, also with nothing due. AIRFLOW_ASYNC_WAIT=waitn (`wait -n`)
#       is kept for tests.
#   Beside the job: this shell and one `sleep`.

# JOB_START: the job's first steps, in its own process (`/bin/sh -c`, $1 the
# job folder), which then becomes the command's shell. The env file holds the
# task's environment (secrets included): it is read, removed with `payload`
# while PATH is still the session's, then applied, and the command runs by
# an absolute path, so the environment (PATH too) cannot break the start.
# Positional parameters only: no name of ours can collide with a variable
# the environment sets. The env file's first lines give the session's umask
# and LC_ALL back; the task's exports follow and win.
# A job started by `&` from a non-interactive shell has SIGINT and SIGQUIT
# ignored, and no shell can undo that; `env --default-signal` (GNU
# coreutils 8.31+) can, in the same exec: the command starts with default
# dispositions, as from an SSH session. Where env lacks it (busybox) they
# stay ignored (docs/protocol.md). $3 is that env, found with the session's
# PATH, or empty.
# shellcheck disable=SC2016 # expanded by the job's shell, not here
JOB_START='[ -r "$1/env" ] || {
    printf "airflow-ssh-async: %s/env is missing: the job cannot start\n" "$1" >&2
    exit 126
}
set -- "$1" "$(cat "$1/env")" "$(command -v env)"
rm -f "$1/env" "$1/payload"
case $3 in /*) "$3" --default-signal=INT,QUIT true 2>/dev/null || set -- "$1" "$2" "" ;; *) set -- "$1" "$2" "" ;; esac
eval "$2"
[ -n "$3" ] && exec "$3" --default-signal=INT,QUIT /bin/sh "$1/command"
exec /bin/sh "$1/command"'

write_job_json() {
    _host=
    { IFS= read -r _host || :; } 2>/dev/null </proc/sys/kernel/hostname
    [ -n "$_host" ] || _host=$(uname -n)
    _user=${LOGNAME:-${USER:-}}
    [ -n "$_user" ] || _user=$(id -un 2>/dev/null)
    proc_start_v "$_pid"
    # shellcheck disable=SC2154 # _pstart is set by lib.sh's helper above
    _pid_start=$_pstart
    proc_start_v "$$"
    boot_id_v
    {
        printf '{\n'
        printf '  "protocol": %s,\n' "$PROTOCOL"
        # The two pids first: status.sh reads them with the `read` builtin,
        # a byte at a time under dash, and stops once it has both.
        printf '  "pid": %s,\n' "$_pid"
        printf '  "supervisor_pid": %s,\n' "$$"
        json_str_v "$_id"
        # shellcheck disable=SC2154 # _js is set by lib.sh's helper above
        printf '  "id": %s,\n' "$_js"
        json_str_v "$_host"
        printf '  "host": %s,\n' "$_js"
        json_str_v "$_user"
        printf '  "user": %s,\n' "$_js"
        json_str_v "$_dir"
        printf '  "job_dir": %s,\n' "$_js"
        json_str_v "$_cwd"
        printf '  "cwd": %s,\n' "$_js"
        json_str_v "$_origin"
        printf '  "origin": %s,\n' "$_js"
        printf '  "pgid": %s,\n' "$_pid"
        printf '  "pid_start": "%s",\n' "$_pid_start"
        printf '  "supervisor_start": "%s",\n' "$_pstart"
        # shellcheck disable=SC2154 # _boot is set by lib.sh's helper above
        printf '  "boot_id": "%s",\n' "$_boot"
        printf '  "start_time": %s,\n' "$_start"
        printf '  "timeout": %s,\n' "$_timeout"
        printf '  "grace": %s,\n' "$_grace"
        printf '  "deadline_file": "deadline",\n'
        printf '  "wake_signal": "USR1"\n'
        printf '}\n'
    } >job.json.tmp && mv -f job.json.tmp job.json
}

# DISK_FULL_KB: a filesystem with less free space than this when the job
# ends was full: its output was cut short (ENOSPC).
DISK_FULL_KB=16

# --- output_limit: the cap on what each stream stores ---------------------
#
# With OUTPUT_LIMIT > 0 the job's stdout and stderr are FIFOs in the job
# folder (stdout.pipe, stderr.pipe), each read by a `cap` of ours: a
# background child of this shell, in our process group, never in the job's,
# so a SIGTERM or SIGKILL of the job's group never reaches it, and the job's
# own exit status is what `wait` gives (no pipeline). No per-line work: the
# bytes go through `head -c` (one process) into the stream's file; past the
# limit, or once a write fails (a full disk), they are read in chunks
# (1 MiB, doubling up to CAP_CHUNK: two forks a chunk, so a fast writer
# costs a few forks a second), counted and discarded, so the job keeps
# running and never blocks nor gets SIGPIPE. The count in the record lags
# by up to one chunk while the job writes; the last one is exact. Each cap keeps a record in <stream>.cut (written
# at the start at its full size, rewritten in place: a full disk cannot keep
# it from being updated): `STATE CAUSE AT DROPPED`, STATE `open` or `ended`
# (the stream ended), CAUSE `-` (nothing cut), `output_limit`, `ENOSPC`,
# `EDQUOT` or `EIO`, AT the bytes stored, DROPPED the bytes discarded so far.
CAP_FIRST_CHUNK=1048576
CAP_CHUNK=67108864
CUT_RECORD=63

# cut_record FILE STATE CAUSE AT DROPPED: the record, rewritten in place.
cut_record() {
    _rec="$2 $3 $4 $5"
    printf "%-${CUT_RECORD}s\n" "$_rec" 1<>"$1" 2>/dev/null
}

# cap STREAM LIMIT: stdin (the job's STREAM, from its FIFO) into STREAM, up
# to LIMIT bytes; the rest counted and discarded (see above). Ends when
# every writer of the FIFO has closed it.
cap() {
    trap '' HUP INT QUIT USR1
    _cf=$1.cut
    # head's stderr is the only sign of a failed write; a file for it could
    # not be written on a full disk, so it comes back through $(...).
    # head writes through stdio: unbuffered (stdbuf -o0), each read is in
    # the file at once, so the output streams as it comes.
    _e=$(stdbuf -o0 head -c "$2" 2>&1 >"$1")
    _ok=$?
    _at=$(wc -c <"$1" 2>/dev/null) || _at=0
    _at=${_at##* }
    if [ "$_ok" -eq 0 ] && [ "$_at" -lt "$2" ]; then
        cut_record "$_cf" ended - "$_at" 0
        return 0
    fi
    if [ "$_ok" -eq 0 ]; then
        _cause=output_limit
    else
        case $_e in
            *'No space'*) _cause=ENOSPC ;;
            *[Qq]uota*) _cause=EDQUOT ;;
            *) _cause=EIO ;;
        esac
    fi
    cut_record "$_cf" open "$_cause" "$_at" 0
    _dropped=0
    _chunk=$CAP_FIRST_CHUNK
    while :; do
        _n=$(head -c "$_chunk" | wc -c)
        _n=${_n##* }
        _dropped=$((_dropped + _n))
        [ "$_n" -eq "$_chunk" ] || break
        cut_record "$_cf" open "$_cause" "$_at" "$_dropped"
        [ "$_chunk" -lt "$CAP_CHUNK" ] && _chunk=$((_chunk * 2))
    done
    # A stream of exactly LIMIT bytes lost nothing.
    [ "$_cause" = output_limit ] && [ "$_dropped" -eq 0 ] && _cause=-
    cut_record "$_cf" ended "$_cause" "$_at" "$_dropped"
}

# start_caps: the FIFOs and their caps; sets _out and _err, where the job's
# stdout and stderr go. Without a limit (or without mkfifo) the job writes
# its files itself, as it always did.
start_caps() {
    _out=stdout
    _err=stderr
    _caps=
    [ "$_olimit" -gt 0 ] || return 0
    # Without stdbuf (busybox-only hosts) head would hold small output in
    # its buffer: no cap there rather than a log that lags.
    command -v stdbuf >/dev/null 2>&1 || {
        say "no stdbuf on this host: output_limit is not enforced for this job"
        return 0
    }
    rm -f stdout.pipe stderr.pipe
    mkfifo stdout.pipe stderr.pipe 2>/dev/null || {
        rm -f stdout.pipe stderr.pipe
        say "mkfifo failed: output_limit is not enforced for this job"
        return 0
    }
    for _s in stdout stderr; do
        printf "%-${CUT_RECORD}s\n" "open - 0 0" >"$_s.cut"
        # Opening a FIFO for reading waits for its writer: the job, below.
        # Not on our stdout: the launch ends when the channel's last writer
        # closes it. `exec` redirections, not ones on the function call:
        # for those dash keeps the old stdout (the channel) open on fd 11.
        (
            exec >/dev/null <"$_s.pipe"
            cap "$_s" "$_olimit"
        ) &
        _caps="$_caps $!"
    done
    _out=stdout.pipe
    _err=stderr.pipe
}

# wait_caps: the job has ended; its caps end when the last writer of each
# FIFO closes it. Wait for both records to say `ended`, a few seconds at
# most while they flush what the job wrote last. A process the job left in
# the background (still in its group) may hold the FIFO for ever: then the
# result does not wait for it beyond a few naps, and has the counts so far
# (the cap goes on counting in its record).
CAPS_PATIENCE=50
wait_caps() {
    [ -n "$_caps" ] || return 0
    _i=0
    while [ "$_i" -lt "$CAPS_PATIENCE" ]; do
        _done=0
        for _s in stdout stderr; do
            _cs=
            { read -r _cs _rest || :; } 2>/dev/null <"$_s.cut"
            [ "$_cs" = ended ] && _done=$((_done + 1))
        done
        [ "$_done" -eq 2 ] && break
        [ "$_i" -ge 3 ] && group_alive "$_pid" && break
        sleep 0.1 2>/dev/null || sleep 1
        _i=$((_i + 1))
    done
    rm -f stdout.pipe stderr.pipe
}

# output_cut_v: the "output_cut" entries (a JSON array's items) into _cut:
# one per stream whose stored output stopped short. Without a cap (no
# <stream>.cut files) the job wrote its files itself and only a disk found
# full now tells that a write failed; which stream hit it is unknown, so
# each names the size it stopped at.
output_cut_v() {
    _cut=
    for _s in stdout stderr; do
        if [ -f "$_s.cut" ]; then
            _cause=
            { read -r _cs _cause _at _dr || :; } 2>/dev/null <"$_s.cut"
            case $_cause in '' | -) continue ;; esac
            case $_at$_dr in '' | *[!0-9]*) continue ;; esac
        elif [ -n "$_disk_full" ]; then
            _cause=ENOSPC
            _at=$(wc -c <"$_s" 2>/dev/null) || _at=0
            _at=$((_at + 0))
            _dr=null
        else
            continue
        fi
        _cut="$_cut${_cut:+, }{\"stream\": \"$_s\", \"cause\": \"$_cause\", \"at\": $_at, \"dropped\": $_dr}"
    done
}

# result_json_v REASON EXIT_CODE SIGNAL LIMIT: result.json's text into _json.
# With "group_left": true and "survivors" (each one's pid, uid and user) when
# drain gave up on processes of the job's group that outlived SIGKILL, and
# "output_cut" when output was cut short.
result_json_v() {
    _extra=
    [ -n "$_group_left" ] && _extra=", \"group_left\": true, \"survivors\": [$_survivors]"
    output_cut_v
    [ -n "$_cut" ] && _extra="$_extra, \"output_cut\": [$_cut]"
    _json="{\"protocol\": $PROTOCOL, \"reason\": \"$1\", \"exit_code\": $2, \"signal\": $3, \"limit\": $4, \"end_time\": $_end$_extra}"
}

# write_result REASON EXIT_CODE SIGNAL LIMIT (LIMIT: a JSON value).
# Atomically as a rule (write_atomic). When that fails (the disk is full),
# into result.reserve, which launch wrote at its full size before the job
# ran: rewritten in place (`1<>`: no truncation, so no new block is needed),
# cut to the text's length, then renamed to result.json.
write_result() {
    _end=$(now)
    free_kb_v .
    # shellcheck disable=SC2154 # _free is set by lib.sh's free_kb_v
    [ -n "$_free" ] && [ "$_free" -lt "$DISK_FULL_KB" ] && _disk_full=1
    result_json_v "$@"
    if printf '%s\n' "$_json" | write_atomic "$_dir/result.json"; then
        rm -f result.reserve
        return 0
    fi
    rm -f result.json.tmp
    if [ -z "$_disk_full" ]; then
        _disk_full=1
        result_json_v "$@"
    fi
    if [ -f result.reserve ] && printf '%s\n' "$_json" 1<>result.reserve; then
        # The spaces after the text are valid JSON; cutting them off only
        # spares them to every status read.
        dd if=/dev/null of=result.reserve bs=$((${#_json} + 1)) seek=1 2>/dev/null || :
        mv -f result.reserve result.json && return 0
    fi
    say "cannot write $_dir/result.json: $_json"
    return 1
}

# When the job ends: the reason a person or the time limit gave, else what
# the exit status says (128+N from the shell is signal N). Exit 0 after a
# cancel is `exited`: the exit status wins.
finish() {
    _status=$1
    # 128+N is the shell's "killed by signal N" for N up to 64 (SIGRTMAX on
    # Linux); above that it can only be the job's own exit code.
    if [ "$_status" -gt 128 ] && [ "$_status" -le 192 ]; then
        _code=null
        _sig=$((_status - 128))
    else
        _code=$_status
        _sig=null
    fi
    _lim=null
    # A cancel explains any end but exit 0: a job that finished its work
    # although asked to stop reports what it did (the cancel file, which
    # stays, says that a cancel was asked).
    if [ -e "$_dir/cancel" ] && [ "$_status" -ne 0 ]; then
        _reason=cancelled
    elif [ -e "$_dir/timed_out" ] || [ -n "$_ended_by" ]; then
        # _ended_by: a full disk may have kept the timed_out file from being written.
        _reason=timed_out
        [ -n "$_ended_by" ] && _lim="\"$_ended_by\""
    elif [ "$_sig" != null ]; then
        _reason=signal
    else
        _reason=exited
    fi
    write_result "$_reason" "$_code" "$_sig" "$_lim"
}

wait_mode() {
    _mode=${AIRFLOW_ASYNC_WAIT:-}
    case $_mode in chld | waitn | tick) return 0 ;; esac
    if [ -n "${BASH_VERSION:-}${KSH_VERSION:-}${ZSH_VERSION:-}" ]; then
        _mode=tick
    else
        _mode=chld # dash, busybox ash (and the other ash descendants)
    fi
}

# limits: _deadline (0: none) and _limit, its name: the sooner of the end
# of job_timeout and the deadline file's second (a tie goes to job_timeout).
# A missing or unreadable file is no deadline; `read` keeps it fork-free.
limits() {
    _deadline=0
    _limit=
    if [ "$_timeout" -gt 0 ]; then
        _deadline=$((_start + _timeout))
        _limit=job_timeout
    fi
    _x=
    { IFS= read -r _x || :; } 2>/dev/null <deadline
    case $_x in '' | *[!0-9]*) return 0 ;; esac
    if [ "$_deadline" -eq 0 ] || [ "$_x" -lt "$_deadline" ]; then
        _deadline=$_x
        _limit=execution_timeout
    fi
}

# act NOW: send what is due (a cancel's or the time limit's SIGTERM, the
# SIGKILL after the grace period); set _due to when the next thing is due
# (0: nothing), always later than NOW.
act() {
    # The grace asked for at cancel time wins over the launch's: the cancel
    # file says `TIME GRACE`, rewritten by each kill (each wakes us), so the
    # latest kill's grace counts, from the first SIGTERM.
    if [ "$_killed" -eq 0 ] && [ -e cancel ]; then
        _c_grace=
        { read -r _c_at _c_grace || :; } <cancel 2>/dev/null
        case $_c_grace in '' | *[!0-9]*) ;; *) _grace=$_c_grace ;; esac
    fi
    if [ "$_term_at" -eq 0 ]; then
        if [ -e cancel ]; then
            # signal.sh has sent SIGTERM already; send it again in case
            # it came before the job's setsid made its process group.
            _term_at=$1
            kill_group TERM "$_pid"
        elif [ "$_deadline" -gt 0 ] && [ "$1" -ge "$_deadline" ]; then
            _ended_by=$_limit
            printf '%s %s\n' "$1" "$_limit" >timed_out
            _term_at=$1
            kill_group TERM "$_pid"
        fi
    fi
    if [ "$_term_at" -gt 0 ] && [ "$_killed" -eq 0 ] && [ "$1" -ge $((_term_at + _grace)) ]; then
        kill_group KILL "$_pid"
        _killed=1
    fi
    if [ "$_term_at" -eq 0 ]; then
        _due=$_deadline
    elif [ "$_killed" -eq 0 ]; then
        _due=$((_term_at + _grace))
    else
        _due=0
    fi
}

# drain: the job's leader has ended. After a SIGTERM (a cancel, the time
# limit) the rest of its process group may live on (a child that ignores
# SIGTERM): it gets what is left of the grace, then SIGKILL, and the result
# waits until the group is empty. The members are not our children, so
# there is no `wait` for them: short naps, then one a second, only while
# such a group lives. After a normal end whatever the job left running in
# the background is its own (a later cancel or archive sees it).
# Bounded: a process stuck in the kernel may outlive SIGKILL; after
# DRAIN_AFTER_KILL seconds the result is written with "group_left".
# Processes of another user (the job ran `sudo -u other ...`) never get our
# signals: once only such are left after the SIGKILL, the result is written
# at once, naming them ("survivors").
DRAIN_AFTER_KILL=10
drain() {
    _group_left=
    _survivors=
    group_alive "$_pid" || return 0
    [ "$_term_at" -gt 0 ] || [ -e cancel ] || return 0
    _kill_at=0
    _naps=0
    while :; do
        _now=$(now)
        act "$_now"
        [ "$_killed" -eq 1 ] && [ "$_kill_at" -eq 0 ] && _kill_at=$_now
        group_alive "$_pid" || return 0
        if [ "$_kill_at" -gt 0 ]; then
            survivors_v "$_pid"
            if [ -z "$_survivors" ]; then
                return 0
            elif [ "$_ours" -eq 0 ] || [ "$_now" -ge $((_kill_at + DRAIN_AFTER_KILL)) ]; then
                _group_left=1
                say "processes of group $_pid outlived SIGKILL ($_survivors); writing the result anyway"
                return 0
            fi
        fi
        case $_naps in 0) _nap=0.1 ;; 1) _nap=0.3 ;; *) _nap=1 ;; esac
        _naps=$((_naps + 1))
        sleep "$_nap" 2>/dev/null || sleep 1
    done
}

# survivors_v PGID: the live members of the job's process group into
# $_survivors, JSON objects ({"pid": N, "uid": N, "user": NAME}, the uid
# and user it runs as) joined by ", "; _ours=1 when one of them is a
# process our signals reach (its real or saved uid is ours).
survivors_v() {
    _survivors=
    _ours=0
    uid_v
    # After the comm (which may hold ") "): state, ppid, pgrp. One pid a
    # line: the words are the lines.
    # shellcheck disable=SC2013
    for _sp in $(cat /proc/[0-9]*/stat 2>/dev/null | awk -v g="$1" '
        { pid = $1; sub(/.*\) /, "") }
        $3 == g && $1 != "Z" && $1 != "X" { print pid }'); do
        _sr=
        _se=
        _ss=
        while read -r _sk _sr1 _se1 _ss1 _; do
            case $_sk in Uid:) _sr=$_sr1 _se=$_se1 _ss=$_ss1 && break ;; esac
        done 2>/dev/null <"/proc/$_sp/status"
        [ -n "$_se" ] || continue # gone meanwhile
        # shellcheck disable=SC2154 # _uid is set by lib.sh's uid_v
        if [ "$_sr" = "$_uid" ] || [ "$_ss" = "$_uid" ]; then _ours=1; fi
        _sn=$(id -nu "$_se" 2>/dev/null) || _sn=$_se
        json_str_v "$_sn"
        _survivors="$_survivors${_survivors:+, }{\"pid\": $_sp, \"uid\": $_se, \"user\": $_js}"
    done
}

stop_timer() {
    [ -n "$_sleep" ] && kill "$_sleep" 2>/dev/null
    _sleep=
    _sleep_due=
}

# watch: wait for the job, acting on cancels and the time limit; leaves its
# exit status in _st.
watch() {
    _term_at=0
    _ended_by=
    _killed=0
    _sleep=
    _sleep_due=
    wait_mode
    [ "$_mode" = chld ] && trap '_chld=1' CHLD
    # The job is started: a cancel's wake may not interrupt a tick's wait.
    [ "$_mode" = tick ] && trap '' USR1
    _now=$_start
    while :; do
        # Until the SIGTERM, every wake may bring a moved deadline.
        [ "$_term_at" -eq 0 ] && limits
        act "$_now"
        _wake=0
        _chld=0
        if [ "$_due" -eq 0 ] && [ "$_mode" != tick ]; then
            stop_timer
            wait_job && return 0
        else
            _left=1
            [ "$_due" -gt 0 ] && _left=$((_due - _now))
            [ "$_mode" = tick ] && [ "$_left" -gt 1 ] && _left=1
            if [ -n "$_sleep" ] && { [ "$_sleep_due" != "$_due" ] || ! kill -0 "$_sleep" 2>/dev/null; }; then
                stop_timer
            fi
            if [ -z "$_sleep" ]; then
                sleep "$_left" &
                _sleep=$!
                _sleep_due=$_due
            fi
            case $_mode in
                waitn)
                    # shellcheck disable=SC3045 # bash only, chosen by wait_mode
                    wait -n
                    ;;
                tick) wait "$_sleep" ;;
                *)
                    # chld: wait for the job itself, which returns at once if
                    # it has ended already; the timer's end (CHLD) or a cancel
                    # (USR1) interrupts. Waiting for the sleep instead missed a
                    # job that ended before this wait began: it slept to the
                    # deadline.
                    if wait_job; then
                        stop_timer
                        return 0
                    fi
                    ;;
            esac
            # Once the sleep ended it is reaped: never wait for it again.
            kill -0 "$_sleep" 2>/dev/null || _sleep='';
        fi
        # The shell reaped the job if it ended: its pid is gone.
        kill -0 "$_pid" 2>/dev/null || break
        _now=$(now)
    done
    # The job has ended (the tick and wait -n modes come out here). Let no
    # trap interrupt the last wait, which returns its status at once.
    trap '' USR1
    [ "$_mode" = chld ] && trap - CHLD
    stop_timer
    wait "$_pid"
    _st=$?
}

# wait_job: wait for the job. 0 with its exit status in _st once it has
# ended; 1 when a trap (the timer's CHLD, a cancel's USR1) cut the wait short
# while it runs on. When a trap fires as the job ends, dash hands back the
# job's status, but busybox ash hands back the trap's (128 + the signal) and
# keeps the job's for the next wait: ask again when the code names a trapped
# signal. No job dies of SIGCHLD, so a CHLD code is always the trap's.
wait_job() {
    wait "$_pid"
    _st=$?
    [ "$_st" -le 128 ] && return 0
    [ "$_wake$_chld" = 00 ] && return 0
    kill -0 "$_pid" 2>/dev/null && return 1
    case $(kill -l "$_st" 2>/dev/null) in
        CHLD)
            wait "$_pid"
            _st=$?
            ;;
        USR1)
            # Killed by USR1 itself (dash already gave that): keep it when
            # the status is gone (127).
            wait "$_pid"
            _again=$?
            [ "$_again" -eq 127 ] || _st=$_again
            ;;
    esac
    return 0
}

supervise() {
    _dir=$1
    _id=$2
    _timeout=$3
    _grace=$4
    _cwd=$5
    _origin=$6
    _exec_left=${7:-0}
    _olimit=${8:-0}
    case $_olimit in '' | *[!0-9]*) _olimit=0 ;; esac
    _disk_full=
    _group_left=
    trap '' HUP
    # signal.sh wakes us with USR1 when a cancel is asked, limit.sh when the
    # deadline moved (trapped before job.json names our pid).
    trap '_wake=1' USR1
    cd "$_dir" || exit 1
    : >stdout
    : >stderr
    _start=$(now)
    case $_exec_left in '' | *[!0-9]*) _exec_left=0 ;; esac
    [ "$_exec_left" -gt 0 ] && printf '%s\n' $((_start + _exec_left)) >deadline
    start_caps
    # The task's environment is applied by the job's own process only
    # (JOB_START), after all of ours is done: it cannot change what this
    # shell or the job's start-up run.
    (
        trap - USR1
        AIRFLOW_ASYNC_JOB_ID=$_id
        AIRFLOW_ASYNC_JOB_DIR=$_dir
        AIRFLOW_ASYNC_PROGRESS=$_dir/progress
        export AIRFLOW_ASYNC_JOB_ID AIRFLOW_ASYNC_JOB_DIR AIRFLOW_ASYNC_PROGRESS
        cd "$_cwd" || exit 126
        exec setsid /bin/sh -c "$JOB_START" airflow-ssh-async-job "$_dir"
    ) </dev/null >"$_out" 2>"$_err" &
    _pid=$!
    # Report first: the launch (and the task) waits for it, and job.json is
    # not needed for it. A status read in between sees the job `starting`.
    field protocol "$PROTOCOL"
    field job_dir "$_dir"
    field pid "$_pid"
    field supervisor_pid "$$"
    field start_time "$_start"
    exec >/dev/null
    write_job_json || say "cannot write $_dir/job.json"
    watch
    drain
    wait_caps
    # Whatever became of the job, no copy of its environment stays on disk.
    if [ -e env ] || [ -e payload ]; then rm -f env payload; fi
    finish "$_st"
    # Tell a status call that waits on this async_dir (status.sh wait_news)
    # that a job ended: one small file rewritten, never growing.
    printf '%s %s\n' "$$" "$_id" >"${_dir%/*}/.ended" 2>/dev/null || :
}

main() {
    supervise "$@"
}

main "$@" || exit 1
