"""The ops dashboard against the real stack: the list, a notice's page, acting from it, live
updates; and no personal data on any page."""

from __future__ import annotations

import asyncio
import html as markup
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from noticeflow import control, projections
from noticeflow.web import format as fmt
from tests import helpers
from tests.web.conftest import csrf_of
from tests.web.conftest import spec as base_spec

US_AUDIENCE = ("acme", "globex", "initech", "umbrella")  # hooli is EU: not in the audience


def spec(notice_id: str, **overrides: Any) -> Any:
    """A US notice that takes effect after every deadline (globex has a 30-day contract window)."""
    overrides.setdefault("effective_at", (datetime.now(UTC) + timedelta(days=40)).isoformat())
    return base_spec(notice_id, **overrides)


def assert_no_personal_data(*texts: str) -> None:
    """No contact address and no customer name (tests/helpers.py CUSTOMERS_CSV) in what we show."""
    addresses = helpers.addresses_in(helpers.CUSTOMERS_CSV)
    names = [c.name for c in helpers.customers()]
    assert addresses and names
    for text in texts:
        leaked = {a for a in addresses if a in text} | {n for n in names if n in text}
        assert not leaked, f"personal data shown: {leaked}"


async def settled_read_models(web_stack: Any, notice_id: str, **expected: Any) -> None:
    """Wait until the projector has caught up with the notice (its counts as ``expected``)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 30
    while True:
        row = await web_stack.pool.fetchrow(
            "SELECT * FROM rm_notices WHERE notice_id = $1", notice_id
        )
        if row is not None and all(row[k] == v for k, v in expected.items()):
            return
        assert loop.time() < give_up, f"read model not as expected: {dict(row or {})}"
        await asyncio.sleep(0.2)


async def caught_up(web_stack: Any, notice_id: str) -> None:
    """Wait until the read model has applied every event the notice's stream holds now."""
    version = await web_stack.pool.fetchval(
        "SELECT version FROM event_streams WHERE stream_id = $1", f"notice-{notice_id}"
    )
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 30
    while (
        await web_stack.pool.fetchval(
            "SELECT version FROM rm_notices WHERE notice_id = $1", notice_id
        )
        < version
    ):
        assert loop.time() < give_up, "the projector did not catch up"
        await asyncio.sleep(0.2)


