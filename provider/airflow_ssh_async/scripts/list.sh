# shellcheck shell=sh
# airflow-ssh-async list: the job folders of one async_dir.
#
# Usage: list ASYNC_DIR
# Stdout: framed fields; `protocol`, `now`, `async_dir` (the absolute path,
# or ASYNC_DIR as given when it does not exist), `exists` (0 or 1), then one
# `job` per job folder (its name). The caller asks status.sh about them, so
# the state rules stay in one place (job.py).
#
# Entries whose names start with '.' are skipped: .archive/ and the
# .incoming.PID payloads of launches in progress (no job id starts with '.').
# Symlinks and plain files are skipped too: launch only makes directories.

list_jobs() {
    for _e in "$1"/*; do
        [ -d "$_e" ] || continue
        [ -L "$_e" ] && continue
        field job "${_e##*/}"
    done
}

main() {
    LC_ALL=C
    export LC_ALL
    [ $# -eq 1 ] || err "$E_USAGE" "usage: list ASYNC_DIR"
    _base=$(expand_home "$1")
    field protocol "$PROTOCOL"
    field now "$(now)"
    if [ ! -e "$_base" ]; then
        field async_dir "$_base"
        field exists 0
        return 0
    fi
    [ -d "$_base" ] || err "$E_DIR" "async_dir '$_base' is not a directory"
    _abs=$(cd "$_base" 2>/dev/null && pwd -P) || err "$E_DIR" "cannot enter async_dir '$_base'"
    [ -r "$_abs" ] || err "$E_DIR" "cannot read async_dir '$_abs'"
    field async_dir "$_abs"
    field exists 1
    list_jobs "$_abs"
}

main "$@" || exit 1
