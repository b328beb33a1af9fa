# shellcheck shell=sh disable=SC2034 # the constants are used by the action scripts
# airflow-ssh-async: helpers shared by every remote script.
#
# Supported shells: dash, bash (as sh), busybox ash. POSIX sh plus coreutils
# (or busybox); /proc is used where the host has it (Linux) for boot id and
# pid reuse detection.
#
# The client sends this file followed by one action script as a single
# `sh -c PROGRAM NAME ARGS...` command; data (the user's command, environment,
# cwd) arrives on stdin, never in argv.

PROTOCOL=1

# Every script runs with byte semantics (${#v} counts bytes, patterns, tr
# and sort see bytes), set here once. The session's LC_ALL is kept for the
# job's environment (launch.sh writes it back into the env file).
_session_lc_all=${LC_ALL-}
_session_lc_all_set=${LC_ALL+x}
LC_ALL=C
export LC_ALL

say() {
    printf 'airflow-ssh-async: %s\n' "$*" >&2
}

# err CODE MESSAGE: the client maps CODE to an error class and shows MESSAGE.
err() {
    _code=$1
    shift
    say "error: $*"
    exit "$_code"
}

# Exit codes shared with the client (see client.py, RemoteError).
E_USAGE=64
E_EXISTS=65
E_NOTFOUND=66
E_CWD=67
E_DIR=68
E_WRITE=69
E_RUNNING=70
E_NEED=71

# expand_home PATH: '~' and '~/x' mean the SSH user's home, resolved here on
# the host, the same way for launch and every later call.
expand_home() {
    # shellcheck disable=SC2088 # a literal '~/' prefix is what we match
    case $1 in
        "~") printf '%s' "$HOME" ;;
        "~/"*) printf '%s/%s' "$HOME" "${1#"~/"}" ;;
        *) printf '%s' "$1" ;;
    esac
}

# expand_home_v PATH: as expand_home, into $_path: no subshell (status.sh
# calls it for every job of a batch).
expand_home_v() {
    # shellcheck disable=SC2088 # a literal '~/' prefix is what we match
    case $1 in
        "~") _path=$HOME ;;
        "~/"*) _path=$HOME/${1#"~/"} ;;
        *) _path=$1 ;;
    esac
}

# field NAME VALUE: one framed record, `NAME LEN\nVALUE\n`, byte exact.
# ${#v} counts bytes: LC_ALL=C (above).
field() {
    printf '%s %s\n%s\n' "$1" "${#2}" "$2"
}

# A newline, for splitting and building strings without a subshell.
NL='
'

boot_id() {
    boot_id_v
    printf '%s' "$_boot"
}

# boot_id_v: the boot id into $_boot (empty without /proc), no subshell.
boot_id_v() {
    _boot=
    { IFS= read -r _boot || :; } 2>/dev/null </proc/sys/kernel/random/boot_id
}

