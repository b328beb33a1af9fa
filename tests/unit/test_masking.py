"""Masking secrets in output that arrives in pieces: pure logic, no I/O."""

from __future__ import annotations

import logging
import random

import pytest

from airflow_ssh_async.masking import MASK, Masker, masked_log, seal, task_secrets, unseal
from airflow_ssh_async.streams import MAX_LINE, LineDecoder, Tail

pytestmark = pytest.mark.timeout(120)

HOSTILE = [
    "hunter2-pw",
    "hunter2-pw-longer",  # a longer secret sharing the first one's start
    "pw-longer-x",  # overlapping the end of the one above
    "a.b*c+d?(e)[f]{g}|h^$\\",  # regex metacharacters
    "line1\nline2",  # a multi-line secret (a PEM key, say)
    "pässwörd€😀",  # not ASCII
    "%s %d %(x)s",  # printf-like: must not be read as a log format
]


def chunks(text: str, rng: random.Random, most: int = 7) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), min(most, len(text) - 1))) if len(text) > 1 else []
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def streamed(masker: Masker, pieces: list[str], mid_stream: bool = False) -> str:
    s = masker.stream(mid_stream)
    return "".join(s.feed(p) for p in pieces) + s.finish()


def test_streamed_output_is_masked_exactly_as_the_whole_text_wherever_the_reads_cut() -> None:
    masker = Masker(HOSTILE)
    rng = random.Random(21)
    alphabet = "xy- \n" + "".join(HOSTILE)
    for _ in range(3000):
        parts = [rng.choice(HOSTILE) if rng.random() < 0.3 else "".join(rng.choices(alphabet, k=rng.randint(0, 12)))]
        text = "".join(parts + [rng.choice(HOSTILE) for _ in range(rng.randint(0, 3))])
        text += "".join(rng.choices(alphabet, k=rng.randint(0, 20)))
        assert streamed(masker, chunks(text, rng)) == masker.mask(text), repr(text)


def test_every_cut_inside_a_secret_is_masked() -> None:
    masker = Masker(HOSTILE)
    for secret in HOSTILE:
        text = f"dsn=postgres://app:{secret}@db/app\n"
        for cut in range(len(text) + 1):
            out = streamed(masker, [text[:cut], text[cut:]])
            assert secret not in out and MASK in out, (secret, cut, out)


def test_longest_secret_wins_over_a_shorter_one_it_contains() -> None:
    assert Masker(["hunter2-pw", "hunter2-pw-longer"]).mask("x hunter2-pw-longer y") == "x *** y"


def test_a_secret_across_a_64_kib_line_boundary_in_byte_reads_is_masked() -> None:
    secret = "s3cr€t-😀-token"
    line = ("x" * (64 * 1024 - 5) + secret + "y" * 10 + "\n").encode()
    start = line.index(secret.encode())
    masker = Masker([secret])
    for cut in range(start - 1, start + len(secret.encode()) + 1):  # every byte, inside characters too
        tail = Tail(40)
        decoder = LineDecoder(masker, tail)
        lines = decoder.feed(line[:cut]) + decoder.feed(line[cut:]) + decoder.finish()
        # The masked line is longer than MAX_LINE: it comes in pieces, cut after masking.
        assert "".join(lines) == "x" * (64 * 1024 - 5) + MASK + "y" * 10, cut
        assert max(map(len, lines)) <= MAX_LINE, cut
        assert secret not in tail.text() and tail.text().endswith(MASK + "y" * 10 + "\n")


def test_a_line_that_cannot_start_a_secret_is_not_delayed() -> None:
    decoder = LineDecoder(Masker(["hunter2-pw"]))
    assert decoder.feed(b"progress 50%\n") == ["progress 50%"]
    assert decoder.feed(b"pw=hunt") == []  # may become the secret: held
    assert decoder.feed(b"er2-pw done\n") == ["pw=*** done"]


def test_output_read_from_inside_a_stream_masks_the_cut_off_end_of_a_secret() -> None:
    masker = Masker(["hunter2-pw-longer"])
    assert masker.text("2-pw-longer and more", mid_stream=True) == MASK + " and more"
    assert masker.text("2-pw-longer and more", mid_stream=False) == "2-pw-longer and more"
    assert streamed(masker, ["2-", "pw-lo", "nger tail"], mid_stream=True) == MASK + " tail"


def test_short_empty_and_non_string_values_are_not_secrets() -> None:
    masker = Masker(["", "abc", None, 12345, "abcde"])  # type: ignore[list-item]
    assert masker.secrets == ("abcde",)
    assert not Masker([]) and Masker([]).mask("anything") == "anything"


def test_thousands_of_secrets_and_a_huge_one_still_mask() -> None:
    many = [f"secret-{i:05d}-{'z' * (i % 40)}" for i in range(5000)]
    rng = random.Random(5)
    huge = "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", k=256 * 1024))
    runs = "H" * 8192 + "!"  # one repeated character: the worst case for finding where a secret starts
    masker = Masker([*many, huge, runs])
    text = f"a {many[4321]} b {huge} c {runs} d {'H' * 9000}"
    assert streamed(masker, chunks(text, rng, 50)) == f"a {MASK} b {MASK} c {MASK} d {'H' * 9000}"


