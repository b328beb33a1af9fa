"""A throwaway OpenSSH server on loopback (127.0.0.1 unless told) for tests, the demo run and benchmarks.

Real sshd, real keys, real login shells: users whose login shell is dash,
bash and busybox ash. Needs root (to create those users and to run sshd as
a multi-user server); it fails loudly otherwise, never skips.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
ASH = "/usr/local/bin/ash"  # busybox picks the applet from argv[0]: this link runs ash
USERS = {"asyncdash": "/bin/dash", "asyncbash": "/bin/bash", "asyncash": ASH}
ACCOUNTS_LOCK = "/tmp/.airflow-ssh-async-test-accounts.lock"


class HarnessError(RuntimeError):
    """The test sshd could not be set up: the suite must fail, not skip."""


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def accounts_lock() -> Iterator[None]:
    """One test harness at a time adds or changes accounts.

    dev/test.sh starts three sessions at once, and engineers run more beside
    them: two concurrent useradd/usermod runs once lost two users' lines of
    /etc/passwd, which a later session then added again under new uids, with
    their homes still owned by the old ones ("cannot create or write
    async_dir"). A lock file of our own serializes them, whichever tool runs.
    """
    fd = os.open(ACCOUNTS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _shadow_password(user: str) -> str | None:
    for line in Path("/etc/shadow").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == user:
            return rest.split(":", 1)[0]
    return None


def ensure_account(user: str, shell: str) -> None:
    """USER exists with SHELL, password '*' (no password, yet not locked: sshd
    without PAM refuses locked accounts), owning its home. Call it under
    :func:`accounts_lock`; it changes nothing that is already so."""
    try:
        pwd.getpwnam(user)
    except KeyError:
        _run("useradd", "--create-home", "--shell", shell, user)
    entry = pwd.getpwnam(user)
    if entry.pw_shell != shell or _shadow_password(user) != "*":
        _run("usermod", "--shell", shell, "--password", "*", user)
    # A user added again after its line was lost gets a new uid; its old home does not follow.
    if os.stat(entry.pw_dir).st_uid != entry.pw_uid:
        _run("chown", "-R", f"{entry.pw_uid}:{entry.pw_gid}", entry.pw_dir)


def ensure_users() -> None:
    """Create the test users (as root) with their login shells."""
    if os.geteuid() != 0:
        raise HarnessError("the SSH test harness needs root to create test users and run sshd; run as root")
    if not os.path.exists(SSHD):
        raise HarnessError(f"{SSHD} is missing: install openssh-server (the README's commands do)")
    busybox = shutil.which("busybox")
    if busybox and not os.path.exists(ASH):
        with contextlib.suppress(FileExistsError):  # another session made it this instant
            os.symlink(busybox, ASH)
    with accounts_lock():
        for user, shell in USERS.items():
            if not os.path.exists(shell):
                raise HarnessError(f"login shell {shell} for {user} is missing: install dash and busybox")
            ensure_account(user, shell)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)


def home(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir)


def run_as(user: str, script: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a shell snippet on the host as USER, outside SSH (to inspect or fault)."""
    return subprocess.run(
        ["runuser", "-u", user, "--", "/bin/sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class SSHServer:
    """One running sshd and what a client needs to reach it."""

    workdir: Path
    port: int = field(default_factory=free_port)
    address: str = "127.0.0.1"  # another loopback address (127.0.0.2) makes a second "host"
    process: subprocess.Popen[bytes] | None = None
    host_key_line: str = ""  # "ssh-ed25519 AAAA..."
    client_key: Path = field(init=False)

    def __post_init__(self) -> None:
        self.client_key = self.workdir / "client_ed25519"

    # --- set-up -------------------------------------------------------------------

    def prepare(self) -> None:
        ensure_users()
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        host_key = self.workdir / "host_ed25519"
        if not host_key.exists():
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
        if not self.client_key.exists():
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key))
        self.host_key_line = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
        # sshd reads authorized_keys as the target user, who cannot enter a
        # 0700 work dir (pytest's tmp dirs are): keep them where anyone can.
        keys_dir = Path(tempfile.mkdtemp(prefix=f"ssh-async-keys-{self.port}-", dir="/tmp"))
        os.chmod(keys_dir, 0o755)
        pub = Path(f"{self.client_key}.pub").read_text()
        for user in USERS:
            (keys_dir / user).write_text(pub)
            os.chmod(keys_dir / user, 0o644)
        (self.workdir / "sshd_config").write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.address}",
                    f"HostKey {host_key}",
                    f"PidFile {self.workdir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {keys_dir}/%u",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin no",
                    f"AllowUsers {' '.join(USERS)}",
                    "MaxStartups 200:30:400",
                    "MaxSessions 10",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        (self.workdir / "known_hosts").write_text(f"[{self.address}]:{self.port} {self.host_key_line}\n")

    def start(self, timeout: float = 15) -> None:
        if self.process and self.process.poll() is None:
            return
        with open(self.workdir / "sshd.log", "ab") as log:  # sshd keeps its own copy of the fd
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.workdir / "sshd_config")],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HarnessError(f"sshd exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection((self.address, self.port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise HarnessError(f"sshd did not answer on {self.address}:{self.port} within {timeout}s: {self.log_tail()}")

    def stop(self) -> None:
        """Stop the listener and every session it started (a real outage)."""
        if self.process and self.process.poll() is None:
            # Per-connection sshd children run in sessions of their own: find
            # ours (children of this listener) before the listener goes.
            sessions = subprocess.run(
                ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True
            ).stdout.split()
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            for pid in sessions:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGTERM)
        self.process = None

    def log_tail(self) -> str:
        path = self.workdir / "sshd.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    # --- what clients use -----------------------------------------------------------

    def extras(self, **more: object) -> dict[str, object]:
        return {"key_file": str(self.client_key), "host_key": self.host_key_line, **more}

    def conn_uri_json(self, user: str, **extra: object) -> str:
        """An Airflow connection in JSON form, for AIRFLOW_CONN_<ID>."""
        return json.dumps(
            {
                "conn_type": "ssh",
                "host": self.address,
                "port": self.port,
                "login": user,
                "extra": self.extras(**extra),
            }
        )

    def set_connection(self, conn_id: str, user: str, **extra: object) -> None:
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = self.conn_uri_json(user, **extra)


def start_server(workdir: str | Path | None = None, address: str = "127.0.0.1") -> SSHServer:
    server = SSHServer(Path(workdir or tempfile.mkdtemp(prefix="ssh-async-sshd-")), address=address)
    server.prepare()
    server.start()
    return server
