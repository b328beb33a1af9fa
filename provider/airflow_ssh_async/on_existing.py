"""What a launch does when its job already exists: docs/reference.md "on_existing", pure."""

from __future__ import annotations

import enum

from airflow_ssh_async.states import JobState


class OnExisting(str, enum.Enum):
    REATTACH = "reattach"
    RERUN = "rerun"
    FAIL = "fail"


class ExistingAction(enum.Enum):
    WATCH = "watch"  # it is running: follow it
    TAKE_RESULT = "take_result"  # it succeeded and Airflow never took the result
    ARCHIVE_AND_START = "archive_and_start"
    LAUNCH_AGAIN = "launch_again"  # it vanished between our launch and status (raced archive)
    REFUSE = "refuse"


def decide_existing(on_existing: OnExisting, state: JobState, delivered: bool, same_origin: bool) -> ExistingAction:
    """docs/reference.md "on_existing", as one pure function.

    ``same_origin``: the job was launched by this task instance (an earlier
    try of it). A succeeded job from another run (a fixed job_id reused by
    tomorrow's run) is never "taken": it is archived and the job runs again.
    """
    if state is JobState.MISSING:
        return ExistingAction.LAUNCH_AGAIN
    if on_existing is OnExisting.FAIL:
        return ExistingAction.REFUSE
    if not state.finished:
        return ExistingAction.WATCH if on_existing is OnExisting.REATTACH else ExistingAction.REFUSE
    if on_existing is OnExisting.REATTACH and state is JobState.SUCCEEDED and same_origin and not delivered:
        return ExistingAction.TAKE_RESULT
    return ExistingAction.ARCHIVE_AND_START
