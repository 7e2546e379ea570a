"""The JSON API against the real stack: shapes equal `notice show --json`, cursor paging, actions
with their receipts and roles, the OpenAPI schema; and no personal data in any response."""

from __future__ import annotations

import json
import re
from typing import Any

from noticeflow import control, repository
from noticeflow.cli import _json_default
from noticeflow.web.api import CustomerPage, EventPage, NoticeDetail, NoticeList, ReceiptOut
from tests.web.conftest import csrf_of
from tests.web.test_dashboard import assert_no_personal_data, caught_up, settled_read_models, spec

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def datetimes_in(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in datetimes_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in datetimes_in(v)]
    if isinstance(value, str) and re.match(r"^\d{4}-\d\d-\d\dT", value):
        return [value]
    return []


async def test_notices_notice_customers_and_events(web_stack):
    await web_stack.notice(spec("api-open", title="Open one"))
    await control.start_notice(
        web_stack.client, web_stack.pool, spec("api-draft", title="Draft one"), "alice",
        web_stack.task_queue,
    )  # fmt: skip
    await settled_read_models(web_stack, "api-open", delivered=3, undelivered=1)
    await settled_read_models(web_stack, "api-draft", phase="draft")
    await caught_up(web_stack, "api-open")
    bodies: list[str] = []
    async with web_stack.api() as api:
        listed = await api.get("/api/notices")
        assert listed.status_code == 200
        bodies.append(listed.text)
        page = NoticeList.model_validate(listed.json())
        assert [n.notice_id for n in page.notices] == ["api-draft", "api-open"]  # newest first
        assert page.total == 2 and page.next_cursor is None
        opened = page.notices[1]
        assert opened.counts.model_dump() == {
            "customers": 4, "delivered": 3, "undelivered": 1, "open_objections": 0,
            "opted_in": 0, "activated": 0, "settled": 0,
        }  # fmt: skip
        assert opened.links.workflow == (
            "http://127.0.0.1:8233/namespaces/default/workflows/notice-api-open"
        )
        only = await api.get("/api/notices", params={"phase": "window_open"})
        assert [n["notice_id"] for n in only.json()["notices"]] == ["api-open"]
        found = await api.get("/api/notices", params={"q": "draft ONE"})
        assert [n["notice_id"] for n in found.json()["notices"]] == ["api-draft"]
        # Cursor paging: one a page, each exactly once.
        seen, cursor = [], None
        while True:
            answer = await api.get("/api/notices", params={"limit": 1, "cursor": cursor or ""})
            assert answer.status_code == 200, answer.text
            seen += [n["notice_id"] for n in answer.json()["notices"]]
            cursor = answer.json()["next_cursor"]
            if cursor is None:
                break
        assert seen == ["api-draft", "api-open"]
        bad = await api.get("/api/notices", params={"phase": "opened", "limit": 0})
        assert bad.status_code == 422
        assert {p.split(":")[0] for p in bad.json()["problems"]} == {"phase", "limit"}
        forged = await api.get("/api/notices", params={"cursor": "bm90IG91cnM"})
        assert forged.status_code == 400 and "cursor" in forged.json()["error"]

        # The notice: exactly `notice show --json`, plus links.
        shown = await api.get("/api/notices/api-open")
        assert shown.status_code == 200
        bodies.append(shown.text)
        body = shown.json()
        links = body.pop("links")
        summary = await repository.notice_summary(web_stack.pool, "api-open")
        assert body == json.loads(json.dumps(summary, default=_json_default))
        assert list(body) == list(summary)  # the same fields, in the same order
        assert links["customers"] == "/api/notices/api-open/customers"
        NoticeDetail.model_validate({**body, "links": links})
        stamps = datetimes_in(body)
        assert stamps and all(RFC3339_UTC.match(s) for s in stamps), stamps
        missing = await api.get("/api/notices/nope")
        assert missing.status_code == 404 and missing.json() == {"error": "no notice 'nope'"}

        # Customers, keyset paged: every customer exactly once, as `notice show` has them.
        rows, cursor, pages = [], None, 0
        while True:
            params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
            answer = await api.get("/api/notices/api-open/customers", params=params)
            assert answer.status_code == 200, answer.text
            bodies.append(answer.text)
            rows += answer.json()["customers"]
            pages += 1
            cursor = CustomerPage.model_validate(answer.json()).next_cursor
            if cursor is None:
                break
        assert pages == 4
        assert [r["customer_id"] for r in rows] == ["acme", "globex", "initech", "umbrella"]
        assert rows == body["customers"]
        undelivered = await api.get(
            "/api/notices/api-open/customers", params={"show": "undelivered"}
        )
        assert [r["customer_id"] for r in undelivered.json()["customers"]] == ["umbrella"]
        bad = await api.get(
            "/api/notices/api-open/customers", params={"show": "some", "cursor": "%%%"}
        )
        assert bad.status_code == 400
        assert "show: 'some'" in bad.json()["error"] and "cursor:" in bad.json()["error"]

        # Events from the event store, paged by version: each exactly once, nothing personal.
        events, cursor = [], None
        while True:
            params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
            answer = await api.get("/api/notices/api-open/events", params=params)
            assert answer.status_code == 200, answer.text
            bodies.append(answer.text)
            events += answer.json()["events"]
            cursor = EventPage.model_validate(answer.json()).next_cursor
            if cursor is None:
                break
        stored = await web_stack.pool.fetch(
            "SELECT stream_version, event_type FROM events WHERE stream_id = 'notice-api-open'"
            " ORDER BY stream_version"
        )
        assert [(e["version"], e["event_type"]) for e in events] == [tuple(r) for r in stored]
        delivered = [e for e in events if e["event_type"] == "notice_delivered"]
        assert {e["customer_id"] for e in delivered} == {"acme", "globex", "initech"}
        assert all(RFC3339_UTC.match(e["occurred_at"]) for e in events)

        # The schema documents every route and its typed answers.
        schema = (await api.get("/api/openapi.json")).json()
        for path in (
            "/api/notices",
            "/api/notices/{notice_id}",
            "/api/notices/{notice_id}/customers",
            "/api/notices/{notice_id}/events",
            "/api/notices/{notice_id}/actions/{action}",
        ):
            assert path in schema["paths"], path
        for model in ("NoticeList", "NoticeDetail", "CustomerPage", "EventPage", "ReceiptOut"):
            assert model in schema["components"]["schemas"], model
        detail = schema["paths"]["/api/notices/{notice_id}"]["get"]["responses"]["200"]
        assert detail["content"]["application/json"]["schema"]["$ref"].endswith("NoticeDetail")
    # The session works for the API too; without either, 401.
    vera = await web_stack.signed_in("vera")
    try:
        assert (await vera.get("/api/notices/api-open")).status_code == 200
    finally:
        await vera.aclose()
    async with web_stack.http() as anonymous:
        assert (await anonymous.get("/api/notices/api-open/customers")).status_code == 401
    assert_no_personal_data(*bodies)