async def act(http: httpx.AsyncClient, notice_id: str, action: str, **fields: str) -> str:
    """Post an action form from the notice page as a browser would; returns the page after."""
    page = await http.get(f"/notices/{notice_id}")
    answer = await http.post(
        f"/notices/{notice_id}/actions/{action}",
        data={"csrf_token": csrf_of(page.text), **fields},
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"].startswith(f"/notices/{notice_id}")
    after = await http.get(answer.headers["location"])
    assert after.status_code == 200
    return after.text


def flash_of(html: str) -> str:
    match = re.search(r'<div class="flash [a-z]+" role="status">(.*?)</div>', html, re.S)
    assert match, "no flash message on the page"
    return markup.unescape(match.group(1))


async def test_list_and_notice_pages_with_counts_search_sorting_and_paging(web_stack):
    now = datetime.now(UTC)
    await web_stack.notice(spec("web-open", title="Open notice", subprocessor="Acmeless AI, Inc."))
    await control.start_notice(
        web_stack.client, web_stack.pool, spec("web-draft", title="Drafty"), "alice",
        web_stack.task_queue,
    )  # fmt: skip
    await settled_read_models(web_stack, "web-open", delivered=3, undelivered=1)
    await settled_read_models(web_stack, "web-draft", phase="draft")
    http = await web_stack.signed_in("vera")
    try:
        shown: list[str] = []

        home = await http.get("/")
        assert home.status_code == 200
        shown.append(home.text)
        assert "web-open" in home.text and "web-draft" in home.text
        row = re.search(r'<tr>\s*<td><a href="/notices/web-open">.*?</tr>', home.text, re.S)
        assert row, "the notice's row"
        cells = re.findall(r'<td class="num[^"]*">(\d+)</td>', row.group(0))
        # customers / delivered / undelivered / open cases / opted in / activated
        assert cells == ["4", "3", "1", "0", "0", "0"], cells
        assert "phase-window_open" in row.group(0)
        assert "Acmeless AI, Inc." in row.group(0)
        assert re.search(r"in (\d+ d|\d+ h)", row.group(0)), "countdowns"

        only_drafts = await http.get("/", params={"phase": "draft"})
        assert "web-draft" in only_drafts.text and "web-open" not in only_drafts.text
        for q in ("drafty", "WEB-DRAFT", "draft"):
            found = await http.get("/", params={"q": q})
            assert "/notices/web-draft" in found.text and "/notices/web-open" not in found.text
        by_subprocessor = await http.get("/", params={"q": "acmeless"})
        assert "/notices/web-open" in by_subprocessor.text
        assert "/notices/web-draft" not in by_subprocessor.text
        nothing = await http.get("/", params={"q": "100%_"})
        assert nothing.status_code == 200 and "No notices match" in nothing.text
        bad = await http.get("/", params={"phase": "open", "page": "x"})
        assert bad.status_code == 400
        said = markup.unescape(bad.text)
        assert "phase: 'open' is not a phase" in said and "page: 'x'" in said

        page = await http.get("/notices/web-open")
        assert page.status_code == 200
        shown.append(page.text)
        html = page.text
        for fact in ("Open notice", "alice", "bob", "window_open", "Text SHA-256"):
            assert fact in html, fact
        cards = dict(
            (label, int(n))
            for n, label in re.findall(
                r'<div class="n[^"]*">(\d+)</div><div class="l">([a-z ]+)</div>', html
            )
        )
        assert cards["customers"] == 4 and cards["delivered"] == 3
        assert cards["undelivered"] == 1 and cards["open cases"] == 0
        # The workflow in the Temporal Web UI.
        assert 'href="http://127.0.0.1:8233/namespaces/default/workflows/notice-web-open"' in html
        # The live script, loaded from /static with the notice id as a data attribute.
        assert '<script src="/static/live.js" data-notice="web-open"' in html
        assert "<script>" not in html and " style=" not in html
        # The chart: inline SVG drawn on the server.
        assert '<svg class="progress"' in html and "delivered 3" in html
        # Each deadline in its customer's own timezone.
        rows = await web_stack.pool.fetch(
            "SELECT customer_id, deadline, timezone FROM rm_notice_customers"
            " WHERE notice_id = 'web-open' AND deadline IS NOT NULL"
        )
        assert len(rows) == 3
        for r in rows:
            assert fmt.local(r["deadline"], r["timezone"]) in html
        # The timeline from the event store.
        for event_type in ("notice_created", "notice_approved", "audience_snapshotted"):
            assert f"<code>{event_type}</code>" in html
        assert "approved by bob; audience 4" in html
        # A viewer sees no action forms.
        assert "/actions/" not in html and "needs the operator or approver role" in html

        # Sorting and paging: two rows a page.
        def ids(text: str) -> list[str]:
            return re.findall(r'<td><a href="/notices/web-open\?act=([a-z]+)#act">', text)

        first = await http.get("/notices/web-open", params={"size": 2})
        assert ids(first.text) == ["acme", "globex"] and "page 1 of 2" in first.text
        second = await http.get("/notices/web-open", params={"size": 2, "page": 2})
        assert ids(second.text) == ["initech", "umbrella"]
        backwards = await http.get("/notices/web-open", params={"sort": "customer", "dir": "desc"})
        assert ids(backwards.text) == ["umbrella", "initech", "globex", "acme"]
        by_delivery = await http.get("/notices/web-open", params={"sort": "delivery"})
        assert ids(by_delivery.text)[-1] == "umbrella"  # delivered < undelivered
        by_deadline = await http.get(
            "/notices/web-open", params={"sort": "deadline", "dir": "desc"}
        )
        deadlines = {r["customer_id"]: r["deadline"] for r in rows}
        order = ids(by_deadline.text)
        assert order[0] == "umbrella"  # no deadline: first when descending
        assert [deadlines[c] for c in order[1:]] == sorted(deadlines.values(), reverse=True)
        assert order[1] == "globex"  # its 30-day contract window
        undelivered = await http.get("/notices/web-open", params={"show": "undelivered"})
        assert ids(undelivered.text) == ["umbrella"]
        no_cases = await http.get("/notices/web-open", params={"show": "open_cases"})
        assert ids(no_cases.text) == [] and "No customers here" in no_cases.text
        bad = await http.get("/notices/web-open", params={"sort": "name", "dir": "up", "size": "0"})
        assert bad.status_code == 400
        for problem in ("sort: 'name' is not a column", "dir: use asc or desc", "size: must be"):
            assert problem in markup.unescape(bad.text)
        missing = await http.get("/notices/no-such-notice")
        assert missing.status_code == 404 and "no notice" in missing.text
        shown += [first.text, second.text, backwards.text, undelivered.text]

        # The live fragment: the same cards, table page and timeline head, no page around it.
        live = await http.get("/notices/web-open/live", params={"size": 2, "page": 2})
        assert live.status_code == 200 and "<html" not in live.text
        assert (
            ids(live.text) == ["initech", "umbrella"] and "<code>notice_created</code>" in live.text
        )
        shown.append(live.text)

        draft = await http.get("/notices/web-draft")
        assert draft.status_code == 200 and "not approved yet" in draft.text
        assert "No customers" in draft.text
        shown.append(draft.text)
        assert_no_personal_data(*shown)
    finally:
        await http.aclose()
    assert now < datetime.now(UTC) + timedelta(seconds=1)


async def test_approve_from_the_dashboard_four_eyes_and_roles(web_stack):
    await web_stack.notice(spec("web-approve"), approve=False)
    await settled_read_models(web_stack, "web-approve", phase="draft")

    vera = await web_stack.signed_in("vera")
    alice = await web_stack.signed_in("alice")
    bob = await web_stack.signed_in("bob")
    try:
        page = await vera.get("/notices/web-approve")
        assert "/actions/approve" not in page.text
        refused = await vera.post(
            "/notices/web-approve/actions/approve", data={"csrf_token": csrf_of(page.text)}
        )
        assert refused.status_code == 403 and "approver role" in refused.text
        no_csrf = await bob.post("/notices/web-approve/actions/approve", data={})
        assert no_csrf.status_code == 403 and "expired" in no_csrf.text
        # alice is an operator: the approve form is not hers either.
        alice_page = await alice.get("/notices/web-approve")
        assert "/actions/approve" not in alice_page.text
        assert "/actions/cancel" not in alice_page.text

        # The author cannot approve her own notice (four eyes), whatever her role: the workflow
        # judges it and the page says why. (alice as an approver for this check.)
        from noticeflow import users
        from noticeflow.users import Role

        await users.add_user(
            web_stack.pool, "alice", Role.approver, "alice-password-1", replace=True
        )
        alice_page = await alice.get("/notices/web-approve")
        assert "/actions/approve" not in alice_page.text  # not offered to the author
        after = await act(alice, "web-approve", "approve")  # posted anyway: judged and refused
        message = flash_of(after)
        assert message.startswith("Rejected:"), message
        assert "alice wrote this notice and cannot also approve it (four eyes)" in message
        # The flash is shown once.
        again = await alice.get("/notices/web-approve")
        assert 'class="flash' not in again.text
        assert "approve rejected (via web)" in again.text  # the timeline shows the rejection

        page = await bob.get("/notices/web-approve")
        assert (
            '<form class="stack" method="post" action="/notices/web-approve/actions/approve">'
            in (page.text)
        )
        after = await act(bob, "web-approve", "approve")
        assert flash_of(after).startswith("Accepted: the approval"), flash_of(after)
        await web_stack.wait_phase("web-approve", "window_open")
        await settled_read_models(web_stack, "web-approve", approved_by="bob")
        receipt = await web_stack.pool.fetchrow(
            "SELECT channel, status FROM intake WHERE notice_id = 'web-approve'"
            " AND action = 'approve' AND status = 'accepted'"
        )
        assert receipt["channel"] == "web"
        assert_no_personal_data(after, again.text)
    finally:
        for http in (vera, alice, bob):
            await http.aclose()


async def test_resolve_exclude_postpone_from_the_page_and_live_stream(web_stack):
    await web_stack.notice(spec("web-act"))
    await settled_read_models(web_stack, "web-act", delivered=3, undelivered=1)
    receipt, _ = await control.submit(
        web_stack.client, web_stack.pool, "web-act", "object",
        {"customer_id": "acme", "reason": "We object, Acme Corp privacy team"},
        task_queue=web_stack.task_queue,
    )  # fmt: skip
    assert receipt.status == "accepted"
    await settled_read_models(web_stack, "web-act", open_objections=1)

    alice = await web_stack.signed_in("alice")
    try:
        page = await alice.get("/notices/web-act", params={"show": "open_cases"})
        assert re.findall(r"\?act=([a-z]+)#act", page.text) == ["acme"]
        assert "open</span>, timely" in page.text
        assert "acme objected (timely, via cli)" in page.text
        marker = re.search(r'data-version="(\d+)"', page.text)
        assert marker, "the page names its version for the live stream"
        version = int(marker.group(1))

        # The live stream says `changed` when the notice moves (here: the case is resolved).
        seen: list[int] = []

        async def watch() -> None:
            async with alice.stream(
                "GET", "/notices/web-act/stream", params={"since": version}
            ) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                event = None
                async for line in stream.aiter_lines():
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: ") and event == "changed":
                        seen.append(int(line.removeprefix("data: ")))

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.5)
        after = await act(
            alice, "web-act", "resolve_objection",
            customer_id="acme", outcome="withdrawn", note="Call with the DPO",
        )  # fmt: skip
        assert flash_of(after).startswith("Accepted: the resolution of the case for acme")
        resolved = await web_stack.pool.fetchval(
            "SELECT max(stream_version) FROM events WHERE stream_id = 'notice-web-act'"
            " AND event_type = 'objection_resolved'"
        )
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 20
        while not any(v >= resolved for v in seen):
            assert loop.time() < give_up and not watcher.done(), f"no change event: {seen}"
            await asyncio.sleep(0.1)
        watcher.cancel()
        await settled_read_models(web_stack, "web-act", open_objections=0)
        page = await alice.get("/notices/web-act")
        assert "withdrawn</span>, timely" in page.text
        assert "acme: case withdrawn" in page.text

        # A bad payload is recorded as rejected, with every problem.
        before = await web_stack.pool.fetchval("SELECT count(*) FROM intake")
        after = await act(alice, "web-act", "resend", customer_id="")
        assert flash_of(after).startswith("Rejected: invalid resend payload: customer_id")
        assert await web_stack.pool.fetchval("SELECT count(*) FROM intake") == before + 1

        # Exclude the undelivered customer.
        after = await act(
            alice, "web-act", "exclude", customer_id="umbrella", reason="dead mailbox"
        )
        assert flash_of(after).startswith("Accepted: the exclusion for umbrella"), flash_of(after)
        await caught_up(web_stack, "web-act")
        excluded = await alice.get("/notices/web-act", params={"sort": "verdict"})
        assert "umbrella excluded by ops (delivery undelivered)" in excluded.text
        assert re.search(r"act=umbrella#act.*?excluded by ops</td>", excluded.text, re.S)
        # Postpone needs the approver role: alice is an operator.
        refused = await alice.post(
            "/notices/web-act/actions/postpone",
            data={"csrf_token": csrf_of(page.text), "effective_at": "2099-01-01T10:00"},
        )
        assert refused.status_code == 403
        assert_no_personal_data(page.text, after)
    finally:
        await alice.aclose()

    bob = await web_stack.signed_in("bob")
    try:
        effective = await web_stack.pool.fetchval(
            "SELECT effective_at FROM rm_notices WHERE notice_id = 'web-act'"
        )
        later = (effective + timedelta(days=2)).astimezone(fmt.zone("Europe/Berlin"))
        bad = await act(bob, "web-act", "postpone", effective_at="soon", timezone="Mars/Base")
        message = flash_of(bad)
        assert "timezone: 'Mars/Base' is not a timezone" in message
        assert "'soon' is not a date and time" in message
        after = await act(
            bob, "web-act", "postpone",
            effective_at=later.strftime("%Y-%m-%dT%H:%M"), timezone="Europe/Berlin",
        )  # fmt: skip
        assert flash_of(after).startswith("Accepted: the postponement"), flash_of(after)
        await settled_read_models(
            web_stack, "web-act", effective_at=later.replace(second=0, microsecond=0)
        )
        assert "postponed by bob" in (await bob.get("/notices/web-act")).text
    finally:
        await bob.aclose()

    # The counts the projector keeps equal the customer rows; a rebuild equals the live models.
    await projections.catch_up(web_stack.pool)
    counts = await web_stack.pool.fetchrow(
        "SELECT count(*) AS customers, count(*) FILTER (WHERE delivery = 'delivered') AS delivered,"
        " count(*) FILTER (WHERE delivery = 'undelivered') AS undelivered,"
        " count(*) FILTER (WHERE opted_in) AS opted_in, count(*) FILTER (WHERE activated)"
        " AS activated, count(*) FILTER (WHERE settled) AS settled,"
        " sum(open_objections) AS open_objections FROM rm_notice_customers"
        " WHERE notice_id = 'web-act'"
    )
    kept = await web_stack.pool.fetchrow("SELECT * FROM rm_notices WHERE notice_id = 'web-act'")
    expected = dict(counts)
    assert {k: kept[k] for k in expected} == expected
    progress = await web_stack.pool.fetchrow(
        "SELECT sum(delivered) AS d, sum(objections) AS o FROM rm_notice_progress"
        " WHERE notice_id = 'web-act'"
    )
    assert (progress["d"], progress["o"]) == (3, 1)
    live = {
        t: [dict(r) for r in await web_stack.pool.fetch(f"SELECT * FROM {t} ORDER BY 1, 2")]
        for t in projections.TABLES
    }
    await projections.rebuild(web_stack.pool)
    rebuilt = {
        t: [dict(r) for r in await web_stack.pool.fetch(f"SELECT * FROM {t} ORDER BY 1, 2")]
        for t in projections.TABLES
    }
    assert rebuilt == live
