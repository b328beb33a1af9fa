# shellcheck shell=sh
# airflow-ssh-async supervisors: the shared supervisor copies of one
# async_dir, and the removal of those that no running job uses.
#
# Usage: supervisors ASYNC_DIR KEEP_ID REMOVE
#        KEEP_ID: the copy of the client's own version, always kept.
#        REMOVE: 1 to remove unused copies, 0 to only report them.
# Stdout: framed; per copy ASYNC_DIR/.supervisor/ID other than KEEP_ID, a
# `copy` (its ID) then a `copy_state`:
#   in_use   a live process runs it (the supervisor of a running job): kept
#   unused   no process runs it (REMOVE=0: kept)
#   removed  no process ran it, and it is gone
#   failed   it could not be removed
#   unknown  this host has no /proc to tell: kept
#
# A supervisor runs as `sh ASYNC_DIR/.supervisor/ID/supervise.sh ...`, so
# its command line names its copy. The supervisors of the running jobs
# (job.json, no result.json) are the only ones that can run a copy of this
# async_dir: their command lines are read from /proc, one `tr` each (gc is
# rare; a scan of every process would be no cheaper, and busybox grep cannot
# search NUL-separated command lines).
#
# A launch by another version that is between writing its copy and writing
# its job.json is not seen: removing the copy then does not stop that
# supervisor (the shell holds its script open), and the next launch of that
# version writes the copy again.

# running_supervisors: the command-line words of every running job's
# supervisor, one a line, into _args (framed by newlines).
running_supervisors() {
    _args=$NL
    for _j in "$_base"/*/job.json; do
        [ -f "$_j" ] || continue
        [ -f "${_j%/job.json}/result.json" ] && continue
        _sup=$(json_int supervisor_pid "$_j")
        case $_sup in '' | *[!0-9]*) continue ;; esac
        [ -r "/proc/$_sup/cmdline" ] || continue
        _args=$_args$(tr '\000' '\n' <"/proc/$_sup/cmdline" 2>/dev/null)$NL
    done
}

# runs_copy PATH: a running job's supervisor runs PATH.
runs_copy() {
    case $_args in *"$NL$1$NL"*) return 0 ;; esac
    return 1
}

supervisors() {
    _base=$(expand_home "$1")
    _keep=$2
    _remove=$3
    _root=$_base/.supervisor
    if [ ! -d "$_root" ] || [ -L "$_root" ]; then return 0; fi
    _base=$(cd -P "$_base" 2>/dev/null && pwd) || return 0
    _root=$_base/.supervisor
    running_supervisors
    for _c in "$_root"/*; do
        if [ ! -d "$_c" ] || [ -L "$_c" ]; then continue; fi
        _id=${_c##*/}
        case $_id in '' | *[!0-9a-f]*) continue ;; esac
        [ "$_id" = "$_keep" ] && continue
        field copy "$_id"
        if [ ! -r /proc/self/cmdline ]; then
            field copy_state unknown
        elif runs_copy "$_c/supervise.sh"; then
            field copy_state in_use
        elif [ "$_remove" != 1 ]; then
            field copy_state unused
        elif rm -rf "$_c" 2>/dev/null && [ ! -e "$_c" ]; then
            field copy_state removed
        else
            field copy_state failed
        fi
    done
}

main() {
    [ $# -eq 3 ] || err "$E_USAGE" "usage: supervisors ASYNC_DIR KEEP_ID REMOVE"
    field protocol "$PROTOCOL"
    supervisors "$@"
}

main "$@" || exit 1
