"""Authorisation modes per customer (issue 12), end to end on real parts (PostgreSQL, Temporal's
time-skipping server, SMTP): every mode (general, specific, dora) x notice type (ordinary,
opt-in) x customer answer (none, authorise, object, request changes, late) in two notices of 15
customers each. No customer is activated without the consent its own contract requires, a refused
answer is a recorded rejection with its reason, each mail says what silence means for that
customer, `notice show --json` gives each customer's mode, and the stream re-derives clean."""

from __future__ import annotations

import uuid
from datetime import timedelta
from email.message import Message
from typing import Any

import pytest

from noticeflow import projections, records, repository
from noticeflow.contracts import NoticeStatus
from noticeflow.domain.customers import parse_customers_csv
from noticeflow.domain.rules import Phase
from noticeflow.evidence import verify_database
from tests import helpers
from tests.workflows.test_notice_lifecycle import wait_for
from worker.main import build_worker, make_deps

MODES = ("general", "specific", "dora")
ANSWERS = ("none", "authorise", "object", "changes", "late")
PREFIX = {"general": "gen", "specific": "spec", "dora": "dora"}


def _customers_csv() -> str:
    lines = ["customer_id,name,region,services,contact_emails,timezone,authorisation"]
    for mode in MODES:
        for answer in ANSWERS:
            cid = f"{PREFIX[mode]}-{answer}"
            lines.append(f"{cid},{cid.title()},EU,assistant,privacy@{cid}.example,UTC,{mode}")
    return "\n".join(lines) + "\n"


# (verdict, activated, ground of the switch-on) per customer at the end, after ops resolved every
# case: timely objections upheld (excluded), requests for changes and late cases withdrawn.
OFF = False
ON = True
EXPECTED: dict[bool, dict[str, tuple[str, bool]]] = {
    False: {  # an ordinary notice
        "gen-none": ("activate", ON),  # silence is deemed acceptance
        "gen-authorise": ("activate", ON),  # the opt-in is refused: nothing to authorise
        "gen-object": ("excluded", OFF),
        "gen-changes": ("activate", ON),  # refused: only a dora contract requests changes
        "gen-late": ("activate", ON),  # a late objection does not hold it back
        "spec-none": ("declined", OFF),  # silence is refusal under specific authorisation
        "spec-authorise": ("activate", ON),
        "spec-object": ("excluded", OFF),
        "spec-changes": ("declined", OFF),  # refused, and still no authorisation
        "spec-late": ("declined", OFF),
        "dora-none": ("activate", ON),  # not objected to by the end of the period
        "dora-authorise": ("activate", ON),  # approved
        "dora-object": ("excluded", OFF),
        "dora-changes": ("activate", ON),  # held until ops resolved it (withdrawn), then on
        "dora-late": ("activate", ON),  # a late request does not hold it back
    },
    True: {  # an opt-in notice: everyone's consent is required
        "gen-none": ("declined", OFF),
        "gen-authorise": ("activate", ON),
        "gen-object": ("excluded", OFF),
        "gen-changes": ("declined", OFF),
        "gen-late": ("declined", OFF),
        "spec-none": ("declined", OFF),
        "spec-authorise": ("activate", ON),
        "spec-object": ("excluded", OFF),
        "spec-changes": ("declined", OFF),
        "spec-late": ("declined", OFF),
        "dora-none": ("declined", OFF),
        "dora-authorise": ("activate", ON),
        "dora-object": ("excluded", OFF),
        "dora-changes": ("declined", OFF),  # resolved, but no opt-in
        "dora-late": ("declined", OFF),
    },
}
GROUNDS = {
    False: {
        "gen-none": "deemed_acceptance",
        "gen-authorise": "deemed_acceptance",
        "gen-changes": "deemed_acceptance",
        "gen-late": "deemed_acceptance",
        "spec-authorise": "opted_in",
        "dora-none": "deemed_acceptance",
        "dora-authorise": "approved",
        "dora-changes": "objection_withdrawn",
        "dora-late": "deemed_acceptance",
    },
    True: {"gen-authorise": "opted_in", "spec-authorise": "opted_in", "dora-authorise": "opted_in"},
}
# What is refused, and the words of its recorded reason.
REFUSED = {
    False: {
        ("gen-authorise", "opt_in"): "has general authorisation (silence is deemed acceptance)",
        ("gen-changes", "request_changes"): "only a dora contract may request changes",
        ("spec-changes", "request_changes"): "only a dora contract may request changes",
    },
    True: {
        ("gen-changes", "request_changes"): "only a dora contract may request changes",
        ("spec-changes", "request_changes"): "only a dora contract may request changes",
    },
}


