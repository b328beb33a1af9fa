"""Secrets out of the job's output: pure masking, and where the secrets come from.

Airflow masks a task's log in the worker, where its templates were rendered
and its secrets registered (``mask_secret``, connections, sensitive
variables). This provider writes the job's output from other places too (the
triggerer, a sensor's poke, the result dict), so it carries the task's
secrets along and masks every line and result itself, with the same rules.

Output arrives in reads at arbitrary offsets: :class:`StreamMasker` holds
back only a tail that could still become a secret, so a secret split across
reads (or across the pieces of a long line) is masked as if it had come in
one piece, and a line that cannot be a secret's start is never delayed.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow_ssh_async.line_log import LineLog

MASK = "***"
# The task_state_store key where the operator keeps its task's secrets, sealed
# (operators.py), for the Remote jobs view to mask with (ui/sources.py).
SECRETS_KEY = "ssh_async_secrets"
# Airflow's own default ([logging] min_length_masked_secret): shorter values
# would mask every common word.
DEFAULT_MIN_LENGTH = 5
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)
_SHORT = 64


def _trie(words: list[str]) -> str:
    """A regex matching the longest of WORDS (sorted, unique) at a position, as a prefix tree.

    A plain alternation tries every secret at every position (100 secrets:
    100 attempts per character); the tree tries one branch per character.
    """
    end = words[0] == ""
    branches = []
    for _, group in itertools.groupby(words[1:] if end else words, key=lambda w: w[0]):
        members = list(group)
        prefix = os.path.commonprefix(members)
        rest = [w[len(prefix) :] for w in members]
        branches.append(re.escape(prefix) + (f"(?:{_trie(rest)})" if rest != [""] else ""))
    body = "|".join(branches)
    return f"(?:{body})?" if end else body


def _compile(secrets: Iterable[str]) -> re.Pattern[str]:
    try:
        return re.compile(_trie(sorted(secrets)))
    except (RecursionError, re.error, OverflowError):  # nesting too deep for re: the plain way
        return re.compile("|".join(map(re.escape, sorted(secrets, key=lambda s: (-len(s), s)))))


def _failure(x: str) -> list[int]:
    """KMP failure function: fail[i] = the longest proper border of x[: i + 1]."""
    fail = [0] * len(x)
    k = 0
    for i in range(1, len(x)):
        while k and x[i] != x[k]:
            k = fail[k - 1]
        if x[i] == x[k]:
            k += 1
        fail[i] = k
    return fail


def _overlap(x: str, fail: list[int], y: str) -> int:
    """Length of the longest prefix of X that is a suffix of Y."""
    k = 0
    for c in y:
        while k and (k == len(x) or c != x[k]):
            k = fail[k - 1]
        if k < len(x) and c == x[k]:
            k += 1
    return k


class Masker:
    """Replaces every secret in a text by ``***``; immutable, shared by a job's streams.

    Longest secrets are tried first, so a secret that contains a shorter
    one is masked whole (Airflow's own masker leaves that order to a set).
    """

    def __init__(self, secrets: Iterable[str] = (), min_length: int = DEFAULT_MIN_LENGTH) -> None:
        kept = {s for s in secrets if isinstance(s, str) and len(s) >= max(1, min_length)}
        self.secrets: tuple[str, ...] = tuple(sorted(kept, key=lambda s: (-len(s), s)))
        self.longest = len(self.secrets[0]) if self.secrets else 0
        self._re = _compile(self.secrets) if self.secrets else None
        # Short secrets are checked position by position; long ones (a PEM
        # key, a JSON extra) with KMP, which stays linear in their length.
        short = [s for s in self.secrets if len(s) <= _SHORT]
        self._short_longest = max(map(len, short), default=0)
        self._long = [(s, _failure(s)) for s in self.secrets if len(s) > _SHORT]
        starts: dict[str, list[str]] = {}
        ends: dict[str, list[str]] = {}
        for s in short:
            starts.setdefault(s[0], []).append(s)
            ends.setdefault(s[-1], []).append(s)
        self._starting = starts
        self._ending = ends

    def __bool__(self) -> bool:
        return self._re is not None

    @property
    def overlap_bytes(self) -> int:
        """How many bytes before a cut can belong to a secret that crosses it."""
        return max((len(s.encode()) for s in self.secrets), default=1) - 1

    def mask(self, text: str) -> str:
        return self._re.sub(MASK, text) if self._re is not None else text

    def redact(self, value: Any) -> Any:
        """``value`` with every string in it masked (dicts, lists and tuples walked)."""
        if self._re is None:
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, Mapping):
            return {k: self.redact(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.redact(v) for v in value)
        return value

    def held_from(self, text: str, start: int = 0) -> int:
        """Where the longest tail of TEXT (from START on) that is a secret's proper prefix begins.

        len(text) when there is none. That tail may become a secret when
        more output comes, so it is not written yet.
        """
        best = len(text)
        for i in range(max(start, len(text) - self._short_longest + 1), len(text)):
            rest = text[i:]
            if any(len(s) > len(rest) and s.startswith(rest) for s in self._starting.get(text[i], ())):
                best = i
                break
        for s, fail in self._long:
            k = _overlap(s, fail, text[max(start, len(text) - len(s) + 1) :])
            best = min(best, len(text) - k)
        return best

    def cut_lead(self, text: str) -> int:
        """The end of the longest head of TEXT that is a secret's proper suffix (0: none).

        Text read from the middle of a stream may begin inside a secret.
        """
        best = 0
        for end in range(min(len(text), self._short_longest - 1), 0, -1):
            head = text[:end]
            if any(len(s) > end and s.endswith(head) for s in self._ending.get(text[end - 1], ())):
                best = end
                break
        for s, _ in self._long:
            head = text[: len(s) - 1]
            best = max(best, _overlap(head, _failure(head), s[1:]))
        return best

    def stream(self, mid_stream: bool = False) -> StreamMasker:
        return StreamMasker(self, mid_stream)

    def text(self, data: str, mid_stream: bool = False) -> str:
        """All of one read masked at once (a tail read at the end of a finished job)."""
        s = self.stream(mid_stream)
        return s.feed(data) + s.finish()


class StreamMasker:
    """Masks text that arrives in pieces: the concatenated output equals masking it whole.

    ``mid_stream``: the first piece was read from inside the stream, so a
    secret's cut-off end at its start is masked too.
    """

    def __init__(self, masker: Masker, mid_stream: bool = False) -> None:
        self.masker = masker
        self._carry = ""
        self._lead = mid_stream and bool(masker)

    def feed(self, text: str) -> str:
        m = self.masker
        if m._re is None:
            return text
        buf = self._carry + text
        if self._lead:
            if len(buf) < m.longest - 1:  # could still be the end of a longer secret
                self._carry = buf
                return ""
            buf = self._masked_lead(buf)
        held = m.held_from(buf)
        out: list[str] = []
        pos = 0
        for match in m._re.finditer(buf):
            start, end = match.span()
            if start >= held:
                break
            out += (buf[pos:start], MASK)
            pos = end
            if end > held:  # never cut a whole secret: write it, look for a new tail after it
                held = m.held_from(buf, end)
        out.append(buf[pos:held])
        self._carry = buf[held:]
        return "".join(out)

    def finish(self) -> str:
        buf, self._carry = self._carry, ""
        if self._lead:
            buf = self._masked_lead(buf)
        return self.masker.mask(buf)

    def _masked_lead(self, buf: str) -> str:
        self._lead = False
        end = self.masker.cut_lead(buf)
        return MASK + buf[end:] if end else buf


# --- where the secrets come from (Airflow, in the worker) ------------------------------


def airflow_min_length() -> int:
    """Airflow's [logging] min_length_masked_secret as its masker in this process applies it."""
    try:
        from airflow.sdk._shared.secrets_masker import _secrets_masker
    except ImportError:  # pragma: no cover - Airflow < 3.3 is not supported
        return DEFAULT_MIN_LENGTH
    return int(getattr(_secrets_masker(), "min_length_to_mask", DEFAULT_MIN_LENGTH))


def task_secrets(environment: Mapping[str, Any] | None = None, extra: Sequence[str] = ()) -> list[str]:
    """Every value Airflow masks in this task's log, plus the job's sensitive environment.

    Called in the worker after rendering: Airflow's masker there holds what
    this task registered (connections it read, including those rendered
    into command, environment or cwd, variables with sensitive names,
    ``mask_secret`` values). Environment values whose names Airflow deems
    sensitive (``[core] sensitive_var_conn_names``) and EXTRA values are
    registered with Airflow first, so the worker's own log masks them too.
    A JSON object among the secrets (a connection's extra) also yields its
    values under sensitive keys, which Airflow masks only as one string.
    """
    from airflow.sdk._shared.secrets_masker import _secrets_masker
    from airflow.sdk.log import mask_secret

    for name, value in (environment or {}).items():
        if value is not None and str(value):
            mask_secret(str(value), str(name))
    for value in extra:
        if value:
            mask_secret(str(value))
    masker = _secrets_masker()
    found = {_UNESCAPE.sub(r"\1", p) for p in set(masker.patterns)}
    for secret in list(found):
        if secret.startswith("{"):
            try:
                obj = json.loads(secret)
            except ValueError:
                continue
            if isinstance(obj, dict):
                mask_secret(obj)
    found |= {_UNESCAPE.sub(r"\1", p) for p in set(masker.patterns)}
    return sorted(found)


def _fernet() -> Any:
    """Airflow's Fernet from ``[core] fernet_key``, or None when there is no usable key."""
    from airflow.sdk.crypto import get_fernet

    try:
        fernet = get_fernet()
    except Exception:  # the Task SDK reads an unset key as its "{FERNET_KEY}" placeholder
        return None
    return fernet if fernet.is_encrypted else None


def seal(secrets: Sequence[str]) -> tuple[str, bool]:
    """SECRETS as a token for trigger kwargs, encrypted with Airflow's Fernet key.

    Airflow 3.3 stores a deferral's trigger kwargs as given (plain JSON in
    the trigger table), so the secrets are encrypted here, as the Task SDK's
    own serializers do with credentials. Returns (token, encrypted): without
    a usable ``[core] fernet_key`` the token is plain JSON, as Airflow then
    stores connections and variables too.
    """
    if not secrets:
        return "", True
    data = json.dumps(list(secrets))
    fernet = _fernet()
    if fernet is None:
        return data, False
    return fernet.encrypt(data.encode()).decode(), True


def unseal(token: str) -> list[str]:
    """The secrets a :func:`seal` token holds.

    :raises ValueError: the token cannot be read with this process's Fernet
        key (the worker and the triggerer do not share ``[core] fernet_key``).
    """
    if not token:
        return []
    try:
        if token.startswith("["):  # sealed without a key
            values = json.loads(token)
        else:
            fernet = _fernet()
            if fernet is None:
                raise ValueError("this process has no [core] fernet_key")
            values = json.loads(fernet.decrypt(token.encode()))
    except ValueError as exc:
        raise ValueError(f"cannot decrypt: {exc}") from None
    except Exception as exc:
        raise ValueError(f"cannot decrypt ({type(exc).__name__})") from None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("not a list of strings")
    return values


def seal_for(owner: str, secrets: Sequence[str]) -> str | None:
    """SECRETS and the task instance they belong to (OWNER, an ``origin``), encrypted as one
    token with Airflow's Fernet key; None without a usable key (never sealed in clear).

    For the task_state_store, which editors of the task instance may write: a
    token copied there from another task is refused by :func:`unseal_for`.
    """
    fernet = _fernet()
    if fernet is None:
        return None
    return str(fernet.encrypt(json.dumps({"for": owner, "secrets": list(secrets)}).encode()).decode())


def unseal_for(owner: str, token: object) -> list[str]:
    """The secrets of a :func:`seal_for` token made for OWNER.

    :raises ValueError: not such a token (not encrypted with this process's
        Fernet key, or written there by hand), or sealed for another task.
    """
    fernet = _fernet()
    if fernet is None or not isinstance(token, str):
        raise ValueError("no [core] fernet_key here, or not a token")
    try:
        found = json.loads(fernet.decrypt(token.encode()))
    except Exception as exc:
        raise ValueError(f"cannot decrypt ({type(exc).__name__})") from None
    values = found.get("secrets") if isinstance(found, dict) else None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("not a token of secrets")
    if found.get("for") != owner:
        raise ValueError("sealed for another task instance")
    return values


def can_seal() -> bool:
    """Whether this process has a usable ``[core] fernet_key``."""
    return _fernet() is not None


class MaskedLog(LineLog):
    """A logger whose every line passes through a :class:`Masker` (messages are formatted first)."""

    def __init__(self, log: Any, masker: Masker) -> None:
        super().__init__(log)
        self._masker = masker

    def _line(self, msg: object, args: tuple[Any, ...]) -> str:
        return self._masker.mask(super()._line(msg, args))


def masked_log(log: Any, masker: Masker) -> Any:
    """LOG itself when there is nothing to mask, else a :class:`MaskedLog` around it."""
    return MaskedLog(log, masker) if masker else log
