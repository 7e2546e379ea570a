"""The customer's action pages and acknowledgements in the customer's language (issue 14 item 5),
against the real stack (tests/web/conftest.py: Temporal dev server, PostgreSQL, SMTP sink, a worker
and `noticeflow web` over HTTP): a German customer follows the links of its German notice mail,
sees German pages with German dates, objects and opts in, and gets German acknowledgements; an
English customer's pages and mails are as they always were."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from noticeflow import control, repository
from noticeflow.domain import language as lang
from noticeflow.domain.customers import parse_customers_csv
from noticeflow.domain.deadlines import describe_instant
from noticeflow.web.actions import deadline_words
from tests.web.conftest import spec
from tests.web.test_action_pages import actions_offered, form_of, mail_to, path_of

GERMAN = (
    "customer_id,name,region,services,contact_emails,timezone,language\n"
    "stark,Stark GmbH,US,assistant,datenschutz@stark.example,Europe/Berlin,de\n"
)
# Words of our English wording that a German page or mail must not show (the vendor's own words,
# e.g. the notice's title and purpose, stay as written and are not looked at).
ENGLISH = re.compile(
    r"\b(Your deadline|Where you stand|What you can do|Nothing is recorded|We have recorded"
    r"|Received|On time|Accepted|Dear|Your objection|privacy team|receipt r-)\b"
)


def text_of(message: Any) -> str:
    return str(message.get_body(("plain",)).get_content())


def shown(page: str) -> str:
    """The page's visible words: no tags, no markup, entities decoded."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


async def receipt_row(stack: Any, receipt_id: str) -> Any:
    return await stack.pool.fetchrow(
        "SELECT received_at, status FROM intake WHERE receipt_id = $1", receipt_id
    )


