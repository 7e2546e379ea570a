"""Render a notice's mail for one customer without sending it (`noticeflow notice preview`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from noticeflow import repository
from noticeflow.crypto import Field, load_keys, open_sealed
from noticeflow.domain.deadlines import WindowUnit, customer_deadline
from noticeflow.domain.errors import InputError
from noticeflow.domain.notice import NoticeSpec
from noticeflow.domain.render import mail_context
from noticeflow.links import LinkSigner
from noticeflow.mail import MailRenderer


async def preview_notice(
    pool: asyncpg.Pool,
    notice_id: str,
    customer_id: str,
    renderer: MailRenderer,
    links: LinkSigner,
) -> dict[str, Any]:
    notice = await repository.notice_row(pool, notice_id)
    spec = NoticeSpec.model_validate_json(notice["spec"])
    erased_at = await pool.fetchval(
        "SELECT erased_at FROM customer_erasures WHERE customer_id = $1", customer_id
    )
    # Before "no customer" (its customers row is deleted; a recipient's name and addresses are
    # gone): a preview would say there is no such customer, or show "[erased]".
    if erased_at is not None:
        raise InputError(
            f"customer {customer_id!r} was erased on {erased_at:%Y-%m-%d}: there is no mail to"
            " preview, as an erased customer is never mailed again"
        )
    row = await pool.fetchrow(
        "SELECT name, timezone, window_days, window_unit, country, authorisation, language,"
        " deadline FROM recipients"
        " WHERE notice_id = $1 AND customer_id = $2",
        notice_id,
        customer_id,
    ) or await pool.fetchrow(
        "SELECT name, timezone, window_days, window_unit, country, authorisation, language,"
        " NULL::timestamptz AS deadline"
        " FROM customers WHERE customer_id = $1",
        customer_id,
    )
    if row is None:
        raise InputError(f"no customer {customer_id!r}")
    keys = await load_keys(pool, [customer_id])
    key = keys.get(customer_id)
    contacts = [
        open_sealed(key, Field.CONTACT_EMAIL, r["email"])
        for r in await pool.fetch(
            "SELECT email FROM customer_contacts WHERE customer_id = $1 ORDER BY position",
            customer_id,
        )
    ]
    deadline = row["deadline"] or customer_deadline(
        datetime.now(UTC),
        spec.objection_window,
        row["timezone"],
        row["window_days"],
        WindowUnit(row["window_unit"] or "calendar"),
        country=row["country"],
    )
    action_links = links.links_for(notice_id, customer_id, deadline, spec.effective_at)
    context = mail_context(
        spec, row["timezone"], deadline, action_links, row["authorisation"], row["language"]
    )
    context |= {
        "customer_name": open_sealed(key, Field.CUSTOMER_NAME, row["name"]),
        "customer_id": customer_id,
    }
    subject, text, html = renderer.render("notice", context)
    return {
        "notice_id": notice_id,
        "customer_id": customer_id,
        "to": contacts,
        "subject": subject,
        "deadline": deadline,
        "deadline_is_projected": row["deadline"] is None,
        "text": text,
        "html": html,
    }
