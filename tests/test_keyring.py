"""The process's keys: one secret serves one purpose. The same secret set for two of them (codec and
key-encryption, a previous link key reused as the signing key, ...) is refused, one line naming the
two settings and never the secret."""

from __future__ import annotations

import secrets
from types import SimpleNamespace
from typing import Any

import pytest

from noticeflow import keyring
from noticeflow.domain.errors import InputError


def keys(**overrides: Any) -> SimpleNamespace:
    """Four distinct random keys (and no previous ones), with ``overrides``."""
    settings: dict[str, Any] = {}
    for current, previous in keyring.SETTINGS.values():
        settings[current] = secrets.token_urlsafe(32)
        settings[previous] = []
    return SimpleNamespace(**{**settings, **overrides})


def test_distinct_keys_pass() -> None:
    assert keyring.problems(keys()) == []


def test_one_secret_for_two_purposes_is_refused_naming_both_settings() -> None:
    shared = secrets.token_urlsafe(32)
    found = keyring.problems(keys(codec_key=shared, key_encryption_key=shared))
    assert found == [
        "NOTICEFLOW_CODEC_KEY and NOTICEFLOW_KEY_ENCRYPTION_KEY are the same secret: each key"
        f" needs its own random value ({keyring.HOW_TO_MAKE})"
    ]
    assert shared not in found[0]
    with pytest.raises(InputError) as refused:
        keyring.from_settings(keys(codec_key=shared, key_encryption_key=shared))
    assert "NOTICEFLOW_CODEC_KEY and NOTICEFLOW_KEY_ENCRYPTION_KEY" in str(refused.value)
    assert shared not in str(refused.value)


def test_a_previous_key_reused_for_another_purpose_is_refused_too() -> None:
    old_link = secrets.token_urlsafe(32)
    found = keyring.problems(keys(previous_secret_keys=[old_link], signing_key=f" {old_link}\n"))
    assert len(found) == 1
    assert found[0].startswith(
        "NOTICEFLOW_PREVIOUS_SECRET_KEYS and NOTICEFLOW_SIGNING_KEY are the same secret"
    )


def test_three_purposes_sharing_one_secret_get_a_line_each_pair_with_the_first() -> None:
    shared = secrets.token_urlsafe(32)
    found = keyring.problems(keys(secret_key=shared, codec_key=shared, signing_key=shared))
    assert [line.split(" are ")[0] for line in found] == [
        "NOTICEFLOW_SECRET_KEY and NOTICEFLOW_CODEC_KEY",
        "NOTICEFLOW_SECRET_KEY and NOTICEFLOW_SIGNING_KEY",
    ]


def test_the_same_key_current_and_previous_for_one_purpose_is_fine() -> None:
    same = secrets.token_urlsafe(32)
    assert keyring.problems(keys(codec_key=same, previous_codec_keys=[same])) == []


def test_only_pairs_touching_the_purposes_asked_for_count() -> None:
    shared = secrets.token_urlsafe(32)
    settings = keys(secret_key=shared, codec_key=shared)
    assert keyring.problems(settings, ["signing"]) == []  # neither is this process's business
    assert len(keyring.problems(settings, ["codec"])) == 1


def test_a_bad_key_shared_by_two_is_named_for_each_problem() -> None:
    settings = keys(codec_key="short", key_encryption_key="short")
    found = keyring.problems(settings)
    assert sum("has 5 characters" in line for line in found) == 2
    assert sum("are the same secret" in line for line in found) == 1
