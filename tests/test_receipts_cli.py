"""`noticeflow receipts verify`, run as a customer or an auditor runs it (a subprocess), on receipts
signed with the test session's signing key (tests/conftest.py puts it in the environment): valid,
altered, signed by an unknown key, not a receipt; the installed keys, a saved JWK Set, a rotation.
The web's download of a real receipt is in tests/web/test_receipts.py."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from noticeflow import eventstore, keyring, receipts
from noticeflow.intake import Receipt

SIGNING = "NOTICEFLOW_SIGNING_KEY"


def receipt(status: str = "accepted", reason: str | None = None) -> Receipt:
    return Receipt(
        receipt_id="r-0123456789abcdef0123",
        notice_id="openai-test",
        action="object",
        customer_id="acme",
        channel="link",
        received_at=datetime(2026, 11, 30, 9, 15, 2, 123456, tzinfo=UTC),
        status=status,
        reason=reason,
    )


def signed(status: str = "accepted", reason: str | None = None) -> str:
    body = receipts.claims(receipt(status, reason), "ab" * 32, datetime.now(UTC))
    return receipts.sign(body)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noticeflow.cli", "receipts", "verify", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def refused(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The one line a refusal prints (and no traceback)."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and not done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_a_receipt_is_a_standard_eddsa_jws_of_ids_and_instants():
    token = signed()
    header, payload, signature = token.split(".")
    assert json.loads(unb64(header)) == {"alg": "EdDSA", "kid": receipts.signing_keys()[0][0]}
    # Checked without our code or joserfc: RFC 7515 signing input, raw Ed25519 (RFC 8037).
    public = receipts.public_keys()[json.loads(unb64(header))["kid"]]
    Ed25519PublicKey.from_public_bytes(public).verify(
        unb64(signature), f"{header}.{payload}".encode()
    )
    assert json.loads(unb64(payload)) == {
        "type": "noticeflow/receipt/v1",
        "receipt_id": "r-0123456789abcdef0123",
        "notice_id": "openai-test",
        "customer_id": "acme",
        "action": "object",
        "channel": "link",
        "received_at": "2026-11-30T09:15:02.123456Z",
        "status": "accepted",
        "notice_text_sha256": "ab" * 32,
        "issued_at": json.loads(unb64(payload))["issued_at"],
    }
    rejected = json.loads(unb64(signed("rejected", "the objection window is closed").split(".")[1]))
    assert rejected["reason"] == "the objection window is closed"
    # Its own key: not the stream heads' (a receipt key never signs a head, nor the other way).
    assert receipts.KEY_USE != eventstore.HEAD_KEY_USE
    assert not set(receipts.public_keys()) & set(eventstore.signing_public_keys())


def test_the_jwks_names_every_key_current_first():
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    before = keyring.installed()
    try:
        keyring.install(keyring.Keyring({**before.keys, "signing": (new, old)}))
        published = receipts.jwks()
        ids = [k["kid"] for k in published["keys"]]
        assert ids == list(receipts.public_keys()) and len(ids) == 2
        for key in published["keys"]:
            assert key.keys() == {"kty", "crv", "x", "kid", "use", "alg"}
            assert (key["kty"], key["crv"], key["use"], key["alg"]) == (
                "OKP", "Ed25519", "sig", "EdDSA",
            )  # fmt: skip
            assert keyring.Keyring.key_id(unb64(key["x"])) == key["kid"]
        assert receipts.keys_from_jwks(published) == receipts.public_keys()
    finally:
        keyring.install(before)


def test_verify_a_receipt_with_the_installed_keys_and_with_a_saved_jwks(tmp_path: Path):
    path = tmp_path / "receipt.jws"
    path.write_text(signed())
    ok = verify(str(path))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"valid: signed by key {receipts.signing_keys()[0][0]}")
    for shown in ("r-0123456789abcdef0123", "openai-test", "acme", "object", "link",
                  "2026-11-30T09:15:02.123456Z", "accepted", "ab" * 32):  # fmt: skip
        assert shown in ok.stdout, shown

    jwks = tmp_path / "noticeflow-receipts.json"
    jwks.write_text(json.dumps(receipts.jwks()))
    as_json = verify(str(path), "--jwks", str(jwks), "--json")
    assert as_json.returncode == 0, as_json.stderr
    found = json.loads(as_json.stdout)
    assert found["valid"] is True and found["receipt"]["receipt_id"] == "r-0123456789abcdef0123"
    # From standard input too, as a pipe from a download gives it.
    piped = subprocess.run(
        [sys.executable, "-m", "noticeflow.cli", "receipts", "verify", "-", "--jwks", str(jwks)],
        input=path.read_text(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert piped.returncode == 0 and piped.stdout.startswith("valid:"), piped.stderr


def test_an_altered_receipt_is_named_altered(tmp_path: Path):
    header, payload, signature = signed().split(".")
    body = json.loads(unb64(payload))
    body["status"] = "rejected"  # what someone would change
    changed = json.dumps(body, separators=(",", ":")).encode()
    one_byte = bytearray(unb64(payload))
    one_byte[one_byte.index(b"acme")] ^= 0x01  # "acme" -> "`cme": one bit of one byte
    flipped = "A" if signature[10] != "A" else "B"
    cases = {
        "status changed": f"{header}.{b64(changed)}.{signature}",
        "one payload byte": f"{header}.{b64(bytes(one_byte))}.{signature}",
        "signature changed": f"{header}.{payload}.{signature[:10]}{flipped}{signature[11:]}",
    }
    for name, token in cases.items():
        path = tmp_path / "altered.jws"
        path.write_text(token)
        line = refused(verify(str(path)))
        assert line.startswith(f"error: {path}: altered: the signature does not verify"), name
        as_json = verify(str(path), "--json")
        assert as_json.returncode == 1
        assert json.loads(as_json.stdout)["problem"] == "altered", name


def test_a_receipt_from_another_key_is_refused(tmp_path: Path):
    path = tmp_path / "receipt.jws"
    path.write_text(signed())
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    jwks = tmp_path / "other.json"
    jwks.write_text(json.dumps(receipts.jwks({keyring.Keyring.key_id(other): other})))
    line = refused(verify(str(path), "--jwks", str(jwks)))
    assert "unknown key id" in line and receipts.signing_keys()[0][0] in line
    # Another installation's keys (another signing key in the environment): unknown too.
    line = refused(verify(str(path), env={SIGNING: secrets.token_urlsafe(32)}))
    assert "unknown key id" in line
    # A JWK Set that claims our key id for another key: the signature does not verify.
    ours = receipts.signing_keys()[0][0]
    jwks.write_text(json.dumps(receipts.jwks({ours: other})))
    assert "altered" in refused(verify(str(path), "--jwks", str(jwks)))


def test_after_a_rotation_the_previous_key_still_verifies(tmp_path: Path):
    path = tmp_path / "receipt.jws"
    path.write_text(signed())
    rotated = {
        SIGNING: secrets.token_urlsafe(32),
        "NOTICEFLOW_PREVIOUS_SIGNING_KEYS": os.environ[SIGNING],
    }
    ok = verify(str(path), env=rotated)
    assert ok.returncode == 0 and ok.stdout.startswith("valid:"), ok.stderr


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"garbage", "three base64url parts"),
        (b"", "three base64url parts"),
        (b"\xff\xfe\x00binary", "not text"),
        (b'{"receipt_id": "r-0123456789abcdef0123"}', "three base64url parts"),
        (b"a.b.c", "header is not base64url JSON"),
        (b64(b'{"alg":"none"}').encode() + b".e30." + b"A" * 86, "alg EdDSA"),
        (b64(b'{"alg":"EdDSA","kid":"k"}').encode() + b".e30.", "signature is not 64 bytes"),
        (b64(b'{"alg":"EdDSA"}').encode() + b".e30." + b"A" * 86, "names no key"),
    ],
)
def test_what_is_not_a_receipt_says_so(tmp_path: Path, content: bytes, says: str):
    path = tmp_path / "file.jws"
    path.write_bytes(content)
    line = refused(verify(str(path)))
    assert "not a receipt" in line and says in line, line


def test_a_signed_payload_that_is_not_a_receipt_is_not_a_receipt():
    key_id = receipts.signing_keys()[0][0]
    for body in ({"type": "something else"}, {"type": receipts.TYPE, "receipt_id": "r-1"}):
        token = receipts.sign(body)
        with pytest.raises(receipts.ReceiptProblem) as problem:
            receipts.verify(token, receipts.public_keys())
        assert problem.value.kind == "malformed", body
    assert receipts.verify(signed(), receipts.public_keys()).key_id == key_id


def test_bad_arguments_are_one_line(tmp_path: Path):
    receipt_path = tmp_path / "receipt.jws"
    receipt_path.write_text(signed())
    cases: dict[str, tuple[list[str], str]] = {
        "no such file": ([str(tmp_path / "nope.jws")], "no such file"),
        "a directory": ([str(tmp_path)], "a directory"),
        "jwks missing": ([str(receipt_path), "--jwks", str(tmp_path / "nope.json")], "no such"),
    }
    for name, text in {
        "not json": "{",
        "no keys list": '{"kty": "OKP"}',
        "no ed25519 key": '{"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}]}',
        "bad x": '{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "abc"}]}',
    }.items():
        path = tmp_path / f"{name.replace(' ', '-')}.json"
        path.write_text(text)
        cases[name] = ([str(receipt_path), "--jwks", str(path)], "--jwks")
    for name, (args, says) in cases.items():
        line = refused(verify(*args), 2)
        assert says in line, (name, line)
    # No keys anywhere: says how to get them.
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if k != SIGNING}
    done = subprocess.run(
        [sys.executable, "-m", "noticeflow.cli", "receipts", "verify", str(receipt_path)],
        capture_output=True, text=True, env={**env, "NOTICEFLOW_DATA_DIR": str(tmp_path / "d")},
        timeout=60,
    )  # fmt: skip
    assert "--jwks" in refused(done, 2)
