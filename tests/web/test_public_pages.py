"""The public pages on the real stack (issue 14 item 1): no sign-in; the JSON validates against
its published schema; the Atom feed validates against RFC 4287's RELAX NG grammar (libxml2)
plus the rules the grammar leaves to prose; one entry per mailed notice, the same entry updated
on postponement and cancellation; every answer carries the chain head, and equals what the
events say at it (tests/public_check.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lxml import etree

from noticeflow import control, public_list, subscriptions
from noticeflow.domain.public_list import parse_head
from noticeflow.subscriptions import Tokens
from noticeflow.web.public import HEAD_HEADER
from tests.public_check import assert_public_list_equals_the_events, validate_schema
from tests.test_public_list import BASELINE, entries_of
from tests.web.conftest import spec

ATOM = "{http://www.w3.org/2005/Atom}"
RNG = etree.RelaxNG(etree.parse(str(Path(__file__).resolve().parents[1] / "atom" / "atom.rng")))
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def check_atom(body: bytes) -> etree._Element:
    """RFC 4287: the grammar, and what Appendix B's Schematron and the prose add."""
    feed = etree.fromstring(body)
    assert RNG.validate(feed), RNG.error_log
    entries = feed.findall(f"{ATOM}entry")
    assert feed.find(f"{ATOM}author") is not None or all(
        e.find(f"{ATOM}author") is not None for e in entries
    ), "a feed has an author unless every entry has one (4.1.1)"
    for entry in entries:
        links = entry.findall(f"{ATOM}link")
        assert entry.find(f"{ATOM}content") is not None or any(
            link.get("rel", "alternate") == "alternate" for link in links
        ), "an entry has an alternate link or content (4.1.2)"
        assert len(entry.findall(f"{ATOM}summary")) <= 1
    for element in feed.iter(f"{ATOM}updated", f"{ATOM}published"):
        assert RFC3339.match(element.text or ""), element.text  # 3.3: RFC 3339
    for element in feed.iter(f"{ATOM}id"):
        assert re.match(r"^[a-z][a-z0-9+.-]*:", element.text or ""), element.text  # 4.2.6
    ids = [e.findtext(f"{ATOM}id") for e in entries]
    assert len(ids) == len(set(ids)), "entry ids are unique"
    for link in feed.findall(f"{ATOM}link"):
        assert link.get("href", "").startswith("http")
    return feed


async def test_the_public_list_follows_a_notice_and_validates(web_stack, tmp_path):
    now = datetime.now().astimezone()
    await public_list.record_baseline(web_stack.pool, entries_of(BASELINE), "alice", now)
    async with web_stack.http() as http:  # no sign-in, no token
        empty = await http.get("/subprocessors.json")
        assert empty.status_code == 200
        assert empty.headers["content-type"].startswith("application/json")
        validate_schema(empty.json())
        assert [e["source"] for e in empty.json()["subprocessors"]] == ["baseline", "baseline"]
        head = empty.headers[HEAD_HEADER]
        assert empty.json()["chain_head"] == parse_head(head).as_json()
        assert empty.headers["etag"] == f'"{head}"'
        again = await http.get("/subprocessors.json", headers={"If-None-Match": f'"{head}"'})
        assert again.status_code == 304 and again.headers[HEAD_HEADER] == head
        first_feed = check_atom((await http.get("/subprocessors.atom")).content)
        assert first_feed.findall(f"{ATOM}entry") == []

        notice = spec("public-openai")
        await web_stack.notice(notice)  # approved and mailed: window open
        sent = await http.get("/subprocessors.json")
        assert sent.headers[HEAD_HEADER] != head
        (change,) = sent.json()["upcoming_changes"]
        assert (change["notice_id"], change["status"]) == ("public-openai", "upcoming")
        assert "OpenAI, LLC" not in [e["name"] for e in sent.json()["subprocessors"]]
        atom = await http.get("/subprocessors.atom")
        assert atom.headers["content-type"].startswith("application/atom+xml")
        (entry,) = check_atom(atom.content).findall(f"{ATOM}entry")
        entry_id, first_updated = entry.findtext(f"{ATOM}id"), entry.findtext(f"{ATOM}updated")
        page = await http.get("/subprocessors")
        assert page.status_code == 200 and 'id="notice-public-openai"' in page.text
        assert page.headers[HEAD_HEADER] == sent.headers[HEAD_HEADER]

        later = (notice.effective_at + timedelta(days=7)).isoformat()
        receipt, _ = await control.submit(
            web_stack.client, web_stack.pool, notice.notice_id, "postpone",
            {"effective_at": later, "by": "alice"}, task_queue=web_stack.task_queue,
        )  # fmt: skip
        assert receipt.status == "accepted", receipt
        await assert_public_list_equals_the_events(web_stack.pool, tmp_path / "d1")
        (entry,) = check_atom((await http.get("/subprocessors.atom")).content).findall(
            f"{ATOM}entry"
        )
        assert entry.findtext(f"{ATOM}id") == entry_id
        assert entry.findtext(f"{ATOM}updated") > first_updated
        assert "postponed" in entry.findtext(f"{ATOM}title")

        receipt, _ = await control.submit(
            web_stack.client, web_stack.pool, notice.notice_id, "cancel",
            {"reason": "Chose another vendor", "by": "alice"}, task_queue=web_stack.task_queue,
        )  # fmt: skip
        assert receipt.status == "accepted", receipt
        await web_stack.wait_phase(notice.notice_id, "cancelled")
        body = await assert_public_list_equals_the_events(web_stack.pool, tmp_path / "d2")
        assert body["upcoming_changes"] == []
        (past,) = body["past_changes"]
        assert (past["status"], len(past["postponements"])) == ("cancelled", 1)
        text = (await http.get("/subprocessors.atom")).text
        assert "Chose another vendor" not in text and "alice" not in text  # no free text, names
        (entry,) = check_atom(text.encode()).findall(f"{ATOM}entry")
        assert entry.findtext(f"{ATOM}id") == entry_id
        assert entry.findtext(f"{ATOM}title").startswith("Cancelled")