# proc_start_v PID: the process start time (clock ticks since boot) from
# /proc into $_pstart, so a reused pid is told apart from the process we
# started; empty when the process is gone or the host has no /proc. The
# `read` builtin, no fork.
proc_start_v() {
    _pstart=
    { IFS= read -r _stat || return 0; } 2>/dev/null <"/proc/$1/stat" || return 0
    # Field 2 (comm) may hold spaces and parentheses: cut at the last ') '.
    _stat=${_stat##*) }
    # shellcheck disable=SC2086 # splitting the numeric fields is the point
    set -- $_stat
    [ $# -ge 20 ] || return 0
    shift 19
    _pstart=$1
}

# json_str_v VALUE: VALUE as a JSON string literal, into $_js. Plain printable ASCII without
# quotes or backslashes (ids, paths, pids: nearly everything) takes no fork.
# Anything else goes through json_escape_v: shell builtins only, no awk
# (mawk, gawk and busybox awk each escape differently, and a host may have
# none).
json_str_v() {
    case $1 in
        *[\\\"]* | *[![:print:]]*) json_escape_v "$1" ;;
        *) _js="\"$1\"" ;;
    esac
}

# json_escape_v VALUE: VALUE as a JSON string into $_js, whatever its bytes
# (LC_ALL=C: the patterns see bytes). '"' and '\' are
# escaped; control bytes become \n, \t, ... or \u00XX; valid UTF-8 passes as
# it is; a byte that is not part of valid UTF-8 becomes \udcXX (Python's
# surrogateescape: os.fsencode(json.loads(TEXT)) gives the bytes back).
json_escape_v() {
    [ -n "${_jtab-}" ] || json_table
    _js=\"
    _jr=$1
    while :; do
        # The longest run of bytes that need nothing, in one step.
        _jp=${_jr%%[![:print:]]*}
        _jp=${_jp%%[\\\"]*}
        _js=$_js$_jp
        _jr=${_jr#"$_jp"}
        [ -n "$_jr" ] || break
        _jc=${_jr%"${_jr#?}"}
        _jr=${_jr#?}
        case $_jc in
            \\) _js="$_js\\\\" ;;
            \") _js="$_js\\\"" ;;
            *)
                json_byte_v "$_jc"
                if [ "$_jb" -lt 128 ]; then
                    json_control "$_jb"
                else
                    json_utf8 "$_jc" "$_jb"
                fi
                ;;
        esac
    done
    _js=$_js\"
}

# json_table: $_jtab holds every byte that is not printable ASCII (1-31,
# 127, 128-255), in order, so where a byte sits in it gives its value.
json_table() {
    _jtab=$(
        printf '\1\2\3\4\5\6\7\10\11\12\13\14\15\16\17\20\21\22\23\24\25\26\27\30\31\32\33\34\35\36\37\177'
        printf '\200\201\202\203\204\205\206\207\210\211\212\213\214\215\216\217\220\221\222\223\224\225\226\227'
        printf '\230\231\232\233\234\235\236\237\240\241\242\243\244\245\246\247\250\251\252\253\254\255\256\257'
        printf '\260\261\262\263\264\265\266\267\270\271\272\273\274\275\276\277\300\301\302\303\304\305\306\307'
        printf '\310\311\312\313\314\315\316\317\320\321\322\323\324\325\326\327\330\331\332\333\334\335\336\337'
        printf '\340\341\342\343\344\345\346\347\350\351\352\353\354\355\356\357\360\361\362\363\364\365\366\367'
        printf '\370\371\372\373\374\375\376\377'
    )
}

# json_byte_v BYTE: the value of one byte that is not printable ASCII, into $_jb.
json_byte_v() {
    _jb=${_jtab%%"$1"*}
    _jb=${#_jb}
    if [ "$_jb" -lt 31 ]; then
        _jb=$((_jb + 1))
    elif [ "$_jb" -eq 31 ]; then
        _jb=127
    else
        _jb=$((_jb + 96))
    fi
}

# json_hex_v N: N (0-255) as two hex digits, into $_jh.
json_hex_v() {
    _jh=
    for _jd in $(($1 / 16)) $(($1 % 16)); do
        case $_jd in 10) _jd=a ;; 11) _jd=b ;; 12) _jd=c ;; 13) _jd=d ;; 14) _jd=e ;; 15) _jd=f ;; esac
        _jh=$_jh$_jd
    done
}

# json_control N: the escape of control byte N, appended to $_js.
json_control() {
    case $1 in
        8) _js="$_js\\b" ;;
        9) _js="$_js\\t" ;;
        10) _js="$_js\\n" ;;
        12) _js="$_js\\f" ;;
        13) _js="$_js\\r" ;;
        *)
            json_hex_v "$1"
            _js="$_js\\u00$_jh"
            ;;
    esac
}

