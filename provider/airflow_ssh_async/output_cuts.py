"""Streams stored short (output_limit, a full disk) and low space in async_dir: how they are read and said."""

from __future__ import annotations

from dataclasses import dataclass

from airflow_ssh_async.frames import ProtocolError
from airflow_ssh_async.status_report import JobFacts

# output_limit's default: the bytes each of stdout and stderr may store on the
# host (1 GiB; 0: no cap). Past it the job runs on and the rest is counted,
# not stored (supervise.sh cap).
DEFAULT_OUTPUT_LIMIT = 1024**3
# Less free space than this in a job's async_dir is worth a warning (once per
# watch): a job may write up to output_limit on each stream.
LOW_SPACE_KB = 1024 * 1024


@dataclass(frozen=True)
class OutputCut:
    """A stream whose stored output stopped short of what the job wrote.

    ``cause`` is ``output_limit`` (the job went on; the rest was discarded
    and counted) or ``ENOSPC`` (the disk was full). ``at`` is how many bytes
    were stored; ``dropped`` how many were discarded after them (None when
    unknown: a disk full without a cap, or a stream still being discarded).
    """

    stream: str
    cause: str
    at: int
    dropped: int | None = None

    def describe(self) -> str:
        if self.cause == "output_limit":
            what = f"{self.stream} truncated at {self.at} bytes (output_limit)"
        else:
            what = f"{self.stream} cut short at {self.at} bytes: the disk was full ({self.cause})"
        if self.dropped is not None:
            what += f", {self.dropped} bytes dropped"
        return what


def cut_notice(cut: OutputCut) -> str:
    """What the task log says, once, when a stream stops being stored."""
    if cut.cause == "output_limit":
        return (
            f"{cut.stream} reached output_limit ({cut.at} bytes): the job runs on, its further {cut.stream} "
            "is counted, not stored (the result says how much was dropped)"
        )
    return (
        f"{cut.stream} was cut short at {cut.at} bytes: the disk of async_dir is full ({cut.cause}); the job "
        f"runs on, its further {cut.stream} is counted, not stored"
    )


def running_cuts(facts: JobFacts) -> tuple[OutputCut, ...]:
    """The cuts of a running job, from its caps' records (a bad record is skipped: it is being rewritten)."""
    cuts = []
    for stream, record in sorted(facts.cuts.items()):
        parts = record.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            cuts.append(OutputCut(stream, parts[0], int(parts[1]), int(parts[2])))
    return tuple(cuts)


def parse_output_cut(job: str, value: object) -> tuple[OutputCut, ...]:
    """result.json's "output_cut" list (absent: nothing was cut)."""
    if value is None:
        return ()
    bad = ProtocolError(f"{job}/result.json has a malformed output_cut {value!r}: the file is damaged")
    if not isinstance(value, list):
        raise bad
    cuts = []
    for item in value:
        if not isinstance(item, dict):
            raise bad
        stream, cause, at, dropped = item.get("stream"), item.get("cause"), item.get("at"), item.get("dropped")
        if not (isinstance(stream, str) and isinstance(cause, str) and isinstance(at, int)):
            raise bad
        if dropped is not None and not isinstance(dropped, int):
            raise bad
        cuts.append(OutputCut(stream, cause, at, dropped))
    return tuple(cuts)


def low_space_notice(free_kb: int) -> str:
    """The warning a watcher logs once (and the CLI shows) when async_dir runs low."""
    return (
        f"only {free_kb // 1024} MiB free in its async_dir (under {LOW_SPACE_KB // 1024} MiB): the job's output "
        "may soon be cut short by a full disk; free space on that filesystem or lower output_limit"
    )
