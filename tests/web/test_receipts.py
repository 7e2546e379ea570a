"""Signed receipts against the real stack: a customer objects through its mailed link, downloads
the receipt from the receipt page, and `noticeflow receipts verify` (a real subprocess) checks it
with the installed keys, with the JWK Set the web publishes (saved, or fetched by URL), and refuses
it altered or against another key. The receipt holds ids and instants only."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from noticeflow import control, keyring, receipts
from tests import helpers
from tests.web.test_action_pages import flip, form_of, notice_spec, path_of, token_of


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def verify(*args: str) -> tuple[int, str, str]:
    """`noticeflow receipts verify …` in a subprocess, without blocking the web it may fetch from."""
    done = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noticeflow.cli", "receipts", "verify", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ),
    )  # fmt: skip
    out, err = await asyncio.wait_for(done.communicate(), 60)
    assert b"Traceback" not in err, err
    return int(done.returncode or 0), out.decode(), err.decode()


async def settled(stack, receipt_id: str, seconds: float = 30) -> str:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    while True:
        status = await stack.pool.fetchval(
            "SELECT status FROM intake WHERE receipt_id = $1", receipt_id
        )
        if status != "pending" or loop.time() > give_up:
            return str(status)
        await asyncio.sleep(0.3)


async def test_a_customer_downloads_a_signed_receipt_that_anyone_can_check(web_stack, tmp_path):
    notice = notice_spec("web-receipts")
    await web_stack.notice(notice)
    page_path = path_of(web_stack, web_stack.links("acme", "object")[0])
    reason = "We object; write to privacy@acme.example or Jane Roe at dpo@acme.example."
    async with web_stack.http() as http:
        page = await http.get(page_path)
        posted = await http.post(page_path, data={**form_of(page.text, "object"), "reason": reason})
        assert posted.status_code == 303, posted.text
        location = posted.headers["location"]
        receipt_id = location.rsplit("/", 1)[1]
        status = await settled(web_stack, receipt_id)
        assert status == "accepted"
        shown = await http.get(location)
        assert shown.status_code == 200 and "Download this receipt, signed" in shown.text
        links = re.findall(r'href="([^"]+\.jws)"', shown.text)
        assert links == [location + ".jws"]
        assert receipts.JWKS_PATH in shown.text
        download = await http.get(links[0])
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "application/jose"
    assert download.headers["content-disposition"] == (
        f'attachment; filename="noticeflow-receipt-{receipt_id}.jws"'
    )
    assert download.headers["cache-control"] == "no-store"
    token = download.text
    header, payload, _ = token.split(".")
    assert json.loads(unb64(header))["alg"] == "EdDSA"
    claims = json.loads(unb64(payload))
    row = await web_stack.pool.fetchrow(
        "SELECT i.received_at, n.text_sha256, r.deadline FROM intake i JOIN notices n"
        " USING (notice_id) JOIN recipients r ON r.notice_id = i.notice_id"
        " AND r.customer_id = i.customer_id WHERE i.receipt_id = $1",
        receipt_id,
    )
    assert {k: v for k, v in claims.items() if k != "issued_at"} == {
        "type": "noticeflow/receipt/v1",
        "receipt_id": receipt_id,
        "notice_id": notice.notice_id,
        "customer_id": "acme",
        "action": "object",
        "channel": "link",
        "received_at": receipts.instant(row["received_at"]),
        "status": "accepted",
        "notice_text_sha256": row["text_sha256"],
        "timely": True,  # the case it opened, as judged by its receipt time (rule 7)
        "deadline": receipts.instant(row["deadline"]),
    }
    # Ids and instants only: no contact address, no name, not the customer's own words.
    decoded = unb64(payload).decode()
    assert not helpers.addresses_in(decoded) and "@" not in decoded
    assert "Acme" not in decoded and "Jane" not in decoded and "object;" not in decoded

    saved = tmp_path / f"noticeflow-receipt-{receipt_id}.jws"
    saved.write_text(token)
    code, out, err = await verify(str(saved))  # the installed keys
    assert code == 0, err
    assert out.startswith("valid: signed by key") and receipt_id in out and "accepted" in out
    assert re.search(r"timely\s+True", out)

    # The published keys: no sign-in, a JWK Set that checks the receipt, saved or by URL.
    async with web_stack.http() as anonymous:
        published = await anonymous.get(receipts.JWKS_PATH)
    assert published.status_code == 200
    assert published.headers["content-type"] == "application/jwk-set+json"
    jwks = published.json()
    assert [k["kid"] for k in jwks["keys"]] == [json.loads(unb64(header))["kid"]]
    assert all(
        (k["kty"], k["crv"], k["use"], k["alg"]) == ("OKP", "Ed25519", "sig", "EdDSA")
        for k in jwks["keys"]
    )
    assert receipts.verify(token, receipts.keys_from_jwks(jwks)).claims == claims
    jwks_file = tmp_path / "noticeflow-receipts.json"
    jwks_file.write_bytes(published.content)
    for source in (str(jwks_file), web_stack.url + receipts.JWKS_PATH):
        code, out, err = await verify(str(saved), "--jwks", source, "--json")
        assert code == 0, (source, err)
        assert json.loads(out)["receipt"] == claims

    # One byte of the payload changed: altered. Another key's JWK Set: unknown key. Garbage.
    changed = bytearray(unb64(payload))
    changed[changed.index(b"accepted")] ^= 0x02  # "accepted" -> "cccepted": one bit
    altered = tmp_path / "altered.jws"
    altered.write_text(f"{header}.{b64(bytes(changed))}.{token.split('.')[2]}")
    code, _, err = await verify(str(altered), "--jwks", str(jwks_file))
    assert code == 1 and "altered: the signature does not verify" in err
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    other_file = tmp_path / "other.json"
    other_file.write_text(json.dumps(receipts.jwks({keyring.Keyring.key_id(other): other})))
    code, _, err = await verify(str(saved), "--jwks", str(other_file))
    assert code == 1 and "unknown key id" in err
    garbage = tmp_path / "garbage.jws"
    garbage.write_text(f"<html>{receipt_id}</html>")
    code, _, err = await verify(str(garbage), "--jwks", str(jwks_file))
    assert code == 1 and "not a receipt" in err


async def test_a_receipt_is_downloaded_only_through_its_own_link(web_stack):
    notice = notice_spec("web-receipts-refused")
    await web_stack.notice(notice)
    token = token_of(web_stack.links("acme", "object")[0])
    globex = await control.receive(
        web_stack.pool, notice.notice_id, "object", {"customer_id": "globex", "reason": "y"}, "cli"
    )
    acme = await control.receive(
        web_stack.pool, notice.notice_id, "object", {"customer_id": "acme", "reason": "x"}, "cli"
    )
    cases = {
        "another customer's receipt": (f"/a/{token}/receipts/{globex.receipt_id}.jws", 404),
        "no such receipt": (f"/a/{token}/receipts/r-0123456789abcdef0123.jws", 404),
        "not a receipt id": (f"/a/{token}/receipts/anything.jws", 404),
        "tampered link": (f"/a/{flip(token, len(token) // 2)}/receipts/{acme.receipt_id}.jws", 403),
    }
    async with web_stack.http() as http:
        for name, (where, status) in cases.items():
            answer = await http.get(where)
            assert answer.status_code == status, (name, answer.status_code)
            assert "application/jose" not in answer.headers["content-type"], name
        # Its own link downloads it, even one received through another channel (the CLI).
        own = await http.get(f"/a/{token}/receipts/{acme.receipt_id}.jws")
        assert own.status_code == 200
        checked = receipts.verify(own.text, receipts.public_keys())
        assert checked.claims["receipt_id"] == acme.receipt_id
        assert checked.claims["channel"] == "cli"