# json_utf8 BYTE N: lead byte BYTE (value N >= 128) and, when they make a
# valid UTF-8 sequence (no overlong form, no surrogate, at most U+10FFFF),
# the continuation bytes taken from $_jr, appended to $_js as they are;
# else \udcXX for BYTE alone.
json_utf8() {
    # _jk continuation bytes; the first in _jlo.._jhi, the others 128..191.
    _jlo=128
    _jhi=191
    if [ "$2" -ge 194 ] && [ "$2" -le 223 ]; then
        _jk=1
    elif [ "$2" -ge 224 ] && [ "$2" -le 239 ]; then
        _jk=2
        [ "$2" -eq 224 ] && _jlo=160
        [ "$2" -eq 237 ] && _jhi=159
    elif [ "$2" -ge 240 ] && [ "$2" -le 244 ]; then
        _jk=3
        [ "$2" -eq 240 ] && _jlo=144
        [ "$2" -eq 244 ] && _jhi=143
    else
        _jk=0
    fi
    _jseq=$1
    _jrest=$_jr
    while [ "$_jk" -gt 0 ]; do
        _jx=${_jrest%"${_jrest#?}"}
        case $_jx in '' | [[:print:]]) break ;; esac
        json_byte_v "$_jx"
        if [ "$_jb" -lt "$_jlo" ] || [ "$_jb" -gt "$_jhi" ]; then break; fi
        _jseq=$_jseq$_jx
        _jrest=${_jrest#?}
        _jlo=128
        _jhi=191
        _jk=$((_jk - 1))
    done
    if [ "$_jk" -eq 0 ] && [ "$2" -ge 194 ] && [ "$2" -le 244 ]; then
        _js=$_js$_jseq
        _jr=$_jrest
    else
        json_hex_v "$2"
        _js="$_js\\udc$_jh"
    fi
}

# json_int KEY FILE: an integer field of a job.json that we wrote (one key a line).
json_int() {
    sed -n "s/^  \"$1\": \\(-\\{0,1\\}[0-9][0-9]*\\),\\{0,1\\}\$/\\1/p" "$2" 2>/dev/null
}

# json_text KEY FILE: a plain string field of a job.json that we wrote.
json_text() {
    sed -n "s/^  \"$1\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p" "$2" 2>/dev/null
}

# same_process PID START: PID is alive and is the process that started at
# START (from /proc); without /proc only liveness can be checked. The client's
# classify uses the same rule.
same_process() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    [ -z "$2" ] && return 0
    proc_start_v "$1"
    [ "$_pstart" = "$2" ]
}

# uid_v: the effective uid into $_uid: /proc/self/status with the read
# builtin (no fork), else `id -u`.
uid_v() {
    _uid=
    while read -r _uk _ur _ue _; do
        case $_uk in Uid:) _uid=$_ue && break ;; esac
    done 2>/dev/null </proc/self/status
    case $_uid in '' | *[!0-9]*) _uid=$(id -u) ;; esac
}

