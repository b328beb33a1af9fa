"""Job ids and where a job lives: what names a job before anything reaches a host.

Pure (tests/unit/test_job.py): an id is checked here, once, so no path
built from it can leave the job directory.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass

DEFAULT_ASYNC_DIR = "~/.airflow_async"
ARCHIVE_DIR = ".archive"  # ASYNC_DIR/.archive/ID/N: attempt N of ID, moved aside (archive.sh); no id starts with "."
JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class JobIdError(ValueError):
    """A job id that could name a path outside the job directory, or nothing."""


def validate_job_id(job_id: str) -> str:
    """Refuse ids that are not plain names before anything reaches a host."""
    if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
        raise JobIdError(
            f"invalid job id {job_id!r}: a job id is 1 to 128 characters of letters, digits, "
            "'.', '_' and '-', starting with a letter or digit. Pass job_id= with such a name."
        )
    return job_id


def derive_job_id(dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> str:
    """A stable id for one task instance: every try of it finds the same job.

    Readable parts (cut to fit) plus a hash of the full key, so two runs whose
    names only differ in characters we drop still get different ids.
    """
    key = f"{dag_id}\0{task_id}\0{run_id}\0{map_index}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]

    def clean(part: str, limit: int) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip("._-")[:limit]

    parts = [clean(dag_id, 40), clean(task_id, 40), clean(run_id, 24)]
    if map_index >= 0:
        parts.append(str(map_index))
    readable = "-".join(p for p in parts if p)
    return validate_job_id(f"{readable}-{digest}" if readable else digest)


def log_key(dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> str:
    """Names one task try's log on the host (letters and digits): where a
    watcher of that try records how far the log got (see output.sh)."""
    key = f"{dag_id}\0{run_id}\0{task_id}\0{map_index}\0{try_number}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def job_dir_in(async_dir: str, job_id: str) -> str:
    """The folder of job JOB_ID under ASYNC_DIR, as given (``~`` is resolved on the host)."""
    return f"{async_dir.rstrip('/')}/{validate_job_id(job_id)}"


@dataclass(frozen=True)
class JobRef:
    """Where a job lives: what XCom carries and what a sensor is given."""

    ssh_conn_id: str
    job_id: str
    job_dir: str
    host: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)
