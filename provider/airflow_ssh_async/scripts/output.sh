# shellcheck shell=sh
# airflow-ssh-async output: read job files by byte offset.
#
# Usage: output --stdin-args, then on stdin (see lib.sh) six arguments a
#        request: JOB_DIR STREAM OFFSET MAX_BYTES LOG_KEY LOGGED
#   STREAM     stdout, stderr or progress.
#   OFFSET     where to read from; `?` asks instead for LOG_KEY's record.
#   MAX_BYTES  the most this request may return (the client shares one
#              call's budget fairly between its requests); `-`: read
#              nothing, only record LOGGED (the client's confirmation).
#   LOG_KEY    names the task log these bytes go to ([A-Za-z0-9]+, or `-`).
#   LOGGED     how far that log has whole lines of this stream, as the
#              client says: lines it has logged, never lines it was sent.
# Stdout, per request: `missing` (no such job folder), or `shrunk` with the
# file's size (it is shorter than OFFSET: the job rewrote it), or `size` and
# a framed `chunk` of at most MAX_BYTES from OFFSET; for `?`, `delivered`:
# "LOGGED READ" as last recorded, or empty; for MAX_BYTES `-`, `recorded`.
#
# With a LOG_KEY, each request is recorded in JOB_DIR/.delivered-KEY-STREAM
# as "LOGGED READ" (READ: the end of the bytes sent, or OFFSET), so that a
# watcher that starts again (a triggerer restart) continues its log from
# LOGGED instead of from the first byte; see docs/protocol.md. LOGGED is only
# ever what the client reports, so a watcher killed between a read and its
# log loses nothing: the bytes it was sent are read again.
# One bad request (a damaged offset, a shrunk file) answers for itself; it
# never fails the other requests of the batch. Files of any size: `dd`
# (or `tail -c +N`) seeks.

# record DIR KEY STREAM LOGGED READ: best effort (a full disk loses only
# the record, which costs a restart some repeated lines, never the job).
record() {
    [ "$2" = - ] && return 0
    printf '%s %s\n' "$4" "$5" 2>/dev/null >"$1/.delivered-$2-$3" || :
}

# copy FILE OFFSET COUNT: COUNT bytes of FILE from OFFSET, on stdout. One
# process a request: a dd that counts in bytes (GNU coreutils since 8.16,
# busybox since 1.24), probed once per call; else tail | head, two. A
# poll of 2,000 chatty jobs asks for 6,000 grown streams: each fork saved
# is about a second of the host's CPU per poll. AIRFLOW_ASYNC_COPY=tail
# forces the fallback (tests).
copy() {
    if [ -z "$_dd" ]; then
        _dd=no
        [ "${AIRFLOW_ASYNC_COPY-}" != tail ] &&
            dd if=/dev/null iflag=skip_bytes,count_bytes count=0 status=none 2>/dev/null && _dd=yes
    fi
    if [ "$_dd" = yes ]; then
        dd if="$1" iflag=skip_bytes,count_bytes skip="$2" count="$3" bs=65536 status=none
    else
        tail -c +"$(($2 + 1))" "$1" | head -c "$3"
    fi
}

# request_sizes REQUEST...: wc_list lines for every request's file, in
# order (lib.sh: a few wc runs for the whole batch, not one a request).
request_sizes() {
    while [ $# -gt 0 ]; do
        _wl=
        _wi=0
        while [ $# -gt 0 ] && [ "$_wi" -lt "$WC_BATCH" ]; do
            # A record or a `?` reads no size.
            if [ "$3" != '?' ] && [ "$4" != - ]; then
                expand_home_v "$1"
                # shellcheck disable=SC2154 # _path is set by lib.sh's helper above
                case $_path$2 in *"$NL"*) ;; *) _wl=$_wl$NL$_path/$2 ;; esac
            fi
            shift 6
            _wi=$((_wi + 1))
        done
        if [ -n "$_wl" ]; then wc_list "$_wl"; fi
    done
}

read_one() {
    case $2 in stdout | stderr | progress) ;; *) err "$E_USAGE" "no such stream: $2" ;; esac
    expand_home_v "$1"
    _d=$_path
    _f=$_d/$2
    # Every read takes its wc line, to stay in step with request_sizes.
    if [ "$3" != '?' ] && [ "$4" != - ]; then size_of "$_f"; fi
    case $5 in -) ;; '' | *[!A-Za-z0-9]*) err "$E_USAGE" "bad log key: $5" ;; esac
    case $4 in -) ;; '' | *[!0-9]*) err "$E_USAGE" "bad byte count: $4" ;; esac
    case $6 in '' | *[!0-9]*) err "$E_USAGE" "bad logged position: $6" ;; esac
    if [ ! -d "$_d" ]; then
        field missing "$1"
        return 0
    fi
    if [ "$3" = '?' ]; then
        _rec=
        [ "$5" != - ] && { IFS= read -r _rec || :; } 2>/dev/null <"$_d/.delivered-$5-$2"
        field delivered "$_rec"
        return 0
    fi
    case $3 in '' | *[!0-9]*) err "$E_USAGE" "bad offset: $3" ;; esac
    if [ "$4" = - ]; then
        record "$_d" "$5" "$2" "$6" "$3"
        field recorded ""
        return 0
    fi
    # shellcheck disable=SC2154 # _size is set by lib.sh's size_of
    _n=$((_size - $3))
    if [ "$_n" -lt 0 ]; then
        field shrunk "$_size"
        return 0
    fi
    [ "$_n" -gt "$4" ] && _n=$4
    field size "$_size"
    printf 'chunk %s\n' "$_n"
    [ "$_n" -gt 0 ] && copy "$_f" "$3" "$_n"
    printf '\n'
    record "$_d" "$5" "$2" "$6" $(($3 + _n))
}

main() {
    _dd=
    [ $(($# % 6)) -eq 0 ] || err "$E_USAGE" "usage: output --stdin-args (JOB_DIR STREAM OFFSET MAX_BYTES LOG_KEY LOGGED)..."
    [ $# -gt 0 ] || return 0
    request_sizes "$@" | serve "$@"
}

serve() {
    next_wc
    while [ $# -gt 0 ]; do
        read_one "$1" "$2" "$3" "$4" "$5" "$6"
        shift 6
    done
    # Drain what is left so that wc never dies of a closed pipe.
    while read -r _wn _wname; do :; done
}

main "$@" || exit 1
