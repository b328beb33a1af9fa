"""lib.sh's JSON string encoder, run under each shell and each awk (or none).

job.json holds strings a user or a host controls (cwd, origin, job_dir,
user, host): whatever their bytes, the file must parse with Python's json and
give the value back (os.fsdecode: a byte that is not UTF-8 is a surrogate).
The encoder uses shell builtins only; the PATH holds nothing but the awk
under test, so an encoder that called awk (or anything else) would show it.
gawk is left out on purpose: installing it makes it the host's `awk` for
every other test, which must see Debian's default, mawk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from airflow_ssh_async.client import script

pytestmark = pytest.mark.timeout(120)

SHELLS = {"dash": ["dash"], "bash": ["bash", "--posix"], "busybox": ["busybox", "sh"]}
# Each awk the host may have first on its PATH, and none at all.
AWKS = {"mawk": ["mawk"], "busybox-awk": ["busybox", "awk"], "no-awk": []}

HOSTILE = [
    b"/home/u/a\\qb",
    b'say "hi"',
    b"\\",
    b'\\"',
    b"trailing\\",
    bytes(range(1, 32)) + b"\x7f",
    b"line\n",
    b"\n\n",
    b"a\r\nb\tc\x08d\x0ce",
    b"%s %d %b \\c -n -e",
    b"$(touch /tmp/x) `id` *",
    "données/中文/😀/\u2028/\uffff/\U0010ffff".encode(),
    b"\x80",
    b"\xff\xfe",
    b"\xc0\xaf",  # overlong '/'
    b"\xed\xa0\x80",  # a UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\xe2\x82",  # cut short at the end
    b"\xe2\x82A\xe2\x82\xac",  # cut short, then whole
    b"\xc3",
    bytes(range(1, 256)) * 16,  # huge and every byte
]


@pytest.fixture(params=sorted(AWKS))
def awk_path(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A PATH whose only entry holds `awk` as the awk under test, or nothing."""
    argv = AWKS[request.param]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    if argv:
        found = shutil.which(argv[0])
        assert found, f"{argv[0]} must be installed (dev/setup.sh installs it)"
        (bindir / "awk").symlink_to(found)  # busybox picks its applet by this name
    return str(bindir)


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_json_strings_parse_back_to_the_same_bytes_under_each_shell_and_awk(shell: str, awk_path: str) -> None:
    argv = SHELLS[shell]
    exe = shutil.which(argv[0])
    assert exe, f"{argv[0]} must be installed"
    program = script("lib") + b'\njson_str_v "$1"; printf %s "$_js"\n'
    for value in HOSTILE:
        started = time.monotonic()
        done = subprocess.run(
            [exe, *argv[1:], "-c", program, "json", value],
            capture_output=True,
            env={"PATH": awk_path, "LANG": "C.UTF-8"},
            timeout=60,
        )
        assert done.returncode == 0, (value[:60], done.stderr)
        decoded = json.loads(done.stdout)  # bytes: strict UTF-8, no raw control characters
        assert decoded == os.fsdecode(value), value[:60]
        assert os.fsencode(decoded) == value
        assert time.monotonic() - started < 30, f"{len(value)} bytes took too long"