def _text(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError("no text part")


async def _answer(handle: Any, customer_id: str, answer: str, *, late: bool) -> None:
    if late:
        action = "request_changes" if customer_id.startswith("dora") else "object"
        await handle.signal(action, {"customer_id": customer_id, "reason": "Too late, sorry"})
        return
    if answer == "authorise":
        await handle.signal("opt_in", {"customer_id": customer_id, "by": "DPO"})
    elif answer == "object":
        await handle.signal("object", {"customer_id": customer_id, "reason": "Not with our data"})
    elif answer == "changes":
        await handle.signal(
            "request_changes", {"customer_id": customer_id, "reason": "EU hosting only, please"}
        )


@pytest.mark.parametrize("opt_in", [False, True], ids=["ordinary", "opt-in"])
async def test_each_mode_and_answer_gets_the_consent_its_contract_requires(
    time_skipping_env, pool, smtp_sink, opt_in: bool
) -> None:
    env = time_skipping_env
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    customers = parse_customers_csv(_customers_csv())
    ids = [c.customer_id for c in customers]
    async with build_worker(
        env.client, make_deps(pool, smtp_sink.url, "privacy@vendor.example"), task_queue
    ):
        now = await env.get_current_time()
        spec = helpers.notice(
            now, notice_id=f"modes-{'optin' if opt_in else 'ordinary'}", opt_in=opt_in,
            audience={"regions": ["EU"]},
        )  # fmt: skip
        await repository.upsert_customers(pool, customers)
        await repository.create_notice(pool, spec, "alice", now)
        handle = await helpers.start_notice_workflow(env.client, spec, task_queue)
        await handle.signal("approve", {"by": "bob"})
        await wait_for(handle, lambda s: s.phase is Phase.window_open and s.delivered == 15)

        # Each mail says what silence means for that customer.
        mails = {m["To"].split("@")[1].removesuffix(".example"): _text(m) for m in
                 smtp_sink.messages()}  # fmt: skip
        assert set(mails) == set(ids)
        if not opt_in:
            assert "we will take it that you accept" in mails["gen-none"]
            assert "your silence is a refusal" in mails["spec-none"]
            assert "will only be used for your organisation if you opt in" in mails["spec-none"]
            assert "request changes" in mails["dora-none"]
            assert "the change goes ahead" in mails["dora-none"]
            assert "your silence is a refusal" not in mails["gen-none"] + mails["dora-none"]
        else:
            for cid in ("gen-none", "dora-none", "spec-none"):
                assert "will only be used for your organisation if you opt in" in mails[cid]
            # a dora customer on an opt-in notice: opt in, object or request changes; silence
            # is refusal here (never "the change goes ahead")
            assert "the change goes ahead" not in mails["dora-none"]
            assert "deadline to opt in, object or request changes" in mails["dora-none"]

        await env.sleep(timedelta(days=5))
        for mode in MODES:
            for answer in ANSWERS[1:4]:
                await _answer(handle, f"{PREFIX[mode]}-{answer}", answer, late=False)
        await wait_for(handle, lambda s: s.pending_signals == 0)
        await env.sleep(timedelta(days=18))  # day 23: every 21-day deadline has passed
        for mode in MODES:
            await _answer(handle, f"{PREFIX[mode]}-late", "late", late=True)
        await wait_for(handle, lambda s: s.pending_signals == 0)
        await env.sleep(timedelta(days=4))  # day 27: past the effective date
        # Timely cases hold; late ones do not (but stay open for ops).
        await wait_for(handle, lambda s: s.phase is Phase.active and s.unsettled == 7)
        held = await _activated(pool, spec.notice_id)
        for cid in ("gen-object", "spec-object", "dora-object", "dora-changes"):
            assert not held[cid], cid  # a timely case holds activation, whatever the mode
        if not opt_in:
            assert held["gen-late"] and held["dora-late"] and not held["spec-late"]

        await projections.catch_up(pool)
        summary = await repository.notice_summary(pool, spec.notice_id)
        shown = {row["customer_id"]: row for row in summary["customers"]}
        assert {cid: shown[cid]["authorisation"] for cid in ids} == {
            c.customer_id: str(c.authorisation) for c in customers
        }
        assert shown["dora-changes"]["objection"] == {
            "status": "open", "timely": True, "request": "changes",
        }  # fmt: skip
        assert shown["dora-late"]["objection"]["request"] == "changes"
        assert not shown["dora-late"]["objection"]["timely"]
        assert shown["gen-object"]["objection"]["request"] == "objection"

        for mode in MODES:
            await handle.signal(
                "resolve_objection",
                {"customer_id": f"{PREFIX[mode]}-object", "outcome": "excluded", "by": "carol"},
            )
            await handle.signal(
                "resolve_objection",
                {"customer_id": f"{PREFIX[mode]}-late", "outcome": "withdrawn", "by": "carol"},
            )
        await handle.signal(
            "resolve_objection",
            {"customer_id": "dora-changes", "outcome": "withdrawn", "by": "carol"},
        )
        result: NoticeStatus = await handle.result()
        assert result.unsettled == 0

    rows = {
        r["customer_id"]: (r["verdict"], r["activated"])
        for r in await pool.fetch(
            "SELECT customer_id, verdict, activated FROM recipients WHERE notice_id = $1",
            spec.notice_id,
        )
    }
    assert rows == EXPECTED[opt_in]
    # Nobody on without the consent its contract requires: every specific customer on opted in.
    grounds = {
        r["customer_id"]: r["because"]
        for r in await pool.fetch(
            "SELECT data::jsonb ->> 'customer_id' AS customer_id, data::jsonb ->> 'because'"
            " AS because FROM events WHERE stream_id = $1 AND event_type = 'subprocessor_enabled'",
            f"notice-{spec.notice_id}",
        )
    }
    assert grounds == GROUNDS[opt_in]
    deemed = {
        r["customer_id"]
        for r in await pool.fetch(
            "SELECT data::jsonb ->> 'customer_id' AS customer_id FROM events"
            " WHERE stream_id = $1 AND event_type = 'deemed_acceptance'",
            f"notice-{spec.notice_id}",
        )
    }
    assert deemed == {c for c, g in GROUNDS[opt_in].items() if g == "deemed_acceptance"}

    refused = {
        (r["customer_id"], r["action"]): r["reason"]
        for r in await pool.fetch(
            "SELECT customer_id, action, reason FROM intake WHERE notice_id = $1"
            " AND status = 'rejected'",
            spec.notice_id,
        )
    }
    assert set(refused) == set(REFUSED[opt_in])
    for key, words in REFUSED[opt_in].items():
        assert words in refused[key], (key, refused[key])

    verification = await verify_database(pool, spec.notice_id)
    assert verification.ok, verification.problems
    live = await helpers.records_of(pool)
    await records.rebuild(pool)
    assert helpers.records_diff(live, await helpers.records_of(pool)) == []


async def _activated(pool: Any, notice_id: str) -> dict[str, bool]:
    return {
        r["customer_id"]: r["activated"]
        for r in await pool.fetch(
            "SELECT customer_id, activated FROM recipients WHERE notice_id = $1", notice_id
        )
    }


async def test_approvals_authorisations_and_their_withdrawal_follow_each_contract(
    time_skipping_env, pool, smtp_sink
) -> None:
    """A dora approval then a timely request for changes: held until resolved, then on as
    approved; a dora approval withdrawn after activation leaves it on (silence is acceptance
    there), a specific authorisation revoked switches it off; an erased customer's request for
    changes is a recorded rejection."""
    env = time_skipping_env
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    csv_text = (
        "customer_id,name,region,services,contact_emails,timezone,authorisation\n"
        "dora-a,A,EU,assistant,privacy@dora-a.example,UTC,dora\n"
        "dora-b,B,EU,assistant,privacy@dora-b.example,UTC,dora\n"
        "spec-c,C,EU,assistant,privacy@spec-c.example,UTC,specific\n"
        "dora-d,D,EU,assistant,privacy@dora-d.example,UTC,dora\n"
    )
    async with build_worker(
        env.client, make_deps(pool, smtp_sink.url, "privacy@vendor.example"), task_queue
    ):
        now = await env.get_current_time()
        spec = helpers.notice(now, notice_id="modes-combos", opt_in=False,
                              audience={"regions": ["EU"]})  # fmt: skip
        await repository.upsert_customers(pool, parse_customers_csv(csv_text))
        await repository.create_notice(pool, spec, "alice", now)
        handle = await helpers.start_notice_workflow(env.client, spec, task_queue)
        await handle.signal("approve", {"by": "bob"})
        await wait_for(handle, lambda s: s.phase is Phase.window_open and s.delivered == 4)
        await env.sleep(timedelta(days=2))
        for customer in ("dora-a", "dora-b", "spec-c"):
            await handle.signal("opt_in", {"customer_id": customer, "by": "DPO"})
        await wait_for(handle, lambda s: s.pending_signals == 0)
        await handle.signal(
            "request_changes", {"customer_id": "dora-a", "reason": "Only with EU hosting"}
        )
        await repository.erase_customer(pool, "dora-d")
        await handle.signal("request_changes", {"customer_id": "dora-d", "reason": "Hm"})
        await wait_for(handle, lambda s: s.pending_signals == 0 and s.open_objections == 1)
        await env.sleep(timedelta(days=25))  # day 27: past every deadline and the date
        # dora-a is held by its request; dora-d's rejected request held nothing (on, deemed).
        await wait_for(handle, lambda s: s.phase is Phase.active and s.unsettled == 1)
        on = await _activated(pool, spec.notice_id)
        assert on == {"dora-a": False, "dora-b": True, "spec-c": True, "dora-d": True}
        await handle.signal("revoke_opt_in", {"customer_id": "dora-b", "by": "DPO"})
        await handle.signal("revoke_opt_in", {"customer_id": "spec-c", "by": "DPO"})
        await handle.signal(
            "resolve_objection", {"customer_id": "dora-a", "outcome": "withdrawn", "by": "carol"}
        )
        result: NoticeStatus = await handle.result()
        assert result.unsettled == 0
    on = await _activated(pool, spec.notice_id)
    assert on == {"dora-a": True, "dora-b": True, "spec-c": False, "dora-d": True}
    because = {
        (r["customer_id"], r["event_type"]): r["because"]
        for r in await pool.fetch(
            "SELECT data::jsonb ->> 'customer_id' AS customer_id, event_type,"
            " data::jsonb ->> 'because' AS because FROM events WHERE stream_id = $1"
            " AND event_type IN ('subprocessor_enabled', 'subprocessor_disabled')",
            f"notice-{spec.notice_id}",
        )
    }
    assert because == {
        ("dora-a", "subprocessor_enabled"): "approved",
        ("dora-b", "subprocessor_enabled"): "approved",
        ("spec-c", "subprocessor_enabled"): "opted_in",
        ("spec-c", "subprocessor_disabled"): "opt_in_revoked",
        ("dora-d", "subprocessor_enabled"): "deemed_acceptance",
    }
    erased = await pool.fetchval(
        "SELECT reason FROM intake WHERE notice_id = $1 AND customer_id = 'dora-d'"
        " AND action = 'request_changes'",
        spec.notice_id,
    )
    assert "erased" in erased
    resolved = [m for m in smtp_sink.messages() if m["To"] == "privacy@dora-a.example"
                and "Your request for changes has been resolved" in str(m["Subject"])]  # fmt: skip
    assert resolved and "Your request for changes has been withdrawn" in _text(resolved[0])
    verification = await verify_database(pool, spec.notice_id)
    assert verification.ok, verification.problems


async def test_an_import_without_the_column_keeps_each_customers_mode(pool) -> None:
    """A routine contact update (a file without `authorisation`) must not downgrade a specific
    or dora contract to general; a blank cell in the column does mean general."""
    with_modes = (
        "customer_id,name,region,services,contact_emails,timezone,authorisation\n"
        "a,A,EU,x,a@a.example,UTC,specific\n"
        "b,B,EU,x,b@b.example,UTC,dora\n"
    )
    await repository.upsert_customers(pool, parse_customers_csv(with_modes))
    without = (
        "customer_id,name,region,services,contact_emails,timezone\n"
        "a,A,EU,x,new@a.example,UTC\n"
        "b,B,EU,x,b@b.example,UTC\n"
        "c,C,EU,x,c@c.example,UTC\n"
    )
    await repository.upsert_customers(pool, parse_customers_csv(without))
    modes = {r["customer_id"]: r["authorisation"] for r in await repository.list_customers(pool)}
    assert modes == {"a": "specific", "b": "dora", "c": "general"}
    blank = with_modes.splitlines()[0] + "\nb,B,EU,x,b@b.example,UTC,\n"
    await repository.upsert_customers(pool, parse_customers_csv(blank))
    modes = {r["customer_id"]: r["authorisation"] for r in await repository.list_customers(pool)}
    assert modes == {"a": "specific", "b": "general", "c": "general"}
