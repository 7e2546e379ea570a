"""Signed action links: they verify for exactly what they were made for, and nothing else."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from noticeflow.config import Settings
from noticeflow.links import ActionLink, InvalidLink, LinkAction, LinkSigner, fingerprint

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


def flip(token: str, at: int) -> str:
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]


@pytest.mark.parametrize(
    ("mangle", "kind"),
    [
        (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), "forged"),  # signature
        (lambda t: flip(t, 3), "forged"),  # one character of the payload
        (lambda t: LinkSigner("secret-two", "x").token(LINK), "forged"),  # another key
        (lambda t: other_payload(t), "forged"),  # payload altered, signature kept
        (lambda t: t.split(".")[0], "malformed"),  # cut short: no signature at all
        (lambda t: "not-a-token", "malformed"),
        (lambda t: "", "malformed"),
        (lambda t: t + "/../x", "malformed"),
        (lambda t: t + "A" * 1000, "malformed"),  # far too long to be ours
    ],
)
def test_forged_or_tampered_tokens_are_refused(mangle, kind):
    with pytest.raises(InvalidLink) as refused:
        SIGNER.verify(mangle(SIGNER.token(LINK)), NOW)
    assert refused.value.kind == kind
    with pytest.raises(InvalidLink):
        SIGNER.read(mangle(SIGNER.token(LINK)))


def test_a_well_signed_token_with_the_wrong_content_is_malformed():
    from itsdangerous import URLSafeSerializer

    from noticeflow.links import SALT

    ours = URLSafeSerializer(["secret-one"], salt=SALT)
    for payload in (["n-1", "acme", "delete_everything", 1], ["n-1", "acme"], {"a": 1},
                    ["n-1", 7, "object", 1], ["n-1", "acme", "object", "soon"],
                    ["n-1", "acme", "object", 10**30]):  # fmt: skip
        with pytest.raises(InvalidLink) as refused:
            SIGNER.read(str(ours.dumps(payload)))
        assert refused.value.kind == "malformed", payload


def test_an_expired_token_is_refused_by_verify_but_still_readable():
    token = SIGNER.token(LINK)
    assert SIGNER.verify(token, LINK.expires_at - timedelta(seconds=1)) == LINK
    with pytest.raises(InvalidLink, match="expired") as refused:
        SIGNER.verify(token, LINK.expires_at)
    assert refused.value.kind == "expired"
    # The action page decides what stays open after expiry (revoking an opt-in does).
    assert SIGNER.read(token) == LINK and LINK.expired(LINK.expires_at)


def test_a_customer_gets_one_link_per_action_valid_past_its_deadline():
    deadline = NOW + timedelta(days=21)
    links = SIGNER.links_for("n-1", "acme", deadline, NOW + timedelta(days=22))
    assert set(links) == {"object_url", "opt_in_url"}
    opened = SIGNER.verify(links["object_url"].rsplit("/", 1)[1], deadline + timedelta(days=5))
    assert (opened.customer_id, opened.action) == ("acme", LinkAction.object)


def test_rotation_the_first_key_signs_and_every_listed_key_verifies():
    old = LinkSigner("key-2025", "https://n.example")
    mailed = old.token(LINK)
    rotated = LinkSigner(["key-2026", "key-2025"], "https://n.example")
    assert rotated.verify(mailed, NOW) == LINK  # a link mailed before the rotation still works
    fresh = rotated.token(LINK)
    assert fresh != mailed
    assert LinkSigner("key-2026", "x").verify(fresh, NOW) == LINK  # signed with the new key
    with pytest.raises(InvalidLink):
        old.verify(fresh, NOW)  # ... which the old signer does not know
    # Once the old key is dropped from the list, its links stop working.
    with pytest.raises(InvalidLink) as refused:
        LinkSigner(["key-2026"], "x").verify(mailed, NOW)
    assert refused.value.kind == "forged"
    # A key never listed verifies nothing.
    with pytest.raises(InvalidLink):
        rotated.verify(LinkSigner("someone-elses", "x").token(LINK), NOW)


def test_settings_list_the_current_key_first_then_the_previous_ones():
    settings = Settings(secret_key="key-2026", previous_secret_keys="key-2025, key-2024,key-2026")
    assert settings.verification_keys == ["key-2026", "key-2025", "key-2024"]
    signer = LinkSigner(settings.verification_keys, "https://n.example")
    assert signer.verify(LinkSigner("key-2024", "x").token(LINK), NOW) == LINK
    assert LinkSigner("key-2026", "x").verify(signer.token(LINK), NOW) == LINK


@pytest.mark.parametrize("keys", ["", [], [""], ["good", ""], ["good", "   "]])
def test_an_empty_key_is_refused(keys):
    with pytest.raises(ValueError, match="must not be empty"):
        LinkSigner(keys, "https://n.example")


def test_a_fingerprint_names_a_token_without_revealing_it():
    token = SIGNER.token(LINK)
    assert len(fingerprint(token)) == 12 and fingerprint(token) not in token
    assert fingerprint(token) == fingerprint(token) != fingerprint(flip(token, 3))


def test_one_link_has_one_spelling():
    """The last base64 character of a part has unused low bits: a twin spelling verifies under
    itsdangerous alone; here it is refused, so one link has one rate-limit key and fingerprint."""
    import string

    from noticeflow.links import ActionLink, InvalidLink, LinkAction, LinkSigner

    signer = LinkSigner("k" * 32, "https://x.example")
    token = signer.token(
        ActionLink("n1", "acme", LinkAction.object, datetime(2030, 1, 1, tzinfo=UTC))
    )
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    last = token[-1]
    twins = [
        c for c in alphabet if c != last and alphabet.index(c) >> 2 == alphabet.index(last) >> 2
    ]
    assert twins, "the signature's last character has spare bits"
    for twin in twins:
        with pytest.raises(InvalidLink) as refused:
            signer.read(token[:-1] + twin)
        assert refused.value.kind == "malformed"
    assert signer.read(token).customer_id == "acme"


def test_tokens_are_itsdangerous_tokens_never_compressed_and_old_compressed_ones_still_open():
    """The signer signs as itsdangerous does (same token where itsdangerous did not compress),
    but never compresses: a compressed payload starts the token with "." (read used to refuse
    those, so some customers' links did not open). Tokens mailed compressed still open."""
    from itsdangerous import URLSafeSerializer

    from noticeflow.links import SALT

    theirs = URLSafeSerializer(["secret-one"], salt=SALT)
    compressed = 0
    for customer_id in ("acme", "c000123", "a" * 12, "x" * 30):  # the last two compress
        link = ActionLink("n-1", customer_id, LinkAction.object, LINK.expires_at)
        payload = [link.notice_id, link.customer_id, link.action.value,
                   int(link.expires_at.timestamp())]  # fmt: skip
        old = str(theirs.dumps(payload))
        ours = SIGNER.token(link)
        assert not ours.startswith(".")
        assert SIGNER.verify(ours, NOW) == link
        if old.startswith("."):
            compressed += 1
            assert SIGNER.verify(old, NOW) == link  # a link already mailed keeps working
        else:
            assert ours == old
    assert compressed == 2  # both cases are exercised
    with pytest.raises(InvalidLink) as refused:
        SIGNER.read("." + SIGNER.token(LINK)[:-2] + "AA")
    assert refused.value.kind == "forged"
