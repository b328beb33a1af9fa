"""Pure rules: ids, framing, payload, state classification. No I/O."""

from __future__ import annotations

import hashlib

import pytest

from airflow_ssh_async.job import (
    OUTPUT_KEYS,
    ExistingAction,
    JobFacts,
    JobIdError,
    JobRef,
    JobState,
    JobStatus,
    ListedJob,
    OnExisting,
    OutputCut,
    ProtocolError,
    build_result,
    classify,
    decide_existing,
    derive_job_id,
    env_exports,
    job_record,
    launch_payload,
    parse_frames,
    parse_listing,
    parse_status,
    parse_supervisor_copies,
    validate_job_id,
)
from airflow_ssh_async.streams import LineDecoder, Tail

INFO = {"pid": 10, "supervisor_pid": 9, "supervisor_start": "100", "boot_id": "b1", "start_time": 5, "timeout": 60}


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "`", "-a", ".a", "a b", "x" * 129, "é", "a\nb", None])
def test_invalid_job_ids_are_refused(bad: object) -> None:
    with pytest.raises(JobIdError, match="invalid job id"):
        validate_job_id(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("good", ["a", "A1", "a.b_c-d", "9" * 128])
def test_valid_job_ids_pass(good: str) -> None:
    assert validate_job_id(good) == good


def test_derived_ids_are_stable_valid_and_distinct() -> None:
    a = derive_job_id("dag", "task", "scheduled__2026-01-01T00:00:00+00:00")
    assert a == derive_job_id("dag", "task", "scheduled__2026-01-01T00:00:00+00:00")
    assert validate_job_id(a) == a and a.startswith("dag-task-scheduled")
    assert a != derive_job_id("dag", "task", "scheduled__2026-01-01T00:00:00+00:00", map_index=0)
    # Runs whose readable parts collide still differ by the hash.
    assert derive_job_id("d", "t", "r:1") != derive_job_id("d", "t", "r/1")
    assert len(derive_job_id("d" * 300, "t" * 300, "r" * 300)) <= 128


def test_frames_are_byte_exact_and_truncation_is_an_error() -> None:
    data = b"a 3\nx\ny\nb 0\n\n"
    assert parse_frames(data) == [("a", b"x\ny"), ("b", b"")]
    with pytest.raises(ProtocolError, match="truncated"):
        parse_frames(data[:-3])
    with pytest.raises(ProtocolError, match="bad record header"):
        parse_frames(b"garbage\n")


def test_env_exports_quote_every_value_once() -> None:
    out = env_exports({"A": 'it\'s $HOME `x` "q"\nline2'}).decode()
    assert out == "export A='it'\"'\"'s $HOME `x` \"q\"\nline2'\n"
    with pytest.raises(ValueError, match="invalid environment variable name"):
        env_exports({"1BAD": "x"})


def test_payload_header_counts_bytes_of_each_part() -> None:
    payload = launch_payload("echo é", {"K": "v"}, "/tmp", b"SUP")
    header, rest = payload.split(b"\n", 1)
    magic, version, ncwd, nenv, nsup, ncmd, sup_id = header.split()
    assert (magic, version) == (b"airflow-ssh-async-payload", b"1")
    assert int(ncwd) + int(nsup) + int(nenv) + int(ncmd) == len(rest)
    assert rest.endswith("echo é".encode()), "the command is sent verbatim"
    # The supervisor is named by its content: another supervisor, another name.
    assert sup_id == hashlib.sha256(b"SUP").hexdigest()[:16].encode()
    assert launch_payload("true", {}, "", b"SUP2").split()[6] != sup_id


def facts(**kw: object) -> JobFacts:
    base: dict[str, object] = {
        "job": "/j",
        "exists": True,
        "job_json": INFO,
        "supervisor_alive": True,
        "supervisor_start": "100",
    }
    base.update(kw)
    return JobFacts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("result", "state", "code", "sig"),
    [
        ({"reason": "exited", "exit_code": 0, "signal": None}, JobState.SUCCEEDED, 0, None),
        ({"reason": "exited", "exit_code": 3, "signal": None}, JobState.FAILED, 3, None),
        ({"reason": "signal", "exit_code": None, "signal": 9}, JobState.KILLED, None, 9),
        ({"reason": "timed_out", "exit_code": None, "signal": 15}, JobState.TIMED_OUT, None, 15),
        ({"reason": "cancelled", "exit_code": None, "signal": 15}, JobState.CANCELLED, None, 15),
    ],
)
def test_result_decides_the_final_state(result: dict, state: JobState, code: int | None, sig: int | None) -> None:
    # A result wins even when the supervisor is gone (it exits after writing it).
    status = classify(facts(result_json=result, supervisor_alive=False), "b1", 10)
    assert (status.state, status.exit_code, status.signal) == (state, code, sig)


