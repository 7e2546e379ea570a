"""The process's own keys, checked once at start and installed for the adapters that need them.

Four keys, each with its own setting and its own rotation (the current key first, then the ones it
replaced, which still verify or decrypt):

* ``link``  — signs customers' action links and web sessions (``NOTICEFLOW_SECRET_KEY``);
* ``codec`` — encrypts every Temporal payload (``NOTICEFLOW_CODEC_KEY``, noticeflow/codec.py);
* ``kek``   — wraps each customer's key in PostgreSQL (``NOTICEFLOW_KEY_ENCRYPTION_KEY``);
* ``signing`` — signs event-stream heads and evidence manifests (``NOTICEFLOW_SIGNING_KEY``): a key
  the database never sees, so a database owner who rewrites a stream cannot re-sign it.

There are no defaults: a missing, public, short or patterned key is refused, and so is one secret
set for two purposes (say the codec key reused as the key-encryption key), every problem at once,
in one readable block (:func:`problems`). ``noticeflow up`` makes its own keys in its data dir.

The codec, key-encryption and signing keys are used only as 32 bytes derived from them with
HKDF-SHA256 (:meth:`Keyring.material`), never as the strings set. The link keys are the exception:
the link signer (noticeflow/links.py, itsdangerous) takes the key strings themselves
(``Settings.verification_keys``, or ``Keyring.keys["link"]``), as links already mailed were signed
with them; the web's session key is derived from the current one. A short key id
(:meth:`Keyring.key_id`) names a key in metadata without revealing it.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from noticeflow.domain.errors import InputError

# 32 random bytes written as base64url (`secrets.token_urlsafe(32)`) are 43 characters.
MIN_KEY_CHARS = 43
MIN_DISTINCT = 16  # a random 43-character key has ~30 distinct characters; "x" * 50 has one
MIN_DISTINCT_HEX = 10  # 64 random hex digits: 12 or more of the 16 (16 only 3 times in 4)
# Random bytes written as text (base64, base64url or hex) use only these characters: a key with
# spaces or punctuation is a phrase someone typed, not 32 random bytes.
KEY_ALPHABET = frozenset(string.ascii_letters + string.digits + "-_+/=")
# "abcdef", "012345", "fedcba" (6 in a row) are typed, not drawn: 1 random base64url key in 10^7
# has such a run, 1 random hex key in ~20,000 (refused: make another).
MAX_RUN = 5
# Keys that were ever public (in this repository's history or docs): refused wherever they appear.
PUBLIC_KEYS = frozenset(
    {
        "dev-only-insecure-secret",
        # The test-only codec key of the recorded histories (tests/workflows/histories/).
        "dCd7Fm_S1An7AGcCmIk8dinYPDF2gcT9zipKcsW11UA",
    }
)
HOW_TO_MAKE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"

# purpose -> (setting of the current key, setting of the previous ones)
SETTINGS = {
    "link": ("secret_key", "previous_secret_keys"),
    "codec": ("codec_key", "previous_codec_keys"),
    "kek": ("key_encryption_key", "previous_key_encryption_keys"),
    "signing": ("signing_key", "previous_signing_keys"),
}
PURPOSES = tuple(SETTINGS)


def _plain(value: Any) -> str | None:
    """A setting's text, whether it is a str or a pydantic SecretStr."""
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if getter else value)


def key_problem(setting: str, value: str | None) -> str | None:
    """Why this key cannot be used, or None."""
    name = f"NOTICEFLOW_{setting.upper()}"
    if value is None or not value.strip():
        return f"{name} is not set: set it to a random secret ({HOW_TO_MAKE})"
    text = value.strip()
    if text in PUBLIC_KEYS:
        return f"{name} is a public development key: use a random secret ({HOW_TO_MAKE})"
    if len(text) < MIN_KEY_CHARS:
        return (
            f"{name} has {len(text)} characters: use a random secret of at least"
            f" {MIN_KEY_CHARS} (32 random bytes, e.g. {HOW_TO_MAKE})"
        )
    if not set(text) <= KEY_ALPHABET:
        return (
            f"{name} has characters that 32 random bytes written as text never have (only letters,"
            f" digits and - _ + / =): use {HOW_TO_MAKE}"
        )
    needed = MIN_DISTINCT_HEX if set(text) <= set(string.hexdigits) else MIN_DISTINCT
    if len(set(text)) < needed:
        return f"{name} is not random ({len(set(text))} distinct characters): {HOW_TO_MAKE}"
    period = _period(text)
    if period * 2 <= len(text):
        return f"{name} is not random (a block of {period} characters repeated): {HOW_TO_MAKE}"
    if _longest_run(text) > MAX_RUN:
        return (
            f"{name} is not random (a run of {MAX_RUN + 1} or more consecutive characters, in"
            f" alphabetical or numerical order, up or down): {HOW_TO_MAKE}"
        )
    return None


