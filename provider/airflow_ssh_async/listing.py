"""A host's job folders as list.sh and supervisors.sh report them, and which of them `gc` may remove."""

from __future__ import annotations

from dataclasses import dataclass

from airflow_ssh_async.frames import PROTOCOL, ProtocolError, parse_frames
from airflow_ssh_async.job_ids import ARCHIVE_DIR, JOB_ID_RE
from airflow_ssh_async.states import JobState, JobStatus
from airflow_ssh_async.status_report import JobFacts


@dataclass(frozen=True)
class Listing:
    """What list.sh reported: the host's clock, the resolved async_dir and the
    names of its job folders and archived attempts (``.archive/ID/N``)."""

    now: int
    async_dir: str  # absolute, as the host resolved it (as given when it does not exist)
    exists: bool
    names: list[str]
    attempts: list[str]

    def folders(self, *, attempts: bool = False) -> dict[str, str]:
        """Folder name -> its absolute path; with ATTEMPTS the archived attempts too."""
        names = self.names + self.attempts if attempts else self.names
        return {name: f"{self.async_dir}/{name}" for name in names}


def parse_listing(data: bytes, async_dir: str) -> Listing:
    """Read list.sh output. Names that are no job id are not ours: never listed.

    :raises ProtocolError: the reply is damaged or of another protocol.
    """
    now, exists = 0, False
    names: list[str] = []
    attempts: list[str] = []
    for name, value in parse_frames(data):
        if name == "now":
            now = int(value)
        elif name == "async_dir":
            async_dir = value.decode("utf-8", "replace")
        elif name == "exists":
            exists = value == b"1"
        elif name == "job":
            job = value.decode("utf-8", "replace")
            if JOB_ID_RE.fullmatch(job):  # anything else is not ours to show or delete
                names.append(job)
        elif name == "attempt":
            job, _, n = value.decode("utf-8", "replace").partition("/")
            if JOB_ID_RE.fullmatch(job) and n.isdigit():
                attempts.append(f"{ARCHIVE_DIR}/{job}/{n}")
        elif name == "protocol" and value != str(PROTOCOL).encode():
            raise ProtocolError(f"list protocol {value!r}, expected {PROTOCOL}")
    return Listing(now, async_dir, exists, sorted(names), sorted(attempts))


def parse_supervisor_copies(data: bytes) -> dict[str, str]:
    """Read supervisors.sh output: copy id -> what became of it."""
    copies: dict[str, str] = {}
    current = ""
    for name, value in parse_frames(data):
        if name == "copy":
            current = value.decode("ascii", "replace")
        elif name == "copy_state" and current:
            copies[current] = value.decode("ascii", "replace")
        elif name == "protocol" and value != str(PROTOCOL).encode():
            raise ProtocolError(f"supervisors protocol {value!r}, expected {PROTOCOL}")
    return copies


@dataclass(frozen=True)
class ListedJob:
    """One job folder of a listing, with its state or why it could not be read.

    ``name`` is the folder's name under async_dir: the job id, or
    ``.archive/ID/N`` for attempt N of job ID that a retry moved aside.
    ``status`` and ``facts`` are None exactly when ``error`` says why (a
    damaged job file): one bad folder never hides the others.
    """

    name: str
    job_dir: str
    status: JobStatus | None
    facts: JobFacts | None
    error: str = ""

    @property
    def job_id(self) -> str:
        """The job's id, also for an archived attempt of it."""
        return self.name.split("/")[1] if self.name.startswith(f"{ARCHIVE_DIR}/") else self.name

    @property
    def attempt(self) -> int | None:
        """N for an archived attempt ``.archive/ID/N``; None for the job's current folder."""
        return int(self.name.rsplit("/", 1)[1]) if self.name.startswith(f"{ARCHIVE_DIR}/") else None


@dataclass(frozen=True)
class JobListing:
    """The jobs of one async_dir on one host, as :meth:`SSHAsyncJobHook.alist_jobs` read them."""

    now: int  # the host's clock when listed (epoch seconds)
    async_dir: str  # absolute, as the host resolved it
    exists: bool  # False: async_dir does not exist on the host (no jobs, not an error)
    jobs: list[ListedJob]


def gc_candidate(entry: ListedJob, cutoff: int) -> bool:
    """Finished long enough ago, and surely not running: what `airflow-ssh-async gc` may remove.

    Jobs with a result count from their end time. Lost jobs have none, so they
    count from their start, and only when the job's own process is gone too.
    """
    status, facts = entry.status, entry.facts
    if status is None or facts is None:
        return False
    if status.state.has_result:
        return status.end_time is not None and status.end_time <= cutoff
    if status.state is JobState.LOST:
        return facts.job_alive is not True and status.start_time is not None and status.start_time <= cutoff
    return False
