"""The peers we compare against, each measured the way a user would drive it.

Everything here targets one harness sshd on 127.0.0.1 (tests/harness/sshd.py)
and needs no Airflow scheduler: the Airflow pieces (connections, hooks, the
SSHRemoteJobOperator and its trigger) are called in-process, with connections
taken from AIRFLOW_CONN_<ID> variables that the harness sets.

- ours: ``SSHAsyncJobHook.launch`` (sync facade: one SSH connection a call),
  and a trigger-style poll (status + read of stdout).
- Ansible: ``ansible-playbook`` of one ``command`` task with ``async``/``poll: 0``,
  then ``async_status`` (ad-hoc ``ansible`` and as a playbook).
- apache-airflow-providers-ssh: ``SSHRemoteJobOperator.execute`` up to its
  deferral, and one poll iteration of ``SSHRemoteJobTrigger`` as its ``run`` does.
- the floor: asyncssh connect + ``true`` with our hook's connect options.

The host is this machine, so the footprint of a running job is read straight
from /proc as root, and cleanup kills only the pids a launch created.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import asyncssh

from airflow_ssh_async.client import remote_host
from airflow_ssh_async.errors import JobNotFoundError
from airflow_ssh_async.hooks import Launched, SSHAsyncJobHook
from airflow_ssh_async.host_keys import connect_kwargs
from airflow_ssh_async.job import JobState
from tests.harness.sshd import SSHServer, home

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
ANSIBLE_VENV = Path(os.environ.get("ANSIBLE_VENV", Path(__file__).resolve().parent.parent / ".ansible-venv"))
SUBPROCESS_TIMEOUT = 120.0  # no single peer step may hang a bench run
CONN_TIMEOUT = 10  # seconds, as the conn_timeout extra every peer's connection gets


def quiet_logs() -> None:
    """INFO logs of every SSH call would be timed too; keep all peers at WARNING."""
    for name in ("airflow", "airflow.task", "asyncssh", "paramiko", "airflow.providers.ssh"):
        logging.getLogger(name).setLevel(logging.WARNING)


# --- timing -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One timed call: wall seconds, and client CPU seconds (ours + reaped children)."""

    wall: float
    cpu: float


def _cpu_now() -> float:
    """CPU of this process plus its reaped children (ansible runs as a child)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(fn: Callable[[], T]) -> tuple[T, Sample]:
    cpu0, t0 = _cpu_now(), time.perf_counter()
    out = fn()
    return out, Sample(time.perf_counter() - t0, _cpu_now() - cpu0)


async def atimed(coro: Awaitable[T]) -> tuple[T, Sample]:
    """Time a coroutine inside a running loop (loop start-up excluded)."""
    cpu0, t0 = _cpu_now(), time.perf_counter()
    out = await coro
    return out, Sample(time.perf_counter() - t0, _cpu_now() - cpu0)


# --- the host: processes of a user, read from /proc ----------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    sid: int
    state: str
    rss_kb: int
    pss_kb: int  # shared pages (libc) split among the processes that map them
    cmdline: str


def _read_proc(pid: int) -> Proc | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None  # gone between listing and reading
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = fields.get("VmRSS", "0 kB").split()[0]
    cmdline = " ".join(raw.decode("utf-8", "replace").replace("\0", " ").split())
    return Proc(
        pid=pid,
        ppid=int(fields["PPid"]),
        sid=int(stat.rsplit(")", 1)[1].split()[3]),  # after "pid (comm)": state ppid pgrp session
        state=fields["State"].split()[0],
        rss_kb=int(rss),
        pss_kb=int(next((line.split()[1] for line in rollup.splitlines() if line.startswith("Pss:")), 0)),
        cmdline=cmdline or f"[{fields['Name'].strip()}]",
    )


def user_processes(user: str) -> dict[int, Proc]:
    """Live processes owned by USER (real uid), zombies included."""
    uid = int(subprocess.run(["id", "-u", user], capture_output=True, text=True, check=True).stdout)
    procs: dict[int, Proc] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
        except OSError:
            continue
        proc = _read_proc(int(entry.name))
        if proc:
            procs[proc.pid] = proc
    return procs


def with_descendants(roots: set[int], procs: dict[int, Proc]) -> set[int]:
    found = set(roots)
    grew = True
    while grew:
        kids = {p.pid for p in procs.values() if p.ppid in found} - found
        found |= kids
        grew = bool(kids)
    return found


def kill_pids(pids: set[int]) -> None:
    """SIGKILL exactly these pids (ones a launch of ours created)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_gone(pids: set[int], timeout: float = 15.0) -> set[int]:
    """Wait until PIDS are gone (or only zombies); return those still there."""
    deadline = time.monotonic() + timeout
    left = set(pids)
    while left and time.monotonic() < deadline:
        left = {pid for pid in left if (p := _read_proc(pid)) and p.state != "Z"}
        if left:
            time.sleep(0.1)
    return left


