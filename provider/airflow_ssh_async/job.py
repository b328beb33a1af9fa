"""The job's pure rules, under one name: ``airflow_ssh_async.job`` is what users and tests import.

Each concern has its own module (nothing there does I/O, so every rule is
tested without SSH, tests/unit/test_job.py); this module only gathers them:

- ``job_ids``: job ids, ``JobRef`` and where a job's folder is;
- ``frames``: the framed records every script answers in, ``ProtocolError``;
- ``payload``: what launch.sh reads on stdin;
- ``status_report``: status.sh's reply read into ``JobFacts``;
- ``output_cuts``: streams stored short, low space in async_dir;
- ``states``: ``JobState``, ``JobStatus`` and :func:`classify`, the state rules;
- ``listing``: list.sh and supervisors.sh, and what ``gc`` may remove;
- ``results``: the result dict, the trigger event, a listing's record;
- ``on_existing``: what a launch does when its job exists.
"""

from __future__ import annotations

from airflow_ssh_async.frames import (
    PROTOCOL,
    ProtocolError,
    parse_frames,
)
from airflow_ssh_async.job_ids import (
    ARCHIVE_DIR,
    DEFAULT_ASYNC_DIR,
    JOB_ID_RE,
    JobIdError,
    JobRef,
    derive_job_id,
    job_dir_in,
    log_key,
    validate_job_id,
)
from airflow_ssh_async.listing import (
    JobListing,
    ListedJob,
    Listing,
    gc_candidate,
    parse_listing,
    parse_supervisor_copies,
)
from airflow_ssh_async.on_existing import (
    ExistingAction,
    OnExisting,
    decide_existing,
)
from airflow_ssh_async.output_cuts import (
    DEFAULT_OUTPUT_LIMIT,
    LOW_SPACE_KB,
    OutputCut,
    cut_notice,
    low_space_notice,
    parse_output_cut,
    running_cuts,
)
from airflow_ssh_async.payload import (
    ENV_NAME_RE,
    env_exports,
    launch_payload,
    supervisor_id,
    validate_env_name,
)
from airflow_ssh_async.results import (
    OUTPUT_KEYS,
    TAIL_BYTES,
    build_result,
    delivery_marker,
    iso_time,
    job_event,
    job_record,
    signal_name,
)
from airflow_ssh_async.states import (
    FINISHED_WITH_RESULT,
    LAUNCH_PATIENCE,
    JobState,
    JobStatus,
    classify,
    survivors_of,
    timed_out_reason,
    with_cuts,
    with_survivors,
)
from airflow_ssh_async.status_report import (
    JobFacts,
    StatusParts,
    StatusReport,
    parse_status,
)

__all__ = [
    "ARCHIVE_DIR",
    "DEFAULT_ASYNC_DIR",
    "DEFAULT_OUTPUT_LIMIT",
    "ENV_NAME_RE",
    "ExistingAction",
    "FINISHED_WITH_RESULT",
    "JOB_ID_RE",
    "JobFacts",
    "JobIdError",
    "JobListing",
    "JobRef",
    "JobState",
    "JobStatus",
    "LAUNCH_PATIENCE",
    "LOW_SPACE_KB",
    "ListedJob",
    "Listing",
    "OUTPUT_KEYS",
    "OnExisting",
    "OutputCut",
    "PROTOCOL",
    "ProtocolError",
    "StatusParts",
    "StatusReport",
    "TAIL_BYTES",
    "build_result",
    "classify",
    "cut_notice",
    "decide_existing",
    "delivery_marker",
    "derive_job_id",
    "env_exports",
    "gc_candidate",
    "iso_time",
    "job_dir_in",
    "job_event",
    "job_record",
    "launch_payload",
    "log_key",
    "low_space_notice",
    "parse_frames",
    "parse_listing",
    "parse_output_cut",
    "parse_status",
    "parse_supervisor_copies",
    "running_cuts",
    "signal_name",
    "supervisor_id",
    "survivors_of",
    "timed_out_reason",
    "validate_env_name",
    "validate_job_id",
    "with_cuts",
    "with_survivors",
]
