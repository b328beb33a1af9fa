"""Masking what the view shows of a job: with the secrets of the task that launched it.

Or the output is withheld (fail closed); a live stream's tail that may
still become a secret is held back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from airflow_ssh_async.masking import MASK, Masker, airflow_min_length, can_seal
from airflow_ssh_async.ui import sources
from airflow_ssh_async.ui.records import JobRow


@dataclass(frozen=True)
class Masking:
    """How a job's output is shown: masked with its launching task's secrets, or withheld."""

    masker: Masker
    withheld: str = ""  # why the output is not shown at all ("" : it is shown, masked)


WITHHELD = (
    "the output is withheld: the task that launched this job has left no secrets with Airflow to mask it "
    "with (no trigger waits, and its task_state_store entry ssh_async_secrets is missing or not sealed "
    "for it), so it could show them in clear"
)
_SECRETS: dict[tuple[str, str, str, int], tuple[float, Masking]] = {}
SECRETS_TTL = 10.0


def masking_of(found: sources.TaskSecrets | None, min_length: int, sealing: bool) -> Masking:
    """Fail closed: a task of this provider's operator that is not deferred has kept its
    secrets sealed in its task_state_store whenever this deployment has a Fernet key
    (SEALING; every task has some: Airflow masks its own config's). Without that entry
    (deleted, or replaced by an editor of the task instance) the output is withheld."""
    found = found or sources.TaskSecrets()
    withheld = WITHHELD if sealing and found.launcher and not found.kept and not found.from_trigger else ""
    return Masking(Masker(found.values, min_length=min_length), withheld)


async def task_maskers(rows: list[JobRow]) -> dict[tuple[str, str, str, int], Masking]:
    """The masking of each task that launched one of ROWS, from the secrets it left with
    Airflow (sources.task_secrets; cached briefly, one lookup for all that are not)."""
    now = time.monotonic()
    for k in [k for k, (at, _) in _SECRETS.items() if now - at > SECRETS_TTL]:
        del _SECRETS[k]
    keys = {r.origin.key for r in rows if r.origin is not None}
    todo = [k for k in keys if k not in _SECRETS]
    if todo:
        found = await run_in_threadpool(sources.task_secrets, todo)
        length, sealing = airflow_min_length(), can_seal()
        for k in todo:
            _SECRETS[k] = (now, masking_of(found.get(k), length, sealing))
    return {k: _SECRETS[k][1] for k in keys}


async def task_masker(row: JobRow) -> Masking:
    """The masking of the task that launched ROW (none for a job no task launched)."""
    if row.origin is None:
        return Masking(Masker())
    return (await task_maskers([row]))[row.origin.key]


def masked(masker: Masker, text: str, whole: int, *, lead: bool, end: str) -> tuple[str, int]:
    """TEXT masked. END says what its end is: ``end`` of the stream (nothing more can come);
    ``hold``: more comes (a running job, or more bytes after the chunk), so a tail that may
    still become a secret is held back (WHOLE shrinks to where it starts) for the next read;
    ``mask``: the caller already has what follows, so that tail is masked. A chunk from inside
    the stream (LEAD) that may begin inside a secret has that head masked too."""
    tail = ""
    if end in ("hold", "mask"):
        keep = masker.held_from(text)
        if keep < len(text):
            if end == "hold":
                whole -= len(text[keep:].encode())
            else:
                tail = MASK
            text = text[:keep]
    head = masker.cut_lead(text) if lead else 0
    return (MASK if head else "") + masker.mask(text[head:]) + tail, whole
