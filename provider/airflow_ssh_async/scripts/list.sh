# shellcheck shell=sh
# airflow-ssh-async list: the job folders of one async_dir.
#
# Usage: list ASYNC_DIR
# Stdout: framed fields; `protocol`, `now`, `async_dir` (the absolute path,
# or ASYNC_DIR as given when it does not exist), `exists` (0 or 1), then one
# `job` per job folder (its name), then one `attempt` per archived attempt
# (ID/N, its folder under .archive/). The caller asks status.sh about them,
# so the state rules stay in one place (job.py).
#
# Other entries whose names start with '.' are skipped (no job id starts
# with '.'). Symlinks and plain files are skipped too: launch and archive
# only make directories.

# list_dirs DIR NAME PREFIX: a NAME field (PREFIX + name) per real directory in DIR.
list_dirs() {
    for _e in "$1"/*; do
        [ -d "$_e" ] || continue
        [ -L "$_e" ] && continue
        field "$2" "$3${_e##*/}"
    done
}

list_jobs() {
    list_dirs "$1" job ""
    [ -d "$1/.archive" ] && [ ! -L "$1/.archive" ] || return 0
    for _a in "$1/.archive"/*; do
        [ -d "$_a" ] && [ ! -L "$_a" ] && list_dirs "$_a" attempt "${_a##*/}/"
    done
    return 0
}

main() {
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
