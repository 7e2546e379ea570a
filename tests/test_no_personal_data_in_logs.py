"""No personal data in logs (issue 10; rule 13): a real mailing against a real SMTP server whose
replies echo the recipient's address and name — as relays do — logs ids, counts, codes and
enhanced statuses only; the ledger and the delivery events keep the reply's code and status in
clear and its text sealed.

The server here is aiosmtpd with a handler that refuses one recipient for good (550, echoing its
address and the customer's name) and defers another (451, the same) every time; everything else
is accepted like the sink does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from structlog.testing import capture_logs
from temporalio.testing import ActivityEnvironment

from activities.sending import SendingActivities
from noticeflow import repository
from noticeflow.contracts import AudienceRequest, SendRequest
from noticeflow.crypto import is_sealed
from noticeflow.mail import TemporarySmtpError
from noticeflow.sink import MailDirHandler, free_port
from tests import helpers
from worker.main import make_deps

REFUSED = "jane.doe@doe-consulting.example"
DEFERRED = "max.mustermann@mustermann.example"
CSV = """customer_id,name,region,services,contact_emails,timezone,window_days,window_unit
acme,Acme Corp,US,assistant,privacy@acme.example,America/New_York,,
doe,Jane Doe Consulting,US,assistant,jane.doe@doe-consulting.example,Europe/London,,
muster,Max Mustermann Beratung,US,assistant,max.mustermann@mustermann.example,Europe/Berlin,,
"""
# What the server says: the address, the customer's name, and words only the reply carries.
REFUSAL = f"550 5.1.1 <{REFUSED}>: Jane Doe Consulting has no mailbox here (zebra-refusal)"
DEFERRAL = f"451 4.2.1 <{DEFERRED}>: Max Mustermann Beratung over quota (zebra-deferral)"
SECRETS = [
    REFUSED, DEFERRED, "jane.doe", "max.mustermann", "Jane Doe", "Max Mustermann",
    "Mustermann Beratung", "Doe Consulting", "zebra-refusal", "zebra-deferral", "no mailbox here",
    "over quota",
]  # fmt: skip


class EchoingRelay(MailDirHandler):
    """Refuses REFUSED for good and DEFERRED every time, echoing address and name."""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.strip("<>").lower() == REFUSED:
            return REFUSAL
        if address.strip("<>").lower() == DEFERRED:
            return DEFERRAL
        return await super().handle_RCPT(server, session, envelope, address, options)


@pytest.fixture
def relay(tmp_path):
    port = free_port()
    controller = Controller(EchoingRelay(tmp_path / "mail"), hostname="127.0.0.1", port=port)
    controller.start()
    yield f"smtp://127.0.0.1:{port}"
    controller.stop()


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret.lower() in text.lower()]


async def test_a_mailing_with_replies_that_echo_address_and_name_logs_none_of_them(
    pool, relay, caplog
):
    caplog.set_level(logging.DEBUG)
    deps = make_deps(pool, relay, "privacy@vendor.example", smtp_give_up_after=timedelta(0))
    now = datetime.now(UTC)
    spec = helpers.notice(now, audience={})
    await repository.upsert_customers(pool, helpers.customers(CSV))
    await repository.create_notice(pool, spec, "alice", now)
    env, sending = ActivityEnvironment(), SendingActivities(deps)
    beats: list[object] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    failures: list[str] = []
    with capture_logs() as logs:
        structlog.get_logger("test").info("capturing")  # the capture works
        await env.run(sending.snapshot_audience, AudienceRequest(spec=spec, at=now))
        request = SendRequest(spec=spec, at=now)
        # First run: muster's contact only gets 451s (held, the activity fails to be retried);
        # the second run gives it up (give_up_after 0), so every path that logs is taken.
        for _ in range(3):
            try:
                await env.run(sending.send_notices, request)
                break
            except TemporarySmtpError as error:
                failures.append(str(error))
                env.info = dataclasses.replace(env.info, heartbeat_details=[])
    assert failures, "the deferral path was not taken"
    assert await helpers.ledger(pool, "status = 'failed'"), "the refusal path was not taken"

    events = [e["event"] for e in logs]
    assert {"mail refused", "mail deferred", "mail given up: only temporary replies"} <= set(
        events
    ), events
    # Every stdlib log line of this process too (temporalio, asyncpg, ...), at DEBUG — except the
    # relay's own ("mail.log": aiosmtpd, the server we talk to, which logs the envelope).
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))
    everything = json.dumps(logs, default=str) + ours + json.dumps(failures)
    everything += json.dumps(beats, default=str)
    assert not leaked(everything), leaked(everything)
    # ... while the lines still say what happened: codes and enhanced statuses.
    refused = next(e for e in logs if e["event"] == "mail refused")
    assert (refused["customer_id"], refused["smtp_code"], refused["smtp_status"]) == (
        "doe", 550, "5.1.1",
    )  # fmt: skip
    deferred = next(e for e in logs if e["event"] == "mail deferred")
    assert (deferred["smtp_code"], deferred["smtp_status"]) == (451, "4.2.1")
    assert all("451 4.2.1" in failure for failure in failures)

    # The ledger and the delivery events: code and status in clear, the text sealed.
    rows = [dict(r) for r in await pool.fetch("SELECT * FROM deliveries ORDER BY customer_id")]
    assert not leaked(json.dumps(rows, default=str))
    by_customer = {r["customer_id"]: r for r in rows}
    assert (by_customer["doe"]["smtp_code"], by_customer["doe"]["smtp_status"]) == (550, "5.1.1")
    assert (by_customer["muster"]["smtp_code"], by_customer["muster"]["smtp_status"]) == (
        451, "4.2.1",
    )  # fmt: skip
    assert all(is_sealed(r["smtp_text"]) and r["smtp_reply"] is None for r in rows)
    stored = await pool.fetch(
        "SELECT event_type, data::text AS data FROM events"
        " WHERE event_type IN ('notice_delivered', 'notice_undelivered')"
    )
    assert len(stored) == 3
    assert not leaked(json.dumps([dict(e) for e in stored]))
    for event in stored:
        for contact in json.loads(event["data"])["contacts"]:
            assert set(contact) == {
                "position", "message_id", "status", "smtp_code", "smtp_status", "smtp_text", "at",
                "text_sha256",
            }  # fmt: skip
            assert is_sealed(contact["smtp_text"])
    # The texts are there for those with the key (scrubbed of the address; the name stays).
    [doe] = await helpers.ledger(pool, "customer_id = 'doe'")
    assert doe["reply"] == (
        "550 5.1.1 <<address>>: Jane Doe Consulting has no mailbox here (zebra-refusal)"
    )