# private_v PATH...: 0 when none of the PATHs that exist could be changed by
# another user; else 1, with $_unsafe naming the first that could, its owner,
# its mode and what to do. A PATH is safe when it is no symlink, the SSH
# user owns it and neither group nor others may write it. A shared
# supervisor copy (.supervisor/*/supervise.sh) that is not safe is removed
# instead, so the launch writes its own: one fork (find) for all of them.
private_v() {
    _unsafe=
    _n=$#
    while [ "$_n" -gt 0 ]; do # keep only the PATHs that exist
        if [ -e "$1" ] || [ -L "$1" ]; then set -- "$@" "$1"; fi
        shift
        _n=$((_n - 1))
    done
    [ $# -gt 0 ] || return 0
    command -v find >/dev/null 2>&1 || {
        _unsafe="this host has no 'find' command, which is needed to check that nobody else can write async_dir"
        return 1
    }
    uid_v
    if _bad=$(find "$@" -prune \( -type l -o ! -user "$_uid" -o -perm -020 -o -perm -002 \) \
        \( \( -type f -o -type l \) -path '*/.supervisor/*/supervise.sh' -exec rm -f {} \; -o -print \)); then
        [ -z "$_bad" ] && return 0
    fi
    for _p do
        [ -e "$_p" ] || [ -L "$_p" ] || continue
        [ -n "$(find "$_p" -prune \( -type l -o ! -user "$_uid" -o -perm -020 -o -perm -002 \) -print 2>&1)" ] ||
            continue
        set -f
        # shellcheck disable=SC2046 # the fields of ls -ld: mode, links, owner
        set -- $(ls -ld "$_p" 2>/dev/null) '?' '?' '?'
        set +f
        _unsafe="folder '$_p' (owner $3, mode $1) could be changed by another user, who could then swap job files, plant results or replace the supervisor; nothing was run. Use a folder that the SSH user owns and that nobody else can write: chmod 700 it (after checking what is in it), or choose another async_dir (the default ~/.airflow_async)"
        return 1
    done
    _unsafe="cannot check who may write under '$1' (find failed); nothing was run"
    return 1
}

# A job folder without job.json is a launch in progress until it has been
# left untouched this many seconds with no launching process alive
# (job.LAUNCH_PATIENCE is the same number).
LAUNCH_PATIENCE=60

# launch_over DIR: DIR has no job.json and its launch is provably over:
# no process named in DIR/launching (the launcher, then the supervisor: "PID
# START" lines) is alive, and DIR has not changed for LAUNCH_PATIENCE
# seconds; or DIR/launch_died says a cancel found so before (a dead launch
# stays dead). Sets _launch_age (seconds, empty when unknown). A folder whose
# age cannot be read (no `date -r`, no `stat -c`) is over only when a
# launching file names its processes and all are gone.
launch_over() {
    _launch_age=
    [ -f "$1/job.json" ] && return 1
    # Found over once already (by a cancel, which then changed the folder).
    [ -f "$1/launch_died" ] && return 0
    _named=0
    if [ -f "$1/launching" ]; then
        while read -r _lpid _lstart; do
            case $_lpid in '' | *[!0-9]*) continue ;; esac
            _named=1
            same_process "$_lpid" "$_lstart" && return 1
        done 2>/dev/null <"$1/launching"
    fi
    # Read after the liveness: a supervisor that started since has touched DIR.
    _lm=$(date -r "$1" +%s 2>/dev/null || stat -c %Y "$1" 2>/dev/null) || _lm=
    case $_lm in
        '' | *[!0-9]*) [ "$_named" -eq 1 ] || return 1 ;;
        *)
            _launch_age=$((${_now:-$(now)} - _lm))
            [ "$_launch_age" -ge "$LAUNCH_PATIENCE" ] || return 1
            ;;
    esac
    [ ! -f "$1/job.json" ]
}

# remove_secrets DIR: the job's environment (env, and the payload it came
# in), which nothing needs once the job started or its launch died.
remove_secrets() {
    rm -f "$1/env" "$1/payload"
}

# write_atomic PATH: stdin to PATH via a temporary file, fsync'd where the
# host has `sync FILE`, then renamed, so readers never see half a file.
write_atomic() {
    cat >"$1.tmp" || return 1
    sync "$1.tmp" 2>/dev/null || :
    mv -f "$1.tmp" "$1"
}

