# shellcheck shell=sh
# airflow-ssh-async archive: move a finished job's folder aside, or remove it.
#
# Usage: archive JOB_DIR (archive|remove)
# Stdout: framed `archived` (the new path) or `removed`.
#
# A job that is still running is refused (E_RUNNING): there is no result and
# its supervisor is alive (the same process, on the same boot), or it has no
# job.json and its launch is not provably over (lib.sh's launch_over). A
# folder left by a dead launch is taken, its secrets (env, payload) removed. Archives go to ASYNC_DIR/.archive/ID/N,
# which no job id can name (ids start with a letter or digit).

# is_running DIR: no result, and its supervisor still lives on this boot:
# the same rule as the client's classify, so a job it calls lost (a reboot,
# a reused supervisor pid) can be archived.
is_running() {
    [ -f "$1/result.json" ] && return 1
    _boot_then=$(json_text boot_id "$1/job.json")
    boot_id_v
    if [ -n "$_boot_then" ] && [ -n "$_boot" ] && [ "$_boot_then" != "$_boot" ]; then
        return 1
    fi
    same_process "$(json_int supervisor_pid "$1/job.json")" "$(json_text supervisor_start "$1/job.json")"
}

# group_runs DIR: the job has ended (or is lost) but processes of its process
# group still run on this boot (it left them in the background, or its
# supervisor died): a retry must not start a second copy beside them.
group_runs() {
    _boot_then=$(json_text boot_id "$1/job.json")
    boot_id_v
    [ -z "$_boot_then" ] || [ -z "$_boot" ] || [ "$_boot_then" = "$_boot" ] || return 1
    _pgid=$(json_int pid "$1/job.json")
    group_alive "$_pgid" "$(json_text pid_start "$1/job.json")"
}

main() {
    umask 077
    [ $# -eq 2 ] || err "$E_USAGE" "usage: archive JOB_DIR (archive|remove)"
    _d=$(expand_home "$1")
    [ -d "$_d" ] || err "$E_NOTFOUND" "no job directory '$_d'"
    if [ -f "$_d/job.json" ]; then
        is_running "$_d" && err "$E_RUNNING" "job in '$_d' is still running"
        group_runs "$_d" && err "$E_RUNNING" "job in '$_d' has ended, but processes of its process group $_pgid still run: stop them with \`airflow-ssh-async kill\` (or wait for them), then try again"
    elif ! launch_over "$_d"; then
        err "$E_RUNNING" "'$_d' has no job.json and its launch may still be running; once it has been left for $LAUNCH_PATIENCE s with no launching process alive it is lost and can be archived"
    fi
    # A launch that died half way left the task's environment behind.
    remove_secrets "$_d"
    case $2 in
        remove)
            rm -rf "$_d" || err "$E_WRITE" "cannot remove '$_d'"
            # An archived attempt: drop .archive/ID too once its last attempt is gone.
            case $_d in */.archive/*/*) rmdir "${_d%/*}" 2>/dev/null ;; esac
            field removed "$_d"
            ;;
        archive)
            _to=${_d%/*}/.archive/${_d##*/}
            # Archives are the SSH user's alone, like async_dir itself.
            # shellcheck disable=SC2154 # _unsafe is set by lib.sh's private_v
            private_v "${_d%/*}" "${_to%/*}" "$_to" || err "$E_DIR" "$_unsafe"
            mkdir -p "$_to" || err "$E_WRITE" "cannot create '$_to'"
            _n=1
            while [ -e "$_to/$_n" ]; do _n=$((_n + 1)); done
            mv "$_d" "$_to/$_n" || err "$E_WRITE" "cannot move '$_d' to '$_to/$_n'"
            field archived "$_to/$_n"
            ;;
        *) err "$E_USAGE" "archive or remove, not '$2'" ;;
    esac
}

main "$@" || exit 1