def test_output_cut_keeps_the_state_and_is_said_in_the_reason() -> None:
    cut = [{"stream": "stdout", "cause": "ENOSPC", "at": 2072576, "dropped": None}]
    status = classify(facts(result_json={"reason": "exited", "exit_code": 0, "output_cut": cut}), "b1", 10)
    assert status.state is JobState.SUCCEEDED and status.exit_code == 0
    assert status.output_cut == (OutputCut("stdout", "ENOSPC", 2072576, None),)
    assert status.reason == "exited with code 0; stdout cut short at 2072576 bytes: the disk was full (ENOSPC)"
    limited = OutputCut("stderr", "output_limit", 1048576, 5)
    assert limited.describe() == "stderr truncated at 1048576 bytes (output_limit), 5 bytes dropped"


@pytest.mark.parametrize("bad", [{}, [1], [{"stream": "stdout"}], [{"stream": "x", "cause": "y", "at": "1"}]])
def test_a_malformed_output_cut_is_an_error_that_names_the_file(bad: object) -> None:
    with pytest.raises(ProtocolError, match="result.json has a malformed output_cut"):
        classify(facts(result_json={"reason": "exited", "exit_code": 0, "output_cut": bad}), "b1", 10)


def test_unknown_result_reason_is_an_error_not_a_guess() -> None:
    with pytest.raises(ProtocolError, match="unknown reason"):
        classify(facts(result_json={"reason": "??"}), "b1", 10)


@pytest.mark.parametrize(
    ("kw", "boot", "state", "why"),
    [
        ({}, "b1", JobState.RUNNING, "running"),
        ({"supervisor_alive": False}, "b1", JobState.LOST, "supervisor is gone"),
        ({}, "b2", JobState.LOST, "rebooted"),
        ({"supervisor_start": "999"}, "b1", JobState.LOST, "another process"),
        ({"exists": False}, "b1", JobState.MISSING, "no job directory"),
        ({"job_json": None}, "b1", JobState.STARTING, "not written yet"),
        ({"job_json": None, "launch_age": 600}, "b1", JobState.STARTING, "not written yet"),
        ({"job_json": None, "launch_over": True, "launch_age": 600}, "b1", JobState.LOST, "untouched for 600 s"),
        ({"job_json": None, "launch_over": True}, "b1", JobState.LOST, "the launch died before writing job.json"),
    ],
)
def test_liveness_rules(kw: dict, boot: str, state: JobState, why: str) -> None:
    status = classify(facts(**kw), boot, 10)
    assert status.state is state and why in status.reason


def test_half_written_json_is_an_error_that_names_the_file_for_that_job_only() -> None:
    data = (
        b'protocol 1\n1\nnow 2\n10\nboot_id 0\n\njob 2\n/j\nexists 1\n1\nresult.json 5\n{"rea\njob 2\n/k\nexists 1\n0\n'
    )
    report = parse_status(data)  # the batch reads; the damage stays with /j
    with pytest.raises(ProtocolError, match=r"/j/result.json is not valid JSON"):
        classify(report.jobs["/j"], report.boot_id, report.now)
    assert classify(report.jobs["/k"], report.boot_id, report.now).state is JobState.MISSING


def test_wrong_protocol_is_refused() -> None:
    with pytest.raises(ProtocolError, match="protocol"):
        parse_status(b"protocol 1\n9\nnow 1\n1\n")


def frames(*fields: tuple[str, str]) -> bytes:
    return b"".join(f"{name} {len(value.encode())}\n{value}\n".encode() for name, value in fields)


def test_a_listing_shows_only_job_ids_and_numbered_attempts_in_name_order() -> None:
    data = frames(
        ("protocol", "1"),
        ("now", "1700000000"),
        ("async_dir", "/home/u/.airflow_async"),
        ("exists", "1"),
        ("job", "zeta"),
        ("job", "alpha"),
        ("job", "bad name"),
        ("attempt", "alpha/2"),
        ("attempt", "alpha/x"),
        ("attempt", "../1"),
    )
    listing = parse_listing(data, "~/.airflow_async")
    assert (listing.now, listing.async_dir, listing.exists) == (1700000000, "/home/u/.airflow_async", True)
    assert listing.names == ["alpha", "zeta"] and listing.attempts == [".archive/alpha/2"]
    assert listing.folders() == {"alpha": "/home/u/.airflow_async/alpha", "zeta": "/home/u/.airflow_async/zeta"}
    assert listing.folders(attempts=True)[".archive/alpha/2"] == "/home/u/.airflow_async/.archive/alpha/2"


