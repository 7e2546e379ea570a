"""The customer's action page lists the sub-processors in use for its organisation now, derived
from the events (noticeflow/annex.py): another notice's switch-on shows, a switch-off of it
hides it, another customer's does not show, and a hostile name is escaped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from markupsafe import escape

from noticeflow import records
from noticeflow.domain import events as ev
from tests import helpers
from tests.web.test_action_pages import notice_spec, path_of

HOSTILE = '<img src=x onerror="alert(1)"> Ltd'


async def test_the_action_page_lists_what_is_in_use_for_the_customer(web_stack):
    earlier = datetime.now(UTC) - timedelta(days=30)
    other = helpers.notice(
        earlier, notice_id="annex-web-other", subprocessor=HOSTILE, purpose="Backups of tickets"
    )
    stream = "notice-annex-web-other"

    async def record(key: str, event: ev.Event, at: datetime) -> None:
        async with web_stack.pool.acquire() as connection, connection.transaction():
            await records.record_one(connection, stream, key, event, at)

    created = ev.NoticeCreated(spec=other, author="alice", text_sha256=other.text_sha256())
    await record("created", created, earlier)
    on = ev.SubprocessorEnabled(customer_id="acme", subprocessor=HOSTILE, because="opted_in")
    await record("on-acme", on, earlier + timedelta(days=1))
    off = ev.SubprocessorDisabled(customer_id="globex", subprocessor=HOSTILE, because="excluded")
    on_globex = ev.SubprocessorEnabled(customer_id="globex", subprocessor=HOSTILE, because="x")
    await record("on-globex", on_globex, earlier + timedelta(days=1))
    await record("off-globex", off, earlier + timedelta(days=2))

    notice = notice_spec("web-annex")
    await web_stack.notice(notice)
    async with web_stack.http() as http:
        acme = await http.get(path_of(web_stack, web_stack.links("acme", "object")[0]))
        globex = await http.get(path_of(web_stack, web_stack.links("globex", "object")[0]))
    assert acme.status_code == 200 and globex.status_code == 200
    assert "Sub-processors in use for your organisation" in acme.text
    assert str(escape(HOSTILE)) in acme.text
    assert "<img src=x" not in acme.text and "<img src=x" not in globex.text
    assert "Backups of tickets" in acme.text
    assert (earlier + timedelta(days=1)).strftime("%Y-%m-%d") in acme.text
    # globex: switched off again; the notice being decided now is not in use for anyone yet
    assert "Backups of tickets" not in globex.text
    assert "None of the sub-processors our notices announced is in use" in globex.text
