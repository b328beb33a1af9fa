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

need_cmd() {
    command -v "$1" >/dev/null 2>&1 || err "$E_NEED" "this host has no '$1' command, which is needed to $2"
}

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
# Callers run with LC_ALL=C so that ${#v} counts bytes.
field() {
    printf '%s %s\n%s\n' "$1" "${#2}" "$2"
}

# field_file NAME PATH: a framed record holding a file's bytes; nothing if the
# file does not exist.
field_file() {
    [ -f "$2" ] || return 0
    _n=$(wc -c <"$2") || return 1
    _n=$((_n + 0))
    printf '%s %s\n' "$1" "$_n"
    head -c "$_n" "$2"
    printf '\n'
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

# proc_start PID: the process start time (clock ticks since boot) from
# /proc, so a reused pid is told apart from the process we started.
# Empty when the process is gone or the host has no /proc.
proc_start() {
    proc_start_v "$1"
    printf '%s' "$_pstart"
}

# proc_start_v PID: as proc_start, into $_pstart: the `read` builtin, no fork.
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

# json_str VALUE: VALUE as a JSON string literal.
json_str() {
    json_str_v "$1"
    printf '%s' "$_js"
}

# json_str_v VALUE: as json_str, into $_js. Plain printable ASCII without
# quotes or backslashes (ids, paths, pids: nearly everything) takes no fork.
json_str_v() {
    case $1 in
        *[\\\"]* | *[![:print:]]*) _js=$(json_str_awk "$1") ;;
        *) _js="\"$1\"" ;;
    esac
}

json_str_awk() {
    printf '%s' "$1" | awk '
        BEGIN { ORS = ""; printf "\"" }
        {
            gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); gsub(/\r/, "\\r")
            if (NR > 1) printf "\\n"
            printf "%s", $0
        }
        END { printf "\"" }'
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

# write_atomic PATH: stdin to PATH via a temporary file, fsync'd where the
# host has `sync FILE`, then renamed, so readers never see half a file.
write_atomic() {
    cat >"$1.tmp" || return 1
    sync "$1.tmp" 2>/dev/null || :
    mv -f "$1.tmp" "$1"
}

# kill_group SIG PGID: signal a whole process group. `kill -SIG -PGID` is
# the one spelling that dash, bash and busybox ash all accept (dash takes
# neither `--` nor `-s SIG` before a negative pid).
kill_group() {
    kill "-$1" "-$2" 2>/dev/null
}

now() {
    date +%s
}
