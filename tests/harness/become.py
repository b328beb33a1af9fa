"""Target users and real sudoers (and doas) rules for the become_user tests.

Root only, like the sshd harness. Each rule file has a name of its own
(sudo ignores names holding a dot, so none here does) and is removed when
the test set-up ends; the users stay, like the harness's login users.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.harness.sshd import USERS, HarnessError, accounts_lock, ensure_account

# Jobs run as TARGET; OTHER is a user TARGET may itself sudo to (a job that
# calls sudo); the rest exist for the failure cases.
TARGET = "asynctarget"
OTHER = "asyncother"
NO_RULE = "asyncnorule"  # exists, no rule lets anyone become it
PASSWORD = "asyncpw"  # a rule without NOPASSWD
TTY = "asynctty"  # a NOPASSWD rule, but requiretty
MISSING = "asyncnosuchuser"  # no such user
TARGET_USERS = (TARGET, OTHER, NO_RULE, PASSWORD, TTY)
SUDOERS_DIR = Path("/etc/sudoers.d")
DOAS_CONF = Path("/etc/doas.conf")


def ensure_target_users() -> None:
    if os.geteuid() != 0:
        raise HarnessError("the become_user tests need root to create users and sudoers rules")
    for tool in ("sudo", "visudo"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            raise HarnessError(f"{tool} is missing: run dev/setup.sh (it installs sudo)")
    with accounts_lock():
        for user in TARGET_USERS:
            ensure_account(user, "/bin/sh")
    with contextlib.suppress(KeyError):
        pwd.getpwnam(MISSING)
        raise HarnessError(f"user {MISSING} exists, but the tests need it not to")


def sudoers_text() -> str:
    logins = ",".join(USERS)
    return "\n".join(
        [
            f"{logins} ALL=({TARGET}) NOPASSWD: /bin/sh",
            f"{logins} ALL=({PASSWORD}) /bin/sh",
            f"Defaults>{TTY} requiretty",
            f"{logins} ALL=({TTY}) NOPASSWD: /bin/sh",
            # A job of TARGET that itself runs sudo -u OTHER.
            f"{TARGET} ALL=({OTHER}) NOPASSWD: ALL",
            "",
        ]
    )


@contextlib.contextmanager
def sudoers_file(text: str) -> Iterator[Path]:
    """TEXT as a rule file of its own under /etc/sudoers.d, checked by visudo, removed at the end."""
    if shutil.which("visudo") is None and not os.path.exists("/usr/sbin/visudo"):
        raise HarnessError("visudo is missing: run dev/setup.sh (it installs sudo)")
    path = SUDOERS_DIR / f"airflow-ssh-async-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = SUDOERS_DIR.parent / f".{path.name}.new"
    tmp.write_text(text)
    os.chmod(tmp, 0o440)
    check = subprocess.run(["visudo", "-c", "-f", str(tmp)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        tmp.unlink()
        raise HarnessError(f"visudo refused the test rules: {check.stdout}{check.stderr}")
    os.replace(tmp, path)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def sudoers_rules() -> Iterator[Path]:
    """The rules above, for the become_user tests."""
    ensure_target_users()
    with sudoers_file(sudoers_text()) as path:
        yield path


@contextlib.contextmanager
def doas_rules() -> Iterator[Path]:
    """/etc/doas.conf (doas reads no other file) with the rule for TARGET; only if none exists, removed at the end."""
    ensure_target_users()
    if shutil.which("doas") is None:
        raise HarnessError("doas is missing: run dev/setup.sh (it installs opendoas)")
    if DOAS_CONF.exists():
        raise HarnessError(f"{DOAS_CONF} exists: the doas test writes its own and removes it, so it needs none there")
    DOAS_CONF.write_text("".join(f"permit nopass {login} as {TARGET} cmd /bin/sh\n" for login in USERS))
    os.chmod(DOAS_CONF, 0o400)
    try:
        yield DOAS_CONF
    finally:
        DOAS_CONF.unlink(missing_ok=True)


def processes_of(*users: str) -> list[tuple[int, int, int, str, str]]:
    """(pid, pgid, sid, user, command) of every live process of USERS, as root's ps sees them.

    Zombies do not count: pid 1 of a container may never reap an orphan.
    """
    out = subprocess.run(
        ["ps", "-o", "pid=,pgid=,sid=,stat=,user:32=,args=", "-u", ",".join(users)],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    rows = []
    for line in out.splitlines():
        pid, pgid, sid, stat, user, *args = line.split(None, 5)
        if not stat.startswith(("Z", "X")):
            rows.append((int(pid), int(pgid), int(sid), user, args[0] if args else ""))
    return rows


def kill_jobs_of(users: tuple[str, ...], job_ids: list[str], groups: tuple[int, ...] = ()) -> None:
    """End what this test's jobs left running as USERS (test teardown: what a survivor test leaves).

    Only processes of these jobs: every process of a job inherits
    AIRFLOW_ASYNC_JOB_ID, and its supervisor's argv holds the job's folder;
    a child that another sudo started (no inherited environment) is found
    by its process group, in GROUPS. Other test sessions run jobs as the
    same users at the same time: never theirs.
    """
    marks = [f"AIRFLOW_ASYNC_JOB_ID={i}".encode() for i in job_ids] + [f"/{i}".encode() for i in job_ids]
    for pid, pgid, *_ in processes_of(*users):
        try:
            seen = Path(f"/proc/{pid}/environ").read_bytes() + b"\0" + Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if pgid in groups or any(m in seen for m in marks):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
