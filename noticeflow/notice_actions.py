"""Who did an action about a notice as a whole (approve, postpone, cancel), and why — read from its
receipt in the intake, so that names and free text never travel through Temporal.

The workflow judges these actions itself, but it sees only what the rules need: the receipt id,
the new effective date of a postponement, and two facts computed here from the records (is the
person the notice's author? the person who approved it?). The activities that record the outcome
(events, mails, the receipt's reason) read the name and the reason from the receipt again.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from noticeflow.contracts import BY, ActionFacts
from noticeflow.domain.signals import same_person

ACTOR_FIELDS = ("by", "reason")  # read from the receipt: never through Temporal


def _payload(text: str | None) -> dict[str, Any]:
    try:
        loaded = orjson.loads(text or "null")
    except orjson.JSONDecodeError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


async def actor_details(
    connection: asyncpg.Connection | asyncpg.Pool, receipt_id: str
) -> dict[str, str]:
    """The person (`by`) and the free text (`reason`) of a notice action's receipt."""
    text = await connection.fetchval("SELECT payload FROM intake WHERE receipt_id = $1", receipt_id)
    payload = _payload(text)
    return {f: str(payload[f]) for f in ACTOR_FIELDS if isinstance(payload.get(f), str)}


async def with_actor(
    connection: asyncpg.Connection | asyncpg.Pool, data: dict[str, Any], receipt_id: str | None
) -> dict[str, Any]:
    """An event's data with who (and why) and the receipt id added from the receipt, if any."""
    if receipt_id is None:
        return data
    return {**data, **await actor_details(connection, receipt_id), "receipt_id": receipt_id}


async def facts(
    connection: asyncpg.Connection | asyncpg.Pool, notice_id: str, by: str
) -> ActionFacts:
    row = await connection.fetchrow(
        "SELECT author, approved_by FROM notices WHERE notice_id = $1", notice_id
    )
    author: str = (row["author"] if row else None) or ""
    approver: str = (row["approved_by"] if row else None) or ""
    return ActionFacts(
        by_is_author=bool(author) and same_person(author, by),
        by_is_approver=bool(approver) and same_person(approver, by),
    )


def workflow_payload(action: str, typed: Any) -> dict[str, Any]:
    """What of a notice action's payload the workflow may see: no names, no free text."""
    if action == "postpone":
        return {"effective_at": typed.effective_at.isoformat()}
    return {}


async def fill_names(
    connection: asyncpg.Connection | asyncpg.Pool, reason: str | None, receipt_id: str
) -> str | None:
    """``reason`` with the person put back where the workflow wrote {by} (the receipt is read
    only then)."""
    if reason is None or BY not in reason:
        return reason
    details = await actor_details(connection, receipt_id)
    return reason.replace(BY, details.get("by", "the same person"))