# --- footprint of one running job ---------------------------------------------------------


JOB_SHELL = re.compile(r"^/bin/sh /\S+/command$")


@dataclass
class Footprint:
    """What stays on the host beside the job's own process while it runs."""

    method: str
    user: str
    processes: list[Proc] = field(default_factory=list)
    leftover: list[int] = field(default_factory=list)  # the job's pids still alive after cleanup
    unrelated: int = 0  # new processes of the user that were not the job's (not counted)
    jobs: int = 1  # new processes running the job command: more than 1 means someone else ran it too

    @property
    def helpers(self) -> list[Proc]:
        """The processes that are there for the job, not the job's own shell
        (our `/bin/sh JOB_DIR/command` is the user's script being run)."""
        return [p for p in self.processes if not JOB_SHELL.match(p.cmdline)]

    @property
    def count(self) -> int:
        return len(self.helpers)

    @property
    def rss_kb(self) -> int:
        return sum(p.rss_kb for p in self.helpers)

    @property
    def pss_kb(self) -> int:
        return sum(p.pss_kb for p in self.helpers)

    @property
    def job_shell_kb(self) -> int:
        return sum(p.rss_kb for p in self.processes if JOB_SHELL.match(p.cmdline))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "user": self.user,
            "processes": self.count,
            "rss_kb": self.rss_kb,
            "pss_kb": self.pss_kb,
            "job_shell_kb": self.job_shell_kb,
            "cmdlines": [f"{p.rss_kb} kB  {p.cmdline[:200]}" for p in self.processes],
            "leftover_after_cleanup": self.leftover,
            "unrelated_new_processes": self.unrelated,
            "job_processes_seen": self.jobs,
        }


def _job_family(procs: dict[int, Proc], new: set[int], job_cmdline: str) -> set[int]:
    """The new processes that belong to the job: its new ancestors, their
    descendants, and whatever shares a session with them.

    Other users of the same test account (a test suite running beside the
    bench) start processes too; this keeps them out of the count.
    """
    jobs = {pid for pid in new if procs[pid].cmdline == job_cmdline}
    family = set(jobs)
    for pid in jobs:
        parent = procs[pid].ppid
        while parent in new:
            family.add(parent)
            parent = procs[parent].ppid
    family = with_descendants(family, procs)
    sessions = {procs[pid].sid for pid in family}
    return (family | {pid for pid in new if procs[pid].sid in sessions}) & new


def _overhead(user: str, before: set[int], job_cmdline: str) -> tuple[list[Proc], int]:
    """The job's live helper processes (the job excluded), and how many other
    new processes of USER were left out as not the job's."""
    procs = user_processes(user)
    new = set(procs) - before
    family = _job_family(procs, new, job_cmdline)
    helpers = [procs[pid] for pid in sorted(family) if procs[pid].state != "Z" and procs[pid].cmdline != job_cmdline]
    others = len({pid for pid in new - family if procs[pid].state != "Z"})
    return helpers, others


def measure_footprint(
    method: str,
    user: str,
    launch: Callable[[], T],
    cleanup: Callable[[T], None],
    *,
    job_cmdline: str = "sleep 300",
    settle: float = 3.0,
    samples: int = 5,
) -> Footprint:
    """Launch, let the launcher's own SSH session end, then sample /proc.

    SETTLE covers the sshd session closing and any start-up work. Of SAMPLES
    snapshots 0.3 s apart the heaviest is kept: a helper that comes and goes
    (an older supervisor's tick `sleep`) is counted.
    """
    before = set(user_processes(user))
    handle = launch()
    try:
        time.sleep(settle)
        snaps = []
        for _ in range(samples):
            snaps.append(_overhead(user, before, job_cmdline))
            time.sleep(0.3)
        heaviest, unrelated = max(snaps, key=lambda snap: sum(p.rss_kb for p in snap[0]))
        procs = user_processes(user)
        new = set(procs) - before
        jobs = sum(1 for pid in new if procs[pid].cmdline == job_cmdline)
        family = _job_family(procs, new, job_cmdline)
    finally:
        cleanup(handle)
    if jobs == 0:
        raise RuntimeError(f"{method}: no running `{job_cmdline}` of {user} found after the launch")
    return Footprint(method, user, heaviest, sorted(wait_gone(family)), unrelated, jobs)