def test_redact_walks_nested_results() -> None:
    masker = Masker(["hunter2-pw"])
    result = {"stdout_tail": "pw=hunter2-pw", "n": 3, "more": ["x hunter2-pw", ("hunter2-pw",)], "none": None}
    assert masker.redact(result) == {"stdout_tail": "pw=***", "n": 3, "more": ["x ***", ("***",)], "none": None}


def test_masked_log_formats_then_masks_every_line(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test_masking")
    with caplog.at_level(logging.INFO, logger="test_masking"):
        masked = masked_log(log, Masker(["hunter2-pw", "%s %d %(x)s"]))
        masked.info("cannot poll (%s)", "auth hunter2-pw")
        masked.warning("%s", "%s %d %(x)s")
    assert [r.getMessage() for r in caplog.records] == ["cannot poll (auth ***)", MASK]
    assert masked_log(log, Masker()) is log


def test_task_secrets_reads_airflows_masker_and_the_sensitive_environment() -> None:
    from airflow.sdk._shared.secrets_masker import _secrets_masker
    from airflow.sdk.log import mask_secret

    masker = _secrets_masker()
    saved = set(masker.patterns)
    try:
        mask_secret(HOSTILE[3])  # regex metacharacters survive Airflow's escaping and ours undoing it
        mask_secret('{"api_token": "tok-from-extra", "region": "eu-west-1"}')  # a connection's extra
        found = task_secrets(
            {"DB_PASSWORD": "env-pw-12345", "MY_API_TOKEN": "tok-98765", "HOME": "/home/app", "EMPTY": ""},
            extra=["from-mask-secret"],
        )
    finally:
        masker.patterns = saved
        masker.replacer = None
    for value in (HOSTILE[3], "tok-from-extra", "env-pw-12345", "tok-98765", "from-mask-secret"):
        assert value in found, value
    assert "/home/app" not in found and "eu-west-1" not in found


@pytest.fixture
def fernet_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.crypto import get_fernet
    from cryptography.fernet import Fernet

    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
    get_fernet.cache_clear()
    yield
    get_fernet.cache_clear()


def test_sealed_secrets_never_show_in_clear_and_come_back_whole(fernet_key: None) -> None:
    token, encrypted = seal(HOSTILE)
    assert all(s not in token for s in HOSTILE)
    assert unseal(token) == HOSTILE and unseal("") == [] and seal([]) == ("", True)
    assert encrypted
    with pytest.raises(ValueError, match="cannot decrypt"):
        unseal(token[:-8] + "AAAAAAA=")


def test_without_a_fernet_key_secrets_travel_plain_and_are_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.crypto import get_fernet

    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "")
    get_fernet.cache_clear()
    try:
        token, encrypted = seal(["hunter2-pw"])
        assert not encrypted and unseal(token) == ["hunter2-pw"]
    finally:
        get_fernet.cache_clear()


def test_trigger_kwargs_hold_the_secrets_encrypted_and_the_triggerer_masks_with_them(fernet_key: None) -> None:
    from airflow_ssh_async.triggers import SSHAsyncJobTrigger

    path, kwargs = SSHAsyncJobTrigger("conn", "job", secrets=HOSTILE).serialize()
    assert isinstance(kwargs["secrets"], str) and not [s for s in HOSTILE if s in repr(kwargs)]
    again = SSHAsyncJobTrigger(**kwargs)
    assert again.serialize() == (path, kwargs)  # a restarted triggerer serializes the same token
    masker, readable = again._masker()
    assert readable and masker.mask(f"x {HOSTILE[0]} {HOSTILE[4]}") == "x *** ***"


def test_a_trigger_that_cannot_decrypt_its_secrets_withholds_the_output(
    fernet_key: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.crypto import get_fernet
    from cryptography.fernet import Fernet

    from airflow_ssh_async.triggers import SSHAsyncJobTrigger

    _, kwargs = SSHAsyncJobTrigger("conn", "job", secrets=["hunter2-pw"]).serialize()
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())  # another triggerer's key
    get_fernet.cache_clear()
    masker, readable = SSHAsyncJobTrigger(**kwargs)._masker()
    assert not readable and not masker


def test_sensor_secrets_are_templated_and_reach_the_trigger_unrendered_for_start_from_trigger() -> None:
    from airflow_ssh_async.sensors import SSHAsyncJobSensor

    sensor = SSHAsyncJobSensor(
        task_id="watch", ssh_conn_id="c", job_id="j", start_from_trigger=True, secrets="{{ conn.db.password }}"
    )
    assert "secrets" in sensor.template_fields
    assert sensor.start_trigger_args.trigger_kwargs["secrets"] == ["{{ conn.db.password }}"]
