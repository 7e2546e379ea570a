"""The per-customer list of sub-processors (and its annex), read from the event store.

The events are the truth: the list is :func:`noticeflow.domain.annex.in_use` over the customer's
``subprocessor_enabled`` / ``subprocessor_disabled`` events in the notice streams and those
notices' ``notice_created`` — not the records (``subprocessor_enablements``), which are a
projection of the same events. Events and stream heads are read in one repeatable-read
snapshot, so the heads returned pin exactly what the list was derived from: a reader can check
later, with ``noticeflow evidence verify --notice ID``, that each stream still has those events
up to that version.

Only ids and the notices' own words (no personal data) are read; an erased customer's list is
refused with the erasure's date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from jinja2 import Environment, PackageLoader

from noticeflow.domain.annex import (
    CREATED,
    DISABLED,
    ENABLED,
    NOTICE_STREAM_PREFIX,
    AnnexEvent,
    InUse,
    in_use,
)
from noticeflow.domain.errors import InputError
from noticeflow.domain.events import UPCASTERS

# The event types as literals, so that an index on the customer id of the switches alone
# (``WHERE event_type IN (...)``) can serve this query once the store is large.
_SWITCHES = (
    "SELECT stream_id, event_type, schema_version, data, occurred_at FROM events"
    f" WHERE event_type IN ('{ENABLED}', '{DISABLED}') AND starts_with(stream_id, $2)"
    " AND data::jsonb ->> 'customer_id' = $1 ORDER BY tx_id, position"
)
_CREATED = (
    "SELECT stream_id, event_type, schema_version, data, occurred_at FROM events"
    " WHERE event_type = $1 AND stream_id = ANY($2::text[]) ORDER BY tx_id, position"
)
_HEADS = (
    "SELECT stream_id, version, head_hash, head_signature IS NOT NULL AS signed"
    " FROM event_streams WHERE stream_id = ANY($1::text[]) ORDER BY stream_id"
)


@dataclass(frozen=True)
class Head:
    """A notice stream's head as read with the events: its version, hash and whether signed."""

    stream_id: str
    version: int
    head_hash: str
    signed: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "version": self.version,
            "head_hash": self.head_hash,
            "signed": self.signed,
        }


@dataclass(frozen=True)
class CustomerList:
    """The sub-processors in use for one customer at an instant, and what it was derived from."""

    customer_id: str
    at: datetime
    read_at: datetime
    subprocessors: list[InUse]
    heads: list[Head]

    def as_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "at": _iso(self.at),
            "read_at": _iso(self.read_at),
            "subprocessors": [entry.as_json() for entry in self.subprocessors],
            "heads": [head.as_json() for head in self.heads],
        }

    def empty_message(self) -> str:
        return f"no sub-processor from a notice is in use for {self.customer_id} on {_iso(self.at)}"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _event(row: asyncpg.Record) -> AnnexEvent:
    data = orjson.loads(row["data"])  # `json`: its text as written
    _, data = UPCASTERS.upcast(row["event_type"], row["schema_version"], data)
    return AnnexEvent(row["event_type"], data, row["occurred_at"], row["stream_id"])


async def _check_customer(connection: asyncpg.Connection, customer_id: str) -> None:
    erased_at = await connection.fetchval(
        "SELECT erased_at FROM customer_erasures WHERE customer_id = $1", customer_id
    )
    if erased_at is not None:
        raise InputError(
            f"customer {customer_id!r} was erased for good on {_iso(erased_at)}:"
            " no list is given for it"
        )
    known = await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM customers WHERE customer_id = $1)"
        " OR EXISTS (SELECT 1 FROM recipients WHERE customer_id = $1)",
        customer_id,
    )
    if not known:
        raise InputError(f"no customer {customer_id!r} (see `noticeflow customers list`)")


async def customer_list(pool: asyncpg.Pool, customer_id: str, at: datetime) -> CustomerList:
    """The sub-processors in use for ``customer_id`` at ``at``, from the events (InputError for
    an unknown or erased customer)."""
    async with (
        pool.acquire() as connection,
        connection.transaction(isolation="repeatable_read", readonly=True),
    ):
        await _check_customer(connection, customer_id)
        read_at = await connection.fetchval("SELECT now()")
        switches = [
            _event(row)
            for row in await connection.fetch(_SWITCHES, customer_id, NOTICE_STREAM_PREFIX)
        ]
        streams = sorted({event.stream_id for event in switches})
        created = [_event(row) for row in await connection.fetch(_CREATED, CREATED, streams)]
        heads = [
            Head(row["stream_id"], row["version"], bytes(row["head_hash"]).hex(), row["signed"])
            for row in await connection.fetch(_HEADS, streams)
        ]
    return CustomerList(
        customer_id=customer_id,
        at=at,
        read_at=read_at,
        subprocessors=in_use(customer_id, at, [*created, *switches]),
        heads=heads,
    )


def render_annex(listing: CustomerList) -> str:
    """The annex as one self-contained, printable HTML page (no external assets; the browser's
    print gives the PDF)."""
    env = Environment(loader=PackageLoader("noticeflow", "templates/annex"), autoescape=True)
    return env.get_template("annex.html.j2").render(
        listing=listing,
        at=_iso(listing.at),
        read_at=_iso(listing.read_at),
        entries=listing.subprocessors,
        since=lambda entry: _iso(entry.since),
        heads=listing.heads,
    )


def write_annex(listing: CustomerList, out: Path) -> None:
    """Write the annex to ``out`` (via a temporary file beside it, so no half-written annex)."""
    html = render_annex(listing)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(html, encoding="utf-8")
    temporary.replace(out)
