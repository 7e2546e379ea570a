"""SQL shared by the services: reading recipients and contacts, counts, switching on and off."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from noticeflow import eventstore, records
from noticeflow.contracts import NoticeTotals
from noticeflow.crypto import ERASED, Field, load_keys
from noticeflow.domain import events
from noticeflow.domain.notice import NoticeSpec
from noticeflow.domain.rules import ChangeKind
from noticeflow.mailer import Recipient

AUDIENCE_FILTER = (
    "(cardinality($1::text[]) = 0 OR c.region = ANY($1::text[]))"
    " AND (cardinality($2::text[]) = 0 OR c.services && $2::text[])"
    " AND (cardinality($3::text[]) = 0 OR c.customer_id = ANY($3::text[]))"
    # A material change ($4: its sub-processor) re-terms the customers it is in use for; one
    # the records know nothing of (in use before noticeflow) goes to everyone the filter selects.
    " AND ($4::text IS NULL OR NOT EXISTS (SELECT 1 FROM subprocessor_enablements k"
    "   WHERE k.subprocessor = $4) OR EXISTS (SELECT 1 FROM subprocessor_enablements k"
    "   WHERE k.subprocessor = $4 AND k.customer_id = c.customer_id AND k.enabled))"
)


def audience_args(spec: NoticeSpec) -> list[Any]:
    audience = spec.audience
    in_use = spec.subprocessor if spec.kind is ChangeKind.material_change else None
    return [list(audience.regions), list(audience.services), list(audience.customers), in_use]


async def read_totals(pool: asyncpg.Pool | asyncpg.Connection, notice_id: str) -> NoticeTotals:
    row = await pool.fetchrow(
        "SELECT count(*) AS audience,"
        " count(*) FILTER (WHERE delivery = 'delivered') AS delivered,"
        " count(*) FILTER (WHERE delivery = 'undelivered') AS undelivered,"
        " count(*) FILTER (WHERE activated) AS activated,"
        " count(*) FILTER (WHERE opted_in) AS opted_in,"
        " count(*) FILTER (WHERE NOT settled) AS unsettled,"
        " max(deadline) AS window_closes_at,"
        " (SELECT count(*) FROM objections o WHERE o.notice_id = $1 AND o.status = 'open')"
        "   AS open_objections"
        " FROM recipients WHERE notice_id = $1",
        notice_id,
    )
    return NoticeTotals(
        audience_size=row["audience"],
        delivered=row["delivered"],
        undelivered=row["undelivered"],
        open_objections=row["open_objections"],
        activated=row["activated"],
        unsettled=row["unsettled"],
        window_closes_at=row["window_closes_at"],
        opted_in=row["opted_in"],
    )


async def load_recipients(
    pool: asyncpg.Pool | asyncpg.Connection, notice_id: str, customer_ids: list[str]
) -> dict[str, Recipient]:
    """Recipients with the contacts of their latest snapshot generation."""
    rows = await pool.fetch(
        "SELECT r.customer_id, r.name, r.timezone, r.language, rc.position, rc.email"
        " FROM recipients r JOIN recipient_contacts rc USING (notice_id, customer_id)"
        " WHERE r.notice_id = $1 AND r.customer_id = ANY($2::text[]) AND rc.generation = ("
        "   SELECT max(generation) FROM recipient_contacts x"
        "   WHERE x.notice_id = r.notice_id AND x.customer_id = r.customer_id)"
        " ORDER BY r.customer_id, rc.position",
        notice_id,
        customer_ids,
    )
    keys = await load_keys(pool, {row["customer_id"] for row in rows})
    found: dict[str, Recipient] = {}
    for row in rows:
        customer_id = row["customer_id"]
        key = keys.get(customer_id)
        if key is None:  # erased: nobody left to mail
            continue
        email = key.unseal(Field.CONTACT_EMAIL, row["email"])
        if email == ERASED:  # blanked or sealed under a key deleted since: nobody to mail
            continue
        name = key.unseal(Field.CUSTOMER_NAME, row["name"])
        recipient = found.setdefault(
            customer_id, Recipient(customer_id, name, row["timezone"], [], key, row["language"])
        )
        recipient.contacts.append((row["position"], email))
    return found


async def switch_subprocessor(
    connection: asyncpg.Connection,
    notice_id: str,
    subprocessor: str,
    customer_id: str,
    enabled: bool,
    at: datetime,
    because: str,
) -> None:
    """Record that the sub-processor is now on (or off) for one customer: the event, and its
    projection (the customer's row for the notice and its enablement, noticeflow/records.py)."""
    await records.record_one(
        connection,
        eventstore.notice_stream(notice_id),
        f"{'enable' if enabled else 'disable'}/{customer_id}/{at.isoformat()}",
        (events.SubprocessorEnabled if enabled else events.SubprocessorDisabled)(
            customer_id=customer_id, subprocessor=subprocessor, because=because
        ),
        at,
    )


async def switch_off(
    connection: asyncpg.Connection,
    notice_id: str,
    subprocessor: str,
    customer_id: str,
    at: datetime,
    because: str,
) -> None:
    """An activated customer's switch-off (its row and enablement follow from the event)."""
    await switch_subprocessor(connection, notice_id, subprocessor, customer_id, False, at, because)