def _period(text: str) -> int:
    """The shortest p such that ``text`` is a block of p characters repeated (the last copy may
    be cut short); ``len(text)`` when there is none."""
    failure = [0] * len(text)  # Knuth-Morris-Pratt: the longest proper border of each prefix
    for i in range(1, len(text)):
        k = failure[i - 1]
        while k and text[i] != text[k]:
            k = failure[k - 1]
        failure[i] = k + 1 if text[i] == text[k] else 0
    return len(text) - failure[-1] if text else 0


def _longest_run(text: str) -> int:
    """The longest stretch of characters each one after (or each one before) the previous."""
    longest = 1 if text else 0
    for step in (1, -1):
        run = 1
        for before, after in pairwise(text):
            run = run + 1 if ord(after) - ord(before) == step else 1
            longest = max(longest, run)
    return longest


def derive(secret: str, purpose: str, length: int = 32) -> bytes:
    """32 bytes for one purpose from a key string (HKDF-SHA256; the purpose is the info)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=b"noticeflow/keyring/v1",
        info=purpose.encode(),
    ).derive(secret.strip().encode())  # fmt: skip


@dataclass(frozen=True)
class Keyring:
    """Each purpose's keys, the current first. Build with :func:`from_settings`."""

    keys: dict[str, tuple[str, ...]]

    def material(self, purpose: str, use: str = "") -> list[bytes]:
        """32-byte keys for ``purpose`` (and a sub-use, e.g. ``"wrap"``), the current first."""
        return [derive(k, f"{purpose}/{use}") for k in self.keys[purpose]]

    def current(self, purpose: str, use: str = "") -> bytes:
        return self.material(purpose, use)[0]

    @staticmethod
    def key_id(material: bytes) -> str:
        """A short public name for a key (metadata, manifests): reveals nothing of the key."""
        return hashlib.sha256(b"noticeflow/key-id\x1f" + material).hexdigest()[:16]

    def by_id(self, purpose: str, key_id: str, use: str = "") -> bytes | None:
        for material in self.material(purpose, use):
            if self.key_id(material) == key_id:
                return material
        return None


def problems(settings: Any, purposes: Iterable[str] = PURPOSES) -> list[str]:
    """Every problem with the keys these purposes need, in one list (empty: all good)."""
    wanted = tuple(purposes)
    found = []
    for purpose in wanted:
        current, previous = SETTINGS[purpose]
        problem = key_problem(current, _plain(getattr(settings, current, None)))
        if problem:
            found.append(problem)
        for old in getattr(settings, previous, None) or []:
            problem = key_problem(previous, _plain(old))
            if problem:
                found.append(problem.replace(" is not set", " has an empty entry"))
                break
    return found + _reused(settings, wanted)


def _reused(settings: Any, wanted: tuple[str, ...]) -> list[str]:
    """One line for each secret set for two purposes (current or previous) where one of them is
    wanted: a key serves one purpose, so that one leaked or rotated key never reaches another."""
    seen: dict[str, tuple[str, str]] = {}  # secret -> (purpose, the setting that holds it)
    found = []
    for purpose, (current, previous) in SETTINGS.items():
        values = [(current, getattr(settings, current, None))]
        values += [(previous, old) for old in getattr(settings, previous, None) or []]
        for setting, value in values:
            text = (_plain(value) or "").strip()
            if not text:
                continue
            first = seen.setdefault(text, (purpose, setting))
            if first[0] != purpose and (first[0] in wanted or purpose in wanted):
                found.append(
                    f"NOTICEFLOW_{first[1].upper()} and NOTICEFLOW_{setting.upper()} are the same"
                    f" secret: each key needs its own random value ({HOW_TO_MAKE})"
                )
    return list(dict.fromkeys(found))


def from_settings(settings: Any, purposes: Iterable[str] = PURPOSES) -> Keyring:
    """The keyring, or an InputError naming every problem at once."""
    wanted = tuple(purposes)
    found = problems(settings, wanted)
    if found:
        raise InputError("refusing to start without real keys:\n  - " + "\n  - ".join(found))
    keys: dict[str, tuple[str, ...]] = {}
    for purpose in wanted:
        current, previous = SETTINGS[purpose]
        first = _plain(getattr(settings, current)) or ""
        rest = [_plain(k) or "" for k in getattr(settings, previous, None) or []]
        keys[purpose] = tuple(dict.fromkeys([first.strip(), *(k.strip() for k in rest)]))
    return Keyring(keys)


_installed: Keyring | None = None


def install(keyring: Keyring) -> Keyring:
    """Make ``keyring`` the process's keys (entry points call this once, at start)."""
    global _installed
    _installed = keyring
    return keyring


def installed() -> Keyring:
    if _installed is None:
        raise RuntimeError("no keys installed: the entry point must call keyring.install() first")
    return _installed


def has(purpose: str) -> bool:
    return _installed is not None and purpose in _installed.keys
