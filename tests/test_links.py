"""Signed action links: they verify for exactly what they were made for, and nothing else."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from noticeflow.links import ActionLink, InvalidLink, LinkAction, LinkSigner

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
LINK = ActionLink("n-1", "acme", LinkAction.object, NOW + timedelta(days=30))
SIGNER = LinkSigner("secret-one", "https://notices.vendor.example/")


def test_a_token_verifies_to_what_it_was_made_for_and_is_deterministic():
    token = SIGNER.token(LINK)
    assert SIGNER.verify(token, NOW) == LINK
    assert SIGNER.token(LINK) == token
    assert SIGNER.url(LINK) == f"https://notices.vendor.example/a/{token}"


def other_payload(token: str) -> str:
    payload, signature = token.rsplit(".", 1)
    data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).replace(b"acme", b"acmf")
    assert b"acmf" in data
    return base64.urlsafe_b64encode(data).decode().rstrip("=") + "." + signature


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature altered
        lambda t: LinkSigner("secret-two", "x").token(LINK),  # signed with another key
        lambda t: other_payload(t),  # payload altered, signature kept
        lambda t: "not-a-token",
        lambda t: "",
    ],
)
def test_forged_or_tampered_tokens_are_refused(mangle):
    with pytest.raises(InvalidLink):
        SIGNER.verify(mangle(SIGNER.token(LINK)), NOW)


def test_an_expired_token_is_refused():
    token = SIGNER.token(LINK)
    assert SIGNER.verify(token, LINK.expires_at - timedelta(seconds=1)) == LINK
    with pytest.raises(InvalidLink, match="expired"):
        SIGNER.verify(token, LINK.expires_at)


def test_a_customer_gets_one_link_per_action_valid_past_its_deadline():
    deadline = NOW + timedelta(days=21)
    links = SIGNER.links_for("n-1", "acme", deadline, NOW + timedelta(days=22))
    assert set(links) == {"object_url", "opt_in_url"}
    opened = SIGNER.verify(links["object_url"].rsplit("/", 1)[1], deadline + timedelta(days=5))
    assert (opened.customer_id, opened.action) == ("acme", LinkAction.object)