async def test_public_pages_make_no_session_so_a_shared_cache_serves_no_ones_cookie(pool, tmp_path):
    """An anonymous visitor gets no session cookie from the public pages (nor from a
    subscription link's page), so ``Cache-Control: public`` is safe; a signed-in visitor's
    session is not even read (no Vary: Cookie); the app would mark an answer that did set a
    cookie private (noticeflow/web/app.py)."""
    import base64
    import json

    from itsdangerous import TimestampSigner

    from noticeflow.config import Settings
    from noticeflow.subscriptions import Tokens
    from noticeflow.web.app import session_key
    from tests.public_check import fetch_public
    from tests.web.conftest import SECRET

    tokens = Tokens(SECRET, "http://127.0.0.1")
    links = (
        tokens.unsubscribe_url("sub_0123456789abcdef").removeprefix("http://127.0.0.1"),
        tokens.confirm_url("sub_0123456789abcdef", datetime.now().astimezone() + timedelta(1))
        .removeprefix("http://127.0.0.1"),
    )  # fmt: skip
    served = await fetch_public(pool, tmp_path / "anonymous", paths=links)
    assert len(served["headers"]) == 5
    for path, headers in served["headers"].items():
        assert "set-cookie" not in headers, (path, headers.get("set-cookie"))
        assert "cookie" not in headers.get("vary", "").lower()
    assert served["headers"]["/subprocessors"]["cache-control"] == "public, no-cache"
    # A visitor with a session (signed in): the same answers, the session untouched.
    settings = Settings(data_dir=tmp_path, secret_key=SECRET)
    cookie = TimestampSigner(session_key(settings)).sign(
        base64.b64encode(json.dumps({"csrf": "x" * 32}).encode())
    )
    served = await fetch_public(
        pool, tmp_path / "signed-in", cookies={"nf_session": cookie.decode()}
    )
    for path, headers in served["headers"].items():
        assert "set-cookie" not in headers, path  # the session is not even read
        assert "cookie" not in headers.get("vary", "").lower(), path


async def test_head_preflight_and_a_slash_redirect_that_keeps_to_our_host(web_stack):
    """RFC 9110: HEAD wherever GET works, with GET's headers (ETag, chain head) and no body, on
    the list, the feed, the JSON and the subscription pages. The answers allow any origin, so a
    cross-site script's preflight for a GET with If-None-Match is answered. The trailing-slash
    redirect names NOTICEFLOW_PUBLIC_URL, never the Host a client sent."""
    tokens = Tokens(web_stack.settings.verification_keys, web_stack.url)
    pending, _ = await subscriptions.subscribe(web_stack.pool, "head-check@example.com")
    confirm = tokens.confirm_url(pending, datetime.now(UTC) + timedelta(days=1))
    unsubscribe = tokens.unsubscribe_url(pending)
    async with web_stack.http() as http:
        for path in ("/subprocessors", "/subprocessors.json", "/subprocessors.atom"):
            got = await http.get(path)
            head = await http.head(path)
            assert (head.status_code, head.content) == (200, b""), path
            for name in ("etag", HEAD_HEADER, "content-type", "cache-control"):
                assert head.headers[name] == got.headers[name], (path, name)
            assert "set-cookie" not in head.headers
            cached = await http.head(path, headers={"If-None-Match": got.headers["etag"]})
            assert cached.status_code == 304, path

            asked = await http.options(
                path,
                headers={
                    "Origin": "https://elsewhere.example",
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "if-none-match",
                },
            )
            assert asked.status_code == 204, path
            assert asked.headers["access-control-allow-origin"] == "*"
            assert "GET" in asked.headers["access-control-allow-methods"]
            assert "if-none-match" in asked.headers["access-control-allow-headers"].lower()
        for url in (confirm, unsubscribe):
            path = url.removeprefix(web_stack.url)
            head = await http.head(path)
            assert (head.status_code, head.content) == (200, b""), path
            assert head.headers["cache-control"] == "no-store"

        for host in ("evil.com", "EVIL.com:8443"):
            moved = await http.get("/subprocessors/", headers={"Host": host})
            assert moved.status_code in (301, 307, 308)
            assert moved.headers["location"] == f"{web_stack.url}/subprocessors", host
        moved = await http.get("//evil.com/", headers={"Host": "evil.com"})
        assert not moved.headers.get("location", "").startswith(("//", "http://evil.com"))