async def test_a_german_customer_objects_and_opts_in_in_german_an_english_one_as_ever(web_stack):
    await repository.upsert_customers(web_stack.pool, parse_customers_csv(GERMAN))
    notice = spec("web-lang", effective_at=(datetime.now(UTC) + timedelta(days=35)).isoformat())
    await web_stack.notice(notice)  # an opt-in notice: both links in each mail
    recipients = {
        row["customer_id"]: row
        for row in await web_stack.pool.fetch(
            "SELECT customer_id, deadline, language, timezone FROM recipients WHERE notice_id = $1",
            notice.notice_id,
        )
    }
    assert recipients["stark"]["language"] == "de" and recipients["acme"]["language"] == "en"
    deadline = recipients["stark"]["deadline"]

    async with web_stack.http() as http:
        # --- the German customer: the object page --------------------------------------------
        page_path = path_of(web_stack, web_stack.links("stark", "object")[0])
        page = await http.get(page_path)
        assert page.status_code == 200, page.text
        assert page.text.count('<html lang="de">') == 1
        text = shown(page.text)
        assert f"Ihre Frist: {lang.deadline('de', deadline, 'Europe/Berlin')}" in text
        assert ", 24:00 Uhr (Europe/Berlin)" in text  # Babel's German date, end of the last day
        last_day = (deadline.astimezone(lang.ZoneInfo("Europe/Berlin")) - timedelta(days=1)).date()
        assert f"{last_day.day}. " in text and "Was Ihr Schweigen bedeutet" in text
        assert "Sie haben nicht widersprochen." in text and "Stark GmbH" in text
        assert "Das ist in " in text  # the countdown in German ("in 23 Tagen")
        assert not ENGLISH.search(text), ENGLISH.search(text)
        # The notice translated, and its English text of record below it.
        assert "Zweck: " + notice.purpose in text and notice.text() in html.unescape(page.text)
        assert actions_offered(page.text) == {"object"}

        form = form_of(page.text, "object")
        empty = await http.post(page_path, data={**form, "reason": "   "})
        assert empty.status_code == 422 and '<html lang="de">' in empty.text
        assert "Die Begründung darf nicht leer sein." in shown(empty.text)
        too_long = await http.post(page_path, data={**form, "reason": "x" * 100_001})
        assert "zu lang: 100.001 Zeichen, höchstens 100.000" in shown(too_long.text)
        posted = await http.post(page_path, data={**form, "reason": "Wir widersprechen."})
        assert posted.status_code == 303, posted.text
        receipt_id = posted.headers["location"].rsplit("/", 1)[1]
        receipt = await http.get(posted.headers["location"])
        assert receipt.status_code == 200 and '<html lang="de">' in receipt.text
        text = shown(receipt.text)
        assert "Widerspruch eingegangen" in text and "Fristgerecht" in text
        assert "Angenommen" in text and receipt_id in text
        row = await receipt_row(web_stack, receipt_id)
        assert lang.instant("de", row["received_at"], "Europe/Berlin") in text
        assert not ENGLISH.search(text), ENGLISH.search(text)

        # Its acknowledgement: German throughout, the receipt time a German date.
        acks = await mail_to(web_stack, "stark", "Wir haben Ihren Widerspruch erhalten")
        assert len(acks) == 1
        mail = text_of(acks[0])
        assert mail.lstrip("\n").startswith("Guten Tag Stark GmbH,\n")
        when = lang.instant("de", row["received_at"], "Europe/Berlin")
        assert re.search(r"\d+\. \w+ \d{4}, \d\d:\d\d(?::\d\d)? Uhr ", when), when
        assert (
            f"Ihr Widerspruch gegen {notice.subprocessor} ist am {when} eingegangen und als"
            f" fristgerecht erfasst (Beleg {receipt_id})."
        ) in mail
        assert "Unser Datenschutzteam wird sich mit Ihnen in Verbindung setzen" in mail
        assert not ENGLISH.search(mail), ENGLISH.search(mail)
        assert '<html lang="de"' in acks[0].get_body(("html",)).get_content()

        # The page now shows the open case, in German, with the receipt.
        page = await http.get(page_path)
        text = shown(page.text)
        assert "Sie haben widersprochen" in text and receipt_id in text
        assert "angenommen" in text

        # --- the German customer: the opt-in page and its receipt ---------------------------
        opt_path = path_of(web_stack, web_stack.links("stark", "opt_in")[0])
        page = await http.get(opt_path)
        assert '<html lang="de">' in page.text and actions_offered(page.text) == {"opt_in"}
        text = shown(page.text)
        assert f"{notice.subprocessor} zustimmen" in text and "Sie haben nicht zugestimmt" in text
        posted = await http.post(opt_path, data=form_of(page.text, "opt_in"))
        assert posted.status_code == 303
        receipt = await http.get(posted.headers["location"])
        text = shown(receipt.text)
        assert "Zustimmung eingegangen" in text and "Angenommen" in text
        acks = await mail_to(web_stack, "stark", "Ihre Zustimmung ist erfasst")
        assert acks and not ENGLISH.search(text_of(acks[0]))
        page = await http.get(opt_path)
        assert actions_offered(page.text) == {"revoke_opt_in"}
        assert "Sie haben zugestimmt" in shown(page.text)
        assert "Meine Zustimmung widerrufen" in shown(page.text)

        # --- the English customer: pages and mail as they always were ------------------------
        page_path = path_of(web_stack, web_stack.links("acme", "object")[0])
        page = await http.get(page_path)
        assert '<html lang="en">' in page.text
        text = html.unescape(page.text)
        acme_deadline = recipients["acme"]["deadline"]
        assert f"Your deadline: {deadline_words(acme_deadline, 'America/New_York')}" in text
        assert "Where you stand" in text and "Ihre Frist" not in text
        form = form_of(page.text, "object")
        posted = await http.post(page_path, data={**form, "reason": "We object."})
        receipt_id = posted.headers["location"].rsplit("/", 1)[1]
        receipt = await http.get(posted.headers["location"])
        assert '<html lang="en">' in receipt.text and "Objection received" in receipt.text
        row = await receipt_row(web_stack, receipt_id)
        acks = await mail_to(web_stack, "acme", "received your objection")
        assert acks
        mail = text_of(acks[0])
        # The acknowledgement's paragraphs as noticeflow wrote them before the catalogue.
        when = describe_instant(row["received_at"], "America/New_York")
        assert mail.lstrip("\n").startswith("Dear Acme Corp,\n\nWe have received your objection.")
        assert (
            f"Your objection to {notice.subprocessor} was received on {when} and is recorded as"
            f" timely (receipt {receipt_id}).\n\nOur privacy team will contact you to resolve it."
            " Until then the sub-processor will not be used for your organisation.\n\n"
        ) in mail
        assert str(acks[0]["Subject"]) == (
            f"We have received your objection — {notice.subprocessor} ({notice.notice_id})"
        )

        # --- cancelled: the German page says so, with no deadline and no "silence" ---------------
        cancelled, _ = await control.submit(
            web_stack.client, web_stack.pool, notice.notice_id, "cancel",
            {"reason": "Plans changed.", "by": "bob"}, task_queue=web_stack.task_queue,
        )  # fmt: skip
        assert cancelled.status == "accepted", cancelled
        page = await http.get(path_of(web_stack, web_stack.links("stark", "object")[0]))
        text = shown(page.text)
        assert "Diese Mitteilung wurde zurückgezogen." in text
        assert "Keine mehr: Diese Mitteilung wurde zurückgezogen." in text
        assert "Was Ihr Schweigen bedeutet" not in text and "Das ist in " not in text
        assert not ENGLISH.search(text), ENGLISH.search(text)
