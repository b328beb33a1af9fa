"""The Remote jobs view's pure rules (provider/airflow_ssh_async/ui/records.py)."""

from __future__ import annotations

import pytest

from airflow_ssh_async.job import JobFacts, JobState, JobStatus, ProtocolError
from airflow_ssh_async.ui.records import (
    DAMAGED,
    Origin,
    job_row,
    last_line,
    lead_cut,
    parse_origin,
    select,
    state_counts,
    whole_utf8,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("etl/load/manual__2026-01-01T00:00:00+00:00/-1", Origin("etl", "load", "manual__2026-01-01T00:00:00+00:00")),
        ("etl/group.load/scheduled__x/3", Origin("etl", "group.load", "scheduled__x", 3)),
        ("etl/load/a/run/with/slashes/0", Origin("etl", "load", "a/run/with/slashes", 0)),
        ("", None),
        (None, None),
        ("cli", None),
        ("etl/load/run/not-a-number", None),
        ("/load/run/-1", None),
    ],
)
def test_origin_names_the_launching_task_instance_or_none(value: object, expected: Origin | None) -> None:
    assert parse_origin(value) == expected


def _answer(job_json: dict, state: JobState = JobState.RUNNING, start: int | None = 100) -> tuple:
    status = JobStatus(state, state.value, pid=job_json.get("pid"), start_time=start, sizes={"stdout": 3})
    return status, JobFacts(job="x", exists=True, path="/h/.airflow_async/x", job_json=job_json)


def test_only_whitelisted_job_facts_reach_the_browser() -> None:
    info = {"pid": 7, "cwd": "/srv", "origin": "d/t/r/-1", "env": "DB_PASSWORD=s3cret", "secret_later": "x"}
    row = job_row("x", "~/.airflow_async/x", _answer(info))
    shown = row.to_dict(now=110)
    assert shown["facts"] == {"pid": 7, "cwd": "/srv"}
    assert "s3cret" not in repr(shown) and "secret_later" not in repr(shown)
    assert shown["origin"] == {"dag_id": "d", "task_id": "t", "run_id": "r", "map_index": -1, "try_number": None}
    assert shown["duration"] == 10 and shown["job_id"] == "x" and "job_dir" not in shown


def test_a_damaged_folder_is_a_row_with_its_reason() -> None:
    row = job_row("bad", "/d/bad", ProtocolError("bad/job.json is not valid JSON (...): the file is damaged"))
    assert row.state == DAMAGED and "job.json" in row.reason and row.origin is None


def test_select_filters_sorts_newest_first_and_pages() -> None:
    rows = [job_row(f"j{i}", f"/d/j{i}", _answer({"origin": f"dag{i % 2}/t/r/-1"}, start=1000 + i)) for i in range(10)]
    rows.append(job_row("bad", "/d/bad", ProtocolError("damaged")))
    page, total = select(rows, offset=0, limit=3)
    assert total == 11 and [r.job_id for r in page] == ["bad", "j9", "j8"]
    page, total = select(rows, dag_id="dag0", offset=1, limit=2)
    assert total == 5 and [r.job_id for r in page] == ["j6", "j4"]
    page, total = select(rows, states=[DAMAGED])
    assert total == 1 and page[0].job_id == "bad"
    assert state_counts(rows) == {"running": 10, DAMAGED: 1}


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (b"abc", 3),
        ("é".encode(), 2),
        ("é".encode()[:1], 0),
        (b"ab" + "€".encode()[:2], 2),
        (b"ab" + "😀".encode()[:3], 2),
        (b"ab" + "😀".encode(), 6),
        (b"\xff\xfe", 2),  # invalid bytes are not held back for ever
        (b"", 0),
    ],
)
def test_a_read_ends_on_a_whole_character(data: bytes, whole: int) -> None:
    assert whole_utf8(data) == whole


def test_a_chunk_from_inside_a_file_starts_on_a_character_and_a_tail_on_a_line() -> None:
    data = "€x\nline two\n".encode()[1:]  # starts inside the euro sign
    assert lead_cut(data) == 2
    assert data[lead_cut(data, at_tail=True) :] == b"line two\n"
    assert lead_cut(b"only one line", at_tail=True) == 0


def test_last_progress_line() -> None:
    assert last_line(b"10%\r20%\r30%\n\n") == "30%"
    assert last_line(b"") == ""


def test_output_is_masked_with_the_tasks_secrets_across_chunk_ends() -> None:
    from airflow_ssh_async.masking import Masker
    from airflow_ssh_async.ui.masks import masked as _masked

    masker = Masker(["s3cret-value"])
    text = "a s3cret-value b s3cr"
    shown, whole = _masked(masker, text, len(text.encode()), lead=False, end="hold")
    assert shown == "a *** b " and whole == len("a s3cret-value b ")  # the possible start waits for more
    shown, whole = _masked(masker, text, len(text.encode()), lead=False, end="mask")
    assert shown == "a *** b ***" and whole == len(text)  # what follows is shown already (Load earlier)
    shown, _ = _masked(masker, text, len(text.encode()), lead=False, end="end")
    assert shown == "a *** b s3cr"  # the end of a finished job's stream: nothing more can come
    shown, _ = _masked(masker, "et-value tail", 13, lead=True, end="end")
    assert shown == "*** tail" and "value" not in shown  # a chunk from inside the stream, begun inside a secret


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({}, ("", "")),
        ({"become_user": None, "become_method": ""}, ("", "")),
        ({"become_user": "postgres"}, ("postgres", "sudo")),
        ({"become_user": "postgres", "become_method": "doas"}, ("postgres", "doas")),
        ({"become_method": "doas"}, ("", "doas")),  # the connection's become_user, by doas
        ({"become_user": "no such; user"}, None),  # a task that failed on it: no section to ask
        ({"become_user": "x", "become_method": "su"}, None),
    ],
)
def test_the_user_a_section_is_read_as_comes_from_trigger_kwargs_or_rendered_fields(
    record: dict, expected: tuple[str, str] | None
) -> None:
    from airflow_ssh_async.ui.sources import become_of

    assert become_of(record) == expected
