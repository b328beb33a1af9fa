"""Job folders at their edges, over a real sshd under each login shell:
hostile strings in job.json, folders left by a dead launch, and async_dirs
that another user could change.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path

import pytest

from airflow_ssh_async.job import JobRef
from airflow_ssh_async.watch import watch_job
from tests.conftest import SHELL_USERS
from tests.harness.logs import ListLog
from tests.harness.sshd import home

pytestmark = pytest.mark.timeout(120)

# Valid UTF-8 (a Python str): what an operator's cwd, origin and async_dir can hold.
HOSTILE = "a\\qb \"q\" 's' \\u0041 tab\there nl\nhere \x01\x1f\x7f é中😀 $(id) *"


def job_json(job_dir: str) -> dict:
    return json.loads(Path(job_dir, "job.json").read_bytes())


@pytest.mark.parametrize("user", SHELL_USERS)
def test_hostile_cwd_origin_and_async_dir_give_a_valid_job_json_and_the_job_is_watched_to_its_end(
    make_hook, job_id: str, user: str
) -> None:
    unique = uuid.uuid4().hex[:8]
    cwd = home(user) / f"cwd-{unique}-{HOSTILE}"
    async_dir = f"~/.async-{unique}-{HOSTILE}"
    cwd.mkdir()
    shutil.chown(cwd, user, user)
    try:
        hook = make_hook(user, async_dir=async_dir)
        origin = f"dag/{HOSTILE}/run/-1"
        launched = hook.launch(job_id, 'printf %s "$PWD"', cwd=str(cwd), origin=origin)
        ref = JobRef(f"test_{user}", job_id, launched.job_dir)
        event = asyncio.run(watch_job(hook, ref, log=ListLog(), poll_interval=0.2))
        assert event["status"] == "finished", event
        assert event["result"]["state"] == "succeeded", event
        assert event["result"]["stdout_tail"] == str(cwd)
        info = job_json(launched.job_dir)
        assert info["cwd"] == str(cwd)
        assert info["origin"] == origin
        assert info["job_dir"] == f"{home(user)}/.async-{unique}-{HOSTILE}/{job_id}" == launched.job_dir
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
        shutil.rmtree(home(user) / f".async-{unique}-{HOSTILE}", ignore_errors=True)