def test_a_listing_of_another_protocol_is_refused() -> None:
    with pytest.raises(ProtocolError, match="list protocol"):
        parse_listing(frames(("protocol", "2"), ("now", "1")), "~/x")
    with pytest.raises(ProtocolError, match="supervisors protocol"):
        parse_supervisor_copies(frames(("protocol", "2")))
    assert parse_supervisor_copies(frames(("protocol", "1"), ("copy", "ab"), ("copy_state", "in_use"))) == {
        "ab": "in_use"
    }


def test_a_listed_archived_attempt_names_its_job_and_number() -> None:
    attempt = ListedJob(".archive/alpha/2", "/d/.archive/alpha/2", None, None, "damaged")
    assert (attempt.job_id, attempt.attempt) == ("alpha", 2)
    current = ListedJob("alpha", "/d/alpha", None, None)
    assert (current.job_id, current.attempt) == ("alpha", None)


@pytest.mark.parametrize(
    ("on_existing", "state", "delivered", "same_origin", "action"),
    [
        ("reattach", JobState.RUNNING, False, True, ExistingAction.WATCH),
        ("reattach", JobState.STARTING, False, True, ExistingAction.WATCH),
        ("reattach", JobState.SUCCEEDED, False, True, ExistingAction.TAKE_RESULT),
        ("reattach", JobState.SUCCEEDED, True, True, ExistingAction.ARCHIVE_AND_START),
        # A fixed job_id reused by another run: run again, never take its result.
        ("reattach", JobState.SUCCEEDED, False, False, ExistingAction.ARCHIVE_AND_START),
        ("reattach", JobState.FAILED, False, True, ExistingAction.ARCHIVE_AND_START),
        ("reattach", JobState.LOST, False, True, ExistingAction.ARCHIVE_AND_START),
        ("reattach", JobState.MISSING, False, True, ExistingAction.LAUNCH_AGAIN),
        ("rerun", JobState.RUNNING, False, True, ExistingAction.REFUSE),
        ("rerun", JobState.SUCCEEDED, False, True, ExistingAction.ARCHIVE_AND_START),
        ("rerun", JobState.CANCELLED, False, True, ExistingAction.ARCHIVE_AND_START),
        ("fail", JobState.SUCCEEDED, False, True, ExistingAction.REFUSE),
        ("fail", JobState.RUNNING, False, True, ExistingAction.REFUSE),
    ],
)
def test_on_existing_rules(on_existing: str, state: JobState, delivered: bool, same_origin: bool, action) -> None:
    assert decide_existing(OnExisting(on_existing), state, delivered, same_origin) is action


def test_line_decoder_never_splits_a_character() -> None:
    text = "aé€😀\nline two ü\nlast"
    data = text.encode()
    for cut in range(1, len(data)):
        decoder = LineDecoder()
        lines = decoder.feed(data[:cut]) + decoder.feed(data[cut:]) + decoder.finish()
        assert lines == text.split("\n"), cut


def test_tail_keeps_the_last_bytes_only() -> None:
    tail = Tail(5)
    for chunk in (b"hello ", b"wor", b"ld!"):
        tail.feed(chunk)
    assert tail.text() == "orld!"
    cut = Tail(4)
    cut.feed("xé€".encode())  # the cut lands inside é: its broken byte is dropped
    assert cut.text() == "€"


def test_a_listed_job_has_the_result_dicts_shape_without_the_output() -> None:
    ref = JobRef("c", "j", "/d/j", "u@h:22")
    status = JobStatus(JobState.KILLED, "killed by signal 9", signal=9, pid=7, start_time=100, end_time=160)
    record = job_record(ref, status, now=200)
    result = build_result(ref, status)
    assert {k: record[k] for k in result if k not in OUTPUT_KEYS} == {
        k: v for k, v in result.items() if k not in OUTPUT_KEYS
    }
    assert not set(OUTPUT_KEYS) & set(record)
    assert record["start_time"] == "1970-01-01T00:01:40+00:00" and record["duration"] == 60
    assert (record["signal_name"], record["age"], record["ended_ago"]) == ("SIGKILL", 100, 40)
    running = job_record(ref, JobStatus(JobState.RUNNING, "running", start_time=100, sizes={"stdout": 3}), now=130)
    assert (running["duration"], running["age"], running["ended_ago"], running["stdout_size"]) == (None, 30, None, 3)
