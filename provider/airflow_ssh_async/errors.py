"""Errors, rooted at one base, each carrying the host and job it is about.

Every message says what happened, to which job on which host, and what to do.
``permanent`` tells the operator whether another try could help: a wrong key
or a missing cwd will not fix itself, a dropped connection may.
"""

from __future__ import annotations


class SSHAsyncJobError(Exception):
    """Base of every error this package raises about a remote job."""

    permanent = True

    def __init__(self, message: str, *, host: str = "", job_id: str = "", hint: str = "") -> None:
        self.host = host
        self.job_id = job_id
        self.hint = hint
        parts = [message]
        if job_id:
            parts.append(f"job {job_id!r}")
        if host:
            parts.append(f"on {host}")
        text = ", ".join(parts)
        super().__init__(f"{text}. {hint}" if hint else text)


class ConnectionNotFoundError(SSHAsyncJobError):
    """The Airflow connection id is unknown."""


class SSHConnectError(SSHAsyncJobError):
    """The host could not be reached; retrying may help."""

    permanent = False


class SSHAuthError(SSHAsyncJobError):
    """The host refused our credentials."""


class HostKeyError(SSHAsyncJobError):
    """The host key is unknown or differs from the one we trust."""


class RemoteCommandError(SSHAsyncJobError):
    """A remote script failed; ``code`` is its exit status, ``stderr`` what it said."""

    def __init__(self, message: str, *, code: int | None = None, stderr: str = "", **kwargs: str) -> None:
        self.code = code
        self.stderr = stderr
        super().__init__(message, **kwargs)


class RemoteShellError(RemoteCommandError):
    """The host's shell failed with a code none of our scripts uses (it could
    not fork, ran out of memory, lost a file): the next try may work."""

    permanent = False


class JobExistsError(RemoteCommandError):
    """The job directory exists already (the launch lock is taken)."""


class JobNotFoundError(RemoteCommandError):
    """No job directory for this id."""


class CwdError(RemoteCommandError):
    """The requested working directory does not exist on the host."""


class AsyncDirError(RemoteCommandError):
    """async_dir cannot be created or written."""


class RemoteWriteError(RemoteCommandError):
    """Writing the job files failed (disk full, quota)."""


class JobRunningError(RemoteCommandError):
    """The job is still running and the action needs a finished one."""


class MissingToolError(RemoteCommandError):
    """The host lacks a command the remote scripts need."""
