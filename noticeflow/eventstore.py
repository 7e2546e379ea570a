"""The append-only event table. Event ids are deterministic, so a retried append is a no-op."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg

EVENT_NAMESPACE = uuid.UUID("6f1d2c1e-3f0b-4b47-9d55-6b0c8f3b7a10")


def event_id(stream_id: str, key: str) -> uuid.UUID:
    """The id of the event that step ``key`` of stream ``stream_id`` produces, however often it runs."""
    return uuid.uuid5(EVENT_NAMESPACE, f"{stream_id}/{key}")


def notice_stream(notice_id: str) -> str:
    return f"notice-{notice_id}"


async def append(
    connection: asyncpg.Connection | asyncpg.Pool,
    stream_id: str,
    key: str,
    event_type: str,
    data: dict[str, Any],
    occurred_at: datetime,
) -> bool:
    """Append one event; returns False when the event was already there."""
    status = await connection.execute(
        "INSERT INTO events (event_id, stream_id, event_type, data, occurred_at)"
        " VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT (event_id) DO NOTHING",
        event_id(stream_id, key),
        stream_id,
        event_type,
        json.dumps(data, default=str, sort_keys=True),
        occurred_at,
    )
    return bool(status.endswith(" 1"))
