"""Client private keys, loaded without holding the event loop's process for long.

Loading an RSA private key makes cryptography check it (that p and q are
prime): 0.6 to 0.9 s of CPU for a 3072-bit key, with the GIL held, so even
in a thread it stops the triggerer's event loop for that long (the cold
connect of bench/loop_lag.py). Here the key is loaded with that check
skipped and the same check runs in a child process, which holds no lock of
ours; the key is handed out only once the child has found it valid, so a
damaged or hostile key is refused as before, only elsewhere.
"""

from __future__ import annotations

import subprocess
import sys

import asyncssh

# The child: cryptography's own load, which validates an RSA key (the check skipped here).
_CHECK = (
    "import sys\n"
    "from cryptography.hazmat.primitives.serialization import load_ssh_private_key\n"
    "load_ssh_private_key(sys.stdin.buffer.read(), None)\n"
)
CHECK_TIMEOUT = 60.0


def _is_rsa(key: asyncssh.SSHKey | asyncssh.SSHKeyPair) -> bool:
    return key.get_algorithm().startswith("ssh-rsa")  # a certificate's too: ssh-rsa-cert-v01@openssh.com


def _check_rsa(key: asyncssh.SSHKey) -> None:
    """Run cryptography's check of KEY in a child process.

    :raises asyncssh.KeyImportError: the key failed it.
    """
    # Unencrypted, on the child's stdin (a pipe of ours, never argv or a file).
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", _CHECK],
            input=key.export_private_key("openssh"),
            capture_output=True,
            timeout=CHECK_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise asyncssh.KeyImportError(f"the check of an RSA private key took over {CHECK_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no reason given"]
        raise asyncssh.KeyImportError(f"invalid RSA private key: {why[0]}")


def import_key(data: str, passphrase: str | None) -> list[asyncssh.SSHKey]:
    """The ``private_key`` extra, decrypted and checked (call it in a thread)."""
    key = asyncssh.import_private_key(data, passphrase, unsafe_skip_rsa_key_validation=True)
    if _is_rsa(key):
        _check_rsa(key)
    return [key]


def load_key_file(path: str, passphrase: str | None) -> list[asyncssh.SSHKeyPair]:
    """The ``key_file`` extra (with its -cert.pub), decrypted and checked (call it in a thread)."""
    pairs = list(asyncssh.load_keypairs([path], passphrase, unsafe_skip_rsa_key_validation=True))
    if any(_is_rsa(pair) for pair in pairs):
        _check_rsa(asyncssh.read_private_key(path, passphrase, unsafe_skip_rsa_key_validation=True))
    return pairs
