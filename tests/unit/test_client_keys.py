"""Client keys: an RSA key is checked in a child process before it is used (client_keys.py)."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from airflow_ssh_async.client_keys import import_key, load_key_file

OPENSSH = serialization.PrivateFormat.OpenSSH


def pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, passphrase: bytes | None = None) -> str:
    crypt = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, OPENSSH, crypt).decode()


def damaged_rsa() -> rsa.RSAPrivateKey:
    """A 2048-bit key whose CRT coefficient is wrong: it signs garbage, and cryptography's check says so."""
    good = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    bad = rsa.RSAPrivateNumbers(good.p, good.q, good.d, good.dmp1, good.dmq1, good.iqmp + 2, good.public_numbers)
    return bad.private_key(unsafe_skip_rsa_key_validation=True)


def test_a_valid_rsa_key_is_loaded_and_usable() -> None:
    data = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048), b"pass")
    [key] = import_key(data, "pass")
    assert key.get_algorithm() == "ssh-rsa"
    assert key.convert_to_public().verify(b"x", key.sign(b"x", b"rsa-sha2-256"))


def test_a_damaged_rsa_key_is_refused_as_cryptography_would() -> None:
    data = pem(damaged_rsa())
    # Loaded with the check skipped, it would be accepted: the child's check is what refuses it.
    assert asyncssh.import_private_key(data, unsafe_skip_rsa_key_validation=True).get_algorithm() == "ssh-rsa"
    with pytest.raises(asyncssh.KeyImportError, match="invalid RSA private key"):
        import_key(data, None)


def test_a_damaged_rsa_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "id_rsa"
    path.write_text(pem(damaged_rsa(), b"pass"))
    with pytest.raises(asyncssh.KeyImportError, match="invalid RSA private key"):
        load_key_file(str(path), "pass")


def test_an_ed25519_key_needs_no_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("no child process for a key that is not RSA")

    monkeypatch.setattr(subprocess, "run", no_child)
    path = tmp_path / "id_ed25519"
    path.write_text(pem(ed25519.Ed25519PrivateKey.generate()))
    [pair] = load_key_file(str(path), None)
    assert pair.get_algorithm() == "ssh-ed25519"
    assert import_key(path.read_text(), None)[0].get_algorithm() == "ssh-ed25519"