# --- ours -----------------------------------------------------------------------------


def new_job_id() -> str:
    return f"bench-{uuid.uuid4().hex[:12]}"


@dataclass
class Ours:
    """SSHAsyncJobHook, a fresh hook object a call (as each task would make one)."""

    conn_id: str

    def launch(self, command: str, timeout: int = 0) -> Launched:
        return SSHAsyncJobHook(self.conn_id).launch(new_job_id(), command, timeout=timeout)

    async def _poll(self, hook: SSHAsyncJobHook, job_dir: str, **host: Any) -> None:
        await hook.astatus([job_dir], **host)
        await hook.aread([(job_dir, "stdout", 0)], **host)

    async def _poll_cold(self, job_dir: str) -> None:
        hook = SSHAsyncJobHook(self.conn_id)
        async with remote_host(await hook.aget_options()) as host:
            await self._poll(hook, job_dir, host=host)

    def poll_cold(self, job_dir: str) -> Sample:
        """Connection lookup + connect + status + read stdout + close."""
        return asyncio.run(atimed(self._poll_cold(job_dir)))[1]

    async def _poll_warm(self, job_dir: str) -> Sample:
        hook = SSHAsyncJobHook(self.conn_id)
        async with remote_host(await hook.aget_options()) as host:
            await self._poll(hook, job_dir, host=host)  # opens the connection
            return (await atimed(self._poll(hook, job_dir, host=host)))[1]

    def poll_warm(self, job_dir: str) -> Sample:
        """Status + read stdout on a held connection, as the trigger does between polls."""
        return asyncio.run(self._poll_warm(job_dir))

    def cleanup(self, launched: list[Launched], timeout: float = 20.0) -> None:
        cleanup_jobs(self.conn_id, [job.job_dir for job in launched], timeout)


