# shellcheck shell=sh
# airflow-ssh-async output: read job files by byte offset.
#
# Usage: output MAX_BYTES JOB_DIR FILE OFFSET [JOB_DIR FILE OFFSET]...
#        FILE is stdout, stderr or progress.
# Stdout: per request a framed `chunk` of at most MAX_BYTES from OFFSET, and
# `size`, the file's size when read. Files of any size: `tail -c +N` seeks.

read_one() {
    _d=$(expand_home "$1")
    _f=$_d/$2
    _off=$3
    case $2 in stdout | stderr | progress) ;; *) err "$E_USAGE" "no such stream: $2" ;; esac
    if [ ! -d "$_d" ]; then
        field missing "$1"
        return 0
    fi
    _size=0
    [ -f "$_f" ] && _size=$(($(wc -c <"$_f") + 0))
    _n=$((_size - _off))
    [ "$_n" -lt 0 ] && err "$E_USAGE" "$_f is $_size bytes, shorter than offset $_off"
    [ "$_n" -gt "$_max" ] && _n=$_max
    field size "$_size"
    printf 'chunk %s\n' "$_n"
    [ "$_n" -gt 0 ] && tail -c +"$((_off + 1))" "$_f" | head -c "$_n"
    printf '\n'
}

main() {
    LC_ALL=C
    export LC_ALL
    _max=$1
    shift
    [ $(($# % 3)) -eq 0 ] || err "$E_USAGE" "usage: output MAX_BYTES (JOB_DIR FILE OFFSET)..."
    while [ $# -gt 0 ]; do
        read_one "$1" "$2" "$3"
        shift 3
    done
}

main "$@" || exit 1