# free_kb_v DIR: the space left to the SSH user on DIR's filesystem, in KiB,
# into $_free; empty when df cannot tell. One df, POSIX output (-P: one line
# a filesystem; -k: KiB). Its 4th field is "Available".
free_kb_v() {
    _free=
    _dfout=$(df -Pk "$1" 2>/dev/null) || return 0
    _dfout=${_dfout#*"$NL"}
    set -f
    # shellcheck disable=SC2086 # splitting the fields is the point
    set -- $_dfout
    set +f
    [ $# -ge 4 ] || return 0
    case $4 in '' | *[!0-9]*) return 0 ;; esac
    _free=$4
}

# RESERVE_BYTES: the size of result.reserve, the room a job's result.json
# is written into when the disk is full (supervise.sh write_result).
RESERVE_BYTES=4096

# kill_group SIG PGID: signal a whole process group. `kill -SIG -PGID` is
# the one spelling that dash, bash and busybox ash all accept (dash takes
# neither `--` nor `-s SIG` before a negative pid).
kill_group() {
    kill "-$1" "-$2" 2>/dev/null
}

# group_alive PGID [START]: the job's process group still has a member that
# is not a zombie. Its leader (pid PGID) may be gone while children it
# started live on; the number stays theirs while any of them lives (Linux
# hands out no pid that is still a group id). A live process PGID that is
# not the leader we started (START, from /proc) means the group is someone
# else's. Zombies do not count: where pid 1 does not reap (some
# containers) an orphan's zombie stays in the group for ever. `kill -0`
# first, so that the /proc scan (one cat, one awk) runs only for a live group.
group_alive() {
    [ -n "$1" ] && kill -0 "-$1" 2>/dev/null || return 1
    if [ -n "${2:-}" ]; then
        proc_start_v "$1"
        [ -z "$_pstart" ] || [ "$_pstart" = "$2" ] || return 1
    fi
    [ -r /proc/self/stat ] || return 0
    # After the comm (which may hold ") "): state, ppid, pgrp.
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v g="$1" '
        { sub(/.*\) /, "") }
        $3 == g && $1 != "Z" && $1 != "X" { found = 1; exit }
        END { exit !found }'
}

now() {
    date +%s
}

# wc_list LIST: `wc -c` of the files in LIST (one path a line, built by the
# caller a batch of WC_BATCH paths at a time, so that no number of jobs can
# hit the kernel's limit on one command's arguments, and appending to LIST
# stays cheap). Lines come in LIST's order; the `total` and /dev/null lines
# (the /dev/null keeps wc from reading stdin) are skipped by next_wc.
WC_BATCH=300
wc_list() {
    set -f
    IFS=$NL
    # shellcheck disable=SC2086 # one path a line: splitting is the point
    wc -c /dev/null $1 2>/dev/null
    unset IFS
    set +f
}

# next_wc: the next `N NAME` line of wc_list into _wn, _wname
# (skipping `total` and /dev/null lines; both empty at the end).
next_wc() {
    while read -r _wn _wname; do
        case $_wname in total | /dev/null) ;; *) return 0 ;; esac
    done
    _wn=
    _wname=
}

# size_of PATH: its size into _size: from wc_list when its next line names
# PATH, else (the file came after wc ran, or wc spelled its name its own way)
# from a wc of its own, or 0 when there is no such file.
size_of() {
    if [ -n "$_wname" ] && [ "$_wname" = "$1" ]; then
        _size=$_wn
        next_wc
    elif [ -f "$1" ]; then
        _size=$(wc -c <"$1" 2>/dev/null) || _size=0
        _size=$((_size + 0))
    else
        _size=0
    fi
}

# Arguments on stdin. A batch (the status of every job watched on a host,
# their output reads) can be longer than the kernel lets one argument be
# (128 KiB: the whole `sh -c` command is one argument of the login shell),
# so the client sends `--stdin-args` and the arguments on stdin instead,
# each ended by the ASCII unit separator (0x1f, which no argument holds).
# A non-blank IFS keeps empty arguments; the shell's own `set --` has no
# length limit.
if [ "${1-}" = --stdin-args ]; then
    _stdin_args=$(cat)
    set -f
    IFS=$(printf '\037')
    # shellcheck disable=SC2086 # splitting on US is the point
    set -- $_stdin_args
    unset IFS _stdin_args
    set +f
fi