def cleanup_jobs(conn_id: str, dirs: list[str], timeout: float = 20.0) -> None:
    """Cancel, wait for the supervisor's result, then remove the job folders."""
    if not dirs:
        return
    hook = SSHAsyncJobHook(conn_id)
    for d in dirs:
        with contextlib.suppress(JobNotFoundError):  # removed by an earlier, cut-short cleanup
            hook.cancel(d, grace=1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = hook.status(dirs)
        if all(status.state.finished for status, _ in states.values()):
            break
        time.sleep(0.3)
    for d, (status, _) in hook.status(dirs).items():
        if status.state != JobState.MISSING:
            hook.archive(d, remove=True)


# --- the floor --------------------------------------------------------------------------


async def _connect_true(kwargs: dict[str, object]) -> None:
    conn = await asyncssh.connect(**kwargs)
    try:
        await conn.run("true", check=True, timeout=30)
    finally:
        conn.close()
        await conn.wait_closed()


def floor(conn_id: str) -> Sample:
    """asyncssh connect + `true` + close, with our hook's connect options (looked up untimed)."""
    kwargs = connect_kwargs(SSHAsyncJobHook(conn_id).get_options())
    return asyncio.run(atimed(_connect_true(kwargs)))[1]


# --- apache-airflow-providers-ssh: SSHRemoteJobOperator / SSHRemoteJobTrigger ---------------------


class _FakeTI:
    """The few task-instance fields SSHRemoteJobOperator.execute reads."""

    dag_id = "bench"
    task_id = "remote_job"
    run_id = "bench_run"
    try_number = 1

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


@dataclass
class OperatorPeer:
    """SSHRemoteJobOperator (providers-ssh 7.0.1) driven in-process, no scheduler.

    Its POSIX wrapper starts with `set -euo pipefail` in the login shell, so
    the SSH user needs bash (dash has no pipefail): use the harness's asyncbash.
    """

    conn_id: str
    remote_os: Literal["auto", "posix"] = "auto"  # the operator's default: one extra `uname -s` round trip

    def _operator(self, command: str) -> Any:
        from airflow.providers.ssh.operators.ssh_remote_job import SSHRemoteJobOperator

        return SSHRemoteJobOperator(
            task_id=f"remote_job_{uuid.uuid4().hex[:8]}",
            ssh_conn_id=self.conn_id,
            command=command,
            remote_os=self.remote_os,
            conn_timeout=CONN_TIMEOUT,
        )

    def submit(self, command: str) -> tuple[Any, Sample]:
        """execute() until it defers: timed; return the trigger it deferred to.

        The operator is built untimed (that is DAG parsing); execute() makes its
        SSHHook (connection lookup), connects, detects the OS unless told,
        submits the wrapper, closes the connection and raises TaskDeferred.
        """
        from airflow.sdk.bases.operator import ExecutorSafeguard
        from airflow.sdk.exceptions import TaskDeferred

        op = self._operator(command)
        # As the task runner does: mark this operator as the one being run, in a
        # context copy, so execute()'s safeguard lets it through.
        ctx = contextvars.copy_context()
        ctx.run(ExecutorSafeguard.tracker.set, op)
        cpu0, t0 = _cpu_now(), time.perf_counter()
        try:
            ctx.run(op.execute, context={"ti": _FakeTI()})
        except TaskDeferred as deferred:
            return deferred.trigger, Sample(time.perf_counter() - t0, _cpu_now() - cpu0)
        raise RuntimeError("SSHRemoteJobOperator.execute returned without deferring")

    @staticmethod
    async def _poll(trigger: Any, conn: Any) -> None:
        """The body of one SSHRemoteJobTrigger.run iteration, minus its sleep."""
        await trigger._check_completion(conn)
        await trigger._read_log_chunk(conn)

    async def _poll_cold(self, trigger: Any) -> None:
        conn = await trigger._connect()
        try:
            await self._poll(trigger, conn)
        finally:
            await trigger._close(conn)

    def poll_cold(self, trigger: Any) -> Sample:
        """Connection lookup + connect + check exit_code + read log chunk + close."""
        return asyncio.run(atimed(self._poll_cold(trigger)))[1]

    async def _poll_warm(self, trigger: Any) -> Sample:
        conn = await trigger._connect()
        try:
            await self._poll(trigger, conn)
            return (await atimed(self._poll(trigger, conn)))[1]
        finally:
            await trigger._close(conn)

    def poll_warm(self, trigger: Any) -> Sample:
        """One poll on the connection the trigger holds for its whole loop."""
        return asyncio.run(self._poll_warm(trigger))

    def cleanup(self, triggers: list[Any]) -> None:
        """What on_kill and cleanup='always' do: kill the job's group, rm its folder."""
        if not triggers:
            return
        from airflow.providers.ssh.hooks.ssh import SSHHook
        from airflow.providers.ssh.utils.remote_job import build_posix_cleanup_command, build_posix_kill_command

        hook = SSHHook(ssh_conn_id=self.conn_id, conn_timeout=CONN_TIMEOUT)
        with hook.get_conn() as client:
            for trig in triggers:
                pid_file = f"{trig.job_dir}/pid"
                for cmd in (build_posix_kill_command(pid_file), build_posix_cleanup_command(trig.job_dir)):
                    hook.exec_ssh_client_command(client, cmd, get_pty=False, environment=None, timeout=30)


# --- Ansible ------------------------------------------------------------------------------


_RESULT_RE = re.compile(r"\| (?:CHANGED|SUCCESS) =>")


def _ansible_result(stdout: str) -> dict[str, Any]:
    """The JSON the `minimal` callback prints after `host | CHANGED =>`."""
    match = _RESULT_RE.search(stdout)
    if not match:
        raise RuntimeError(f"no result in ansible output:\n{stdout[-2000:]}")
    start = stdout.index("{", match.end())
    return json.JSONDecoder().raw_decode(stdout, start)[0]


@dataclass
class AnsiblePeer:
    """ansible-core against the harness sshd, configured in its own temp dir.

    Settings, each to keep Ansible at its best without changing what it does:
    gather_facts off (a one-task launch needs no facts), the remote Python
    given (no interpreter discovery round trip), transfer_method=piped (the
    harness sshd has no sftp subsystem, and sftp/scp would fail first), the
    `minimal` stdout callback (to read the jid). SSH multiplexing stays as
    Ansible ships it (ControlMaster=auto, ControlPersist=60s) within a run,
    but each run gets a fresh ControlPath dir and its master is closed after
    it, so no run reuses another's connection: cold, like our sync facade.
    ANSIBLE_ASYNC_DIR is left at its default (~/.ansible_async).
    """

    root: Path
    user: str
    venv: Path = ANSIBLE_VENV

    @classmethod
    def create(cls, server: SSHServer, user: str, venv: Path = ANSIBLE_VENV) -> AnsiblePeer:
        if not (venv / "bin" / "ansible-playbook").exists():
            raise RuntimeError(f"no ansible-playbook in {venv}: run bench/ansible_env.sh first")
        peer = cls(Path(tempfile.mkdtemp(prefix="bench-ansible-")), user, venv)
        peer._write_config(server)
        return peer

    def _write_config(self, server: SSHServer) -> None:
        (self.root / "inventory.ini").write_text(
            f"target ansible_host={LOOPBACK} ansible_port={server.port} ansible_user={self.user} "
            f"ansible_ssh_private_key_file={server.client_key} ansible_python_interpreter=/usr/bin/python3\n"
        )
        known_hosts = server.workdir / "known_hosts"
        (self.root / "ansible.cfg").write_text(
            "[defaults]\n"
            f"inventory = {self.root / 'inventory.ini'}\n"
            "host_key_checking = True\n"
            f"local_tmp = {self.root / 'tmp'}\n"
            "stdout_callback = minimal\n"
            "retry_files_enabled = False\n"
            f"timeout = {CONN_TIMEOUT}\n"
            "[ssh_connection]\n"
            "ssh_args = -o ControlMaster=auto -o ControlPersist=60s "
            f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes\n"
            "transfer_method = piped\n"
        )
        (self.root / "async_status.yml").write_text(
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - async_status:\n        jid: '{{ jid }}'\n"
        )

    def _launch_playbook(self, command: str) -> Path:
        path = self.root / f"launch-{uuid.uuid5(uuid.NAMESPACE_OID, command).hex[:8]}.yml"
        if not path.exists():
            path.write_text(
                "- hosts: all\n  gather_facts: false\n  tasks:\n"
                f"    - command: {json.dumps(command)}\n      async: 600\n      poll: 0\n"
            )
        return path

    def _run(self, argv: list[str]) -> dict[str, Any]:
        """Run one ansible command with a private ControlPath dir; close its master after."""
        control = Path(tempfile.mkdtemp(prefix="cp-", dir=self.root))
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(self.root / "ansible.cfg"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control),
            "ANSIBLE_NOCOLOR": "1",
        }
        try:
            done = subprocess.run(
                [str(self.venv / "bin" / argv[0]), *argv[1:]],
                cwd=self.root,
                env=env,
                capture_output=True,
                text=True,
                timeout=SUBPROCESS_TIMEOUT,
            )
        finally:
            self._close_masters(control)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return _ansible_result(done.stdout)

    @staticmethod
    def _close_masters(control: Path) -> None:
        for sock in control.iterdir():
            subprocess.run(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", LOOPBACK],
                capture_output=True,
                timeout=30,
            )
        shutil.rmtree(control, ignore_errors=True)

    def launch(self, command: str) -> str:
        """ansible-playbook of one async task (async: 600, poll: 0); return the jid."""
        return str(self._run(["ansible-playbook", str(self._launch_playbook(command))])["ansible_job_id"])

    def status_adhoc(self, jid: str) -> dict[str, Any]:
        """`ansible all -m async_status -a jid=...`: no playbook to parse."""
        return self._run(["ansible", "all", "-m", "async_status", "-a", f"jid={jid}"])

    def status_playbook(self, jid: str) -> dict[str, Any]:
        return self._run(["ansible-playbook", "async_status.yml", "-e", f"jid={jid}"])

    def _job_pids(self, jid: str) -> tuple[set[int], set[str]]:
        """The async_wrapper processes of JID (and their children), and their tmp dirs."""
        procs = user_processes(self.user)
        key = jid.split(".")[0]  # async_wrapper's argv carries the jid without the .pid suffix
        roots = {p.pid for p in procs.values() if "async_wrapper" in p.cmdline and f" {key} " in p.cmdline}
        tmpdirs = {
            os.path.dirname(p.cmdline.split()[1])
            for p in procs.values()
            if p.pid in roots and len(p.cmdline.split()) > 1
        }
        return with_descendants(roots, procs), tmpdirs

    def cleanup(self, jids: list[str]) -> None:
        """Kill each job's wrapper tree, then remove its result file and module tmp dir."""
        user_home = home(self.user)
        for jid in jids:
            pids, tmpdirs = self._job_pids(jid)
            kill_pids(pids)
            wait_gone(pids, timeout=5)
            for tmp in tmpdirs:
                if tmp.startswith(f"{user_home}/.ansible/tmp/"):
                    shutil.rmtree(tmp, ignore_errors=True)
            (user_home / ".ansible_async" / jid).unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