async def test_actions_answer_their_receipts(web_stack):
    await web_stack.notice(spec("api-act"))
    await control.start_notice(
        web_stack.client, web_stack.pool, spec("api-draft"), "alice", web_stack.task_queue
    )
    await settled_read_models(web_stack, "api-act", delivered=3)
    bodies: list[str] = []
    async with web_stack.api() as api:
        objected = await api.post(
            "/api/notices/api-act/actions/object",
            json={"customer_id": "acme", "reason": "Acme Corp objects", "by": "someone"},
        )
        assert objected.status_code == 200, objected.text
        receipt = ReceiptOut.model_validate(objected.json())
        assert receipt.status == "accepted" and receipt.channel == "api"
        assert receipt.customer_id == "acme" and receipt.pending_because is None
        assert RFC3339_UTC.match(objected.json()["received_at"])
        bodies.append(objected.text)
        case = await web_stack.pool.fetchrow(
            "SELECT channel, timely FROM objections WHERE notice_id = 'api-act'"
        )
        assert case["channel"] == "api" and case["timely"]

        # The same sender key again is the same receipt.
        key = {"customer_id": "initech", "idempotency_key": "k-1"}
        first = await api.post("/api/notices/api-act/actions/opt_in", json=key)
        again = await api.post("/api/notices/api-act/actions/opt_in", json=key)
        assert first.status_code == again.status_code == 200
        assert again.json()["receipt_id"] == first.json()["receipt_id"] and again.json()["repeat"]

        # Malformed: rejected and kept, every problem named.
        bad = await api.post(
            "/api/notices/api-act/actions/resolve_objection",
            json={"customer_id": "Not An Id", "outcome": "forgotten"},
        )
        assert bad.status_code == 422
        reason = bad.json()["reason"]
        assert bad.json()["status"] == "rejected" and "customer_id" in reason
        assert "outcome" in reason
        kept = await web_stack.pool.fetchval(
            "SELECT status FROM intake WHERE receipt_id = $1", bad.json()["receipt_id"]
        )
        assert kept == "rejected"
        unknown = await api.post("/api/notices/api-act/actions/delete", json={})
        assert unknown.status_code == 404 and "no action 'delete'" in unknown.json()["error"]
        nowhere = await api.post("/api/notices/nope/actions/approve", json={})
        assert nowhere.status_code == 404

        # Not judged in time: 202 with why; it is judged later all the same.
        pending = await api.post(
            "/api/notices/api-act/actions/opt_in", params={"wait": 0},
            json={"customer_id": "globex"},
        )  # fmt: skip
        assert pending.status_code == 202, pending.text
        assert pending.json()["status"] == "pending"
        assert pending.json()["pending_because"] == "no worker has judged it yet"

        # The bearer token does not approve: four eyes needs two named people.
        refused = await api.post("/api/notices/api-draft/actions/approve", json={"by": "alice"})
        assert refused.status_code == 403 and "signed-in person" in refused.json()["error"]

    # Roles: a viewer reads but does not act; an operator does not approve. A signed-in session
    # sends its CSRF token in a header.
    vera = await web_stack.signed_in("vera")
    alice = await web_stack.signed_in("alice")
    bob = await web_stack.signed_in("bob")
    for http in (vera, alice, bob):
        http.headers["X-CSRF-Token"] = csrf_of((await http.get("/")).text)
    try:
        # `by` is the caller's identity, whatever the payload says: alice wrote api-draft, and
        # bob's approval in her name is bob's, so four eyes holds and it is accepted.
        approved = await bob.post("/api/notices/api-draft/actions/approve", json={"by": "alice"})
        assert approved.status_code == 200, approved.text
        await settled_read_models(web_stack, "api-draft", approved_by="bob")
        bodies.append(approved.text)
        refused = await vera.post(
            "/api/notices/api-act/actions/opt_in", json={"customer_id": "acme"}
        )
        assert refused.status_code == 403
        assert refused.json()["error"] == "opt_in needs the operator role; you are viewer"
        refused = await alice.post("/api/notices/api-act/actions/cancel", json={"reason": "x"})
        assert refused.status_code == 403 and "approver role" in refused.json()["error"]
        resolved = await alice.post(
            "/api/notices/api-act/actions/resolve_objection",
            json={"customer_id": "acme", "outcome": "excluded"},
        )
        assert resolved.status_code == 200 and resolved.json()["status"] == "accepted"
        by = await web_stack.pool.fetchval(
            "SELECT count(*) FROM intake WHERE notice_id = 'api-act' AND channel = 'api'"
            " AND action = 'resolve_objection' AND status = 'accepted'"
        )
        assert by == 1
        bodies.append(resolved.text)
    finally:
        await vera.aclose()
        await alice.aclose()
        await bob.aclose()
    assert_no_personal_data(*bodies)
