"""Throwaway PostgreSQL and Redis servers on loopback, for the Celery e2e stack.

Each is Debian's own server binary started on a free 127.0.0.1 port with its
data in a temporary folder, and stopped (data removed) by ``stop()``; no system
service, no systemd. PostgreSQL refuses to run as root, so when the tests run
as root its cluster belongs to the ``postgres`` OS user (created by Debian's
``postgresql`` package) and every server command runs through ``runuser``.
A missing binary raises with the package to install: the suite fails, it never
skips.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import suppress
from pathlib import Path

PG_USER = "postgres"  # the OS user Debian's postgresql package creates
PG_ROLE = "airflow"  # the database role and database the stack uses


class ServiceError(RuntimeError):
    """A backing service (PostgreSQL, Redis) could not start or stop."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as e:
        return f"<cannot read {path}: {e}>"


def _wait_port(port: int, timeout: float, alive: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            return False
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        time.sleep(0.1)
    return False


def pg_bindir() -> Path:
    """Debian keeps the server binaries off PATH, in /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise ServiceError("PostgreSQL server binaries not found: install Debian's postgresql (dev/setup.sh does)")
    return Path(found[-1]).parent


class Postgres:
    """A PostgreSQL cluster of its own: ``start()``, ``url``, ``stop()``."""

    def __init__(self, port: int | None = None) -> None:
        self.bindir = pg_bindir()
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="airflow-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        as_root = os.geteuid() == 0
        if as_root:
            try:
                owner = pwd.getpwnam(PG_USER)
            except KeyError:
                raise ServiceError(f"no OS user {PG_USER!r} to run PostgreSQL as: install postgresql") from None
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self._prefix = ["runuser", "-u", PG_USER, "--"] if as_root else []

    @property
    def url(self) -> str:
        """SQLAlchemy URL for Airflow's sync engine (psycopg2); the async one is derived (asyncpg)."""
        return f"postgresql+psycopg2://{PG_ROLE}@127.0.0.1:{self.port}/{PG_ROLE}"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        done = subprocess.run(
            [*self._prefix, *argv], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if done.returncode != 0:
            raise ServiceError(
                f"{Path(argv[0]).name} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}\n"
                f"server log:\n{_tail(self.log_path)}"
            )

    def start(self) -> Postgres:
        if not self.data.exists():
            # trust on loopback: a throwaway cluster nobody else can reach; C locale: no locale packages needed.
            self._run(
                str(self.bindir / "initdb"), "-D", str(self.data), "-U", PG_ROLE, "--auth=trust",
                "--no-locale", "-E", "UTF8", "--no-sync",
            )  # fmt: skip
            with open(self.data / "postgresql.conf", "a") as conf:
                conf.write(
                    "\n".join(
                        [
                            "listen_addresses = '127.0.0.1'",
                            f"port = {self.port}",
                            "unix_socket_directories = ''",
                            # Two triggerers, a worker, the scheduler, the API server, the DAG processor,
                            # each with sync and async pools: more than the default 100 under load.
                            "max_connections = 300",
                            # Durability is not under test; a throwaway cluster on 2 busy cores.
                            "fsync = off",
                            "synchronous_commit = off",
                            "full_page_writes = off",
                            "",
                        ]
                    )
                )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60", "start",
        )  # fmt: skip
        if not _wait_port(self.port, 30):
            raise ServiceError(f"PostgreSQL does not answer on 127.0.0.1:{self.port}:\n{_tail(self.log_path)}")
        return self

    def create_database(self) -> None:
        self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_ROLE, PG_ROLE)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def alive(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and os.path.exists(f"/proc/{pid}")

    def halt(self, mode: str = "fast") -> None:
        """Stop the server, keep the cluster (``start()`` brings it back): the database goes away.

        ``fast`` (pg_ctl's default) ends every client's session and refuses new
        ones, as a failover or a restart of the database does to its clients.
        """
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def stop(self) -> None:
        """Stop the server and remove the cluster; idempotent."""
        if self.alive():
            try:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except ServiceError:
                pid = self.postmaster_pid()
                if pid:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


class Redis:
    """A Redis server of its own, in memory only (no RDB, no AOF), as the Celery broker."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.access(binary, os.X_OK):
            raise ServiceError("redis-server not found: install Debian's redis-server (dev/setup.sh does)")
        self.binary = binary
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="airflow-redis-"))
        self.log_path = self.root / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, env: dict[str, str] | None = None) -> Redis:
        argv = [
            self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.root),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        if not _wait_port(self.port, 30, alive=self.proc):
            raise ServiceError(f"redis-server does not answer on 127.0.0.1:{self.port}:\n{_tail(self.log_path)}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)
