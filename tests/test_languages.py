"""Languages (issue 14 item 5): every language has every template and every message; the English
mails are byte for byte what they were; the CSV's ``language`` column is validated with the
file's other problems; and, on real parts (PostgreSQL, the sending activities, an SMTP sink), a
German customer gets a German notice with a German date and a German calendar event, an English
customer the English mail as before, the audience snapshot hashes as before for English
customers, and erasure is unaffected."""

from __future__ import annotations

import hashlib
import json
import re
import string
from datetime import UTC, datetime, timedelta
from email.message import Message
from importlib import resources
from typing import Any

import icalendar
import pytest
from temporalio.testing import ActivityEnvironment

from activities.sending import SendingActivities
from noticeflow import records, repository
from noticeflow.contracts import AudienceRequest, SendRequest
from noticeflow.domain import language as lang
from noticeflow.domain import render
from noticeflow.domain.customers import parse_customers_csv
from noticeflow.domain.errors import InputError
from noticeflow.domain.notice import parse_notice
from noticeflow.evidence import verify_database
from noticeflow.mail import MailRenderer
from tests import helpers
from worker.main import make_deps

# The mails a customer gets (subscribers' mails are not a customer's: they have no language).
CUSTOMER_TEMPLATES = ("notice", "update")


def _fields(pattern: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(pattern) if name}


# --- every language has everything --------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(lang.LANGUAGES))
def test_every_language_has_every_message_with_the_same_fields(code):
    english, words = lang.MESSAGES[lang.DEFAULT], lang.MESSAGES[code]
    assert sorted(words) == sorted(english), "keys missing or extra"
    differ = {k: (_fields(english[k]), _fields(v)) for k, v in words.items()}
    # A translation may leave a field out (German counts days with ``days_text``), never add one.
    assert {k: f for k, f in differ.items() if not f[1] <= (f[0] | {"days_text"})} == {}


@pytest.mark.parametrize("code", sorted(lang.LANGUAGES))
def test_every_language_has_every_customer_template(code):
    folder = resources.files("noticeflow") / "templates" / "mail"
    if code != lang.DEFAULT:
        folder = folder / code
    for name in CUSTOMER_TEMPLATES:
        for suffix in (".txt.j2", ".html.j2"):
            assert (folder / f"{name}{suffix}").is_file(), f"{code}: {name}{suffix}"


def test_there_are_no_catalogues_or_template_folders_without_their_language():
    folder = resources.files("noticeflow") / "templates" / "mail"
    folders = {entry.name for entry in folder.iterdir() if entry.is_dir() and entry.name[0] != "_"}
    assert folders == set(lang.LANGUAGES) - {lang.DEFAULT}
    assert set(lang.MESSAGES) == set(lang.LANGUAGES)


# --- English as it always was -------------------------------------------------------------------

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
# The SHA-256 of every English rendering below (6 kinds x 3 timezones x 3 authorisation modes x 3
# deadlines, the notice texts and the silence sentences), taken from the code before languages.
ENGLISH_BEFORE_LANGUAGES = "99cf72c81908b1a0b72a52339d6f7a5638b7452dbe66bf599ef133bcb5694e36"


def _removal() -> Any:
    data = helpers.notice(NOW, opt_in=False).model_dump(mode="json", exclude_none=True)
    data.pop("objection_window", None)
    data.pop("reminder_before", None)
    return parse_notice({**data, "kind": "removal"})


def _english_renderings(language: str | None) -> str:
    specs = {
        "addition": helpers.notice(NOW),
        "addition_plain": helpers.notice(NOW, opt_in=False, body="Extra words here."),
        "replacement": helpers.notice(
            NOW, kind="replacement", replaces="Anthropic, PBC", opt_in=False
        ),
        "removal": _removal(),
        "material": helpers.notice(
            NOW,
            kind="material_change",
            opt_in=False,
            previous={"purpose": "old", "services": ["x", "y"]},
        ),
        "hours": helpers.notice(NOW, opt_in=False, objection_window="PT26H"),
    }
    out: dict[str, Any] = {}
    renderer = MailRenderer()
    links = {"object_url": "https://x/o", "opt_in_url": "https://x/i"}
    for name, spec in specs.items():
        out[name + ":text"] = spec.text()
        for tz in ("UTC", "Europe/Berlin", "America/New_York"):
            for mode in ("general", "specific", "dora"):
                for deadline in (
                    datetime(2027, 1, 1, 5, 0, tzinfo=UTC),
                    datetime(2026, 12, 21, 14, 30, tzinfo=UTC),
                    None,
                ):
                    kwargs = {} if language is None else {"language": language}
                    context = render.mail_context(spec, tz, deadline, links, mode, **kwargs)
                    context.update(customer_name="Acme", customer_id="acme")
                    out[f"{name}:{tz}:{mode}:{deadline}"] = list(renderer.render("notice", context))
        for mode in ("general", "specific", "dora"):
            for opt in (True, False):
                out[f"{name}:silence:{mode}:{opt}"] = render.silence_words(
                    spec.subprocessor, opt, mode
                )
    return json.dumps(out, sort_keys=True, default=str) + "\n"


@pytest.mark.parametrize("language", [None, "en", "en-GB", "en-US"])
def test_english_mails_are_byte_for_byte_what_they_were(language):
    rendered = _english_renderings(language)
    assert hashlib.sha256(rendered.encode()).hexdigest() == ENGLISH_BEFORE_LANGUAGES


def test_the_notice_text_and_its_hash_stay_the_english_ones_in_german():
    spec = helpers.notice(NOW)
    context = render.mail_context(spec, "Europe/Berlin", None, {}, "general", "de")
    assert context["original_text"] == spec.text()
    assert context["text_sha256"] == spec.text_sha256()
    assert context["notice_text"] == render.render_notice_text(spec, "de") != spec.text()
    # Our words translated, the vendor's own as written.
    assert "Zweck: " + spec.purpose in context["notice_text"]
    assert "Widerspruchsfrist: 21 Tage ab dem Tag nach Zugang" in context["notice_text"]


def test_our_default_how_to_object_is_translated_the_vendors_own_is_not():
    from noticeflow.domain.notice import DEFAULT_HOW_TO_OBJECT

    assert lang.MESSAGES["en"]["notice.how_to_object_default"] == DEFAULT_HOW_TO_OBJECT
    ours = helpers.notice(NOW)
    data = ours.model_dump(mode="json", exclude_none=True)
    data.pop("how_to_object", None)
    ours = parse_notice(data)
    assert ours.how_to_object == DEFAULT_HOW_TO_OBJECT  # no text of its own: ours
    german = render.render_notice_text(ours, "de")
    assert "So widersprechen Sie: Nutzen Sie vor Ablauf Ihrer Frist den persönlichen Link" in german
    assert DEFAULT_HOW_TO_OBJECT not in german
    assert DEFAULT_HOW_TO_OBJECT in ours.text()  # the English text of record keeps it
    context = render.mail_context(ours, "Europe/Berlin", None, {}, "general", "de")
    assert context["original_text"] == ours.text() and context["text_sha256"] == ours.text_sha256()
    vendors = parse_notice({**data, "how_to_object": "Write to dpo@vendor.example."})
    assert "Write to dpo@vendor.example." in render.render_notice_text(vendors, "de")


def test_german_dates_and_deadlines():
    end_of_2026 = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)  # midnight in Berlin
    assert lang.deadline("de", end_of_2026, "Europe/Berlin") == (
        "Donnerstag, 31. Dezember 2026, 24:00 Uhr (Europe/Berlin)"
    )
    assert lang.instant("de-DE", datetime(2026, 7, 1, 12, 0, tzinfo=UTC), "Europe/Berlin") == (
        "Mittwoch, 1. Juli 2026, 14:00 Uhr MESZ (Europe/Berlin)"
    )
    assert lang.instant("de-AT", datetime(2027, 1, 5, 8, 0, tzinfo=UTC), "UTC") == (
        "Dienstag, 5. Jänner 2027, 08:00 Uhr UTC"  # the region's locale
    )
    assert lang.number("de", 1234.5) == "1.234,5"
    assert lang.window("de", timedelta(hours=26)) == "26 Stunden ab Zugang dieser Mitteilung"


# The action page's countdown never gives more time than is left: whole units, floored, to the
# English page's granularity (noticeflow/web/format.py countdown), never Babel's rounding.
COUNTDOWNS = [
    (timedelta(days=1.6), "in 1 Tag und 14 Stunden", "in 1 d 14 h"),
    (timedelta(days=18), "in 18 Tagen", "in 18 d"),
    (timedelta(days=42), "in 42 Tagen", "in 42 d"),
    (timedelta(days=50), "in 50 Tagen", "in 50 d"),
    (timedelta(minutes=90), "in 1 Stunde und 30 Minuten", "in 1 h 30 min"),
    (timedelta(days=1, hours=1), "in 1 Tag und 1 Stunde", "in 1 d 1 h"),
    (timedelta(days=9, hours=23, minutes=59), "in 9 Tagen und 23 Stunden", "in 9 d 23 h"),
    (timedelta(days=10, hours=23), "in 10 Tagen", "in 10 d"),
    (timedelta(hours=2), "in 2 Stunden", "in 2 h"),
    (timedelta(minutes=1, seconds=59), "in 1 Minute", "in 1 min"),
    (timedelta(seconds=30), "in weniger als einer Minute", "in < 1 min"),
    (timedelta(hours=-2, minutes=-5), "vor 2 Stunden und 5 Minuten", "2 h 5 min ago"),
]


@pytest.mark.parametrize(("span", "german", "english_page"), COUNTDOWNS)
def test_the_german_countdown_floors_like_the_english_page(span, german, english_page):
    from noticeflow.web.format import countdown

    assert lang.relative("de", span) == german
    assert countdown(NOW + span, NOW) == english_page  # the same units, the same flooring


@pytest.mark.parametrize(
    ("span", "words"),
    [
        (timedelta(days=1), "1 Tag ab dem Tag nach Zugang dieser Mitteilung"),
        (timedelta(days=21), "21 Tage ab dem Tag nach Zugang dieser Mitteilung"),
        (timedelta(hours=1), "1 Stunde ab Zugang dieser Mitteilung"),
        (timedelta(minutes=1), "1 Minute ab Zugang dieser Mitteilung"),
        (timedelta(seconds=90), "1 Minute und 30 Sekunden ab Zugang dieser Mitteilung"),
        (timedelta(days=1, seconds=1), "24 Stunden und 1 Sekunde ab Zugang dieser Mitteilung"),
        (timedelta(hours=26), "26 Stunden ab Zugang dieser Mitteilung"),
        (
            timedelta(hours=2, minutes=1, seconds=2),
            "2 Stunden, 1 Minute und 2 Sekunden ab Zugang dieser Mitteilung",
        ),
    ],
)
def test_the_german_window_counts_in_singular_and_plural_to_the_second(span, words):
    assert lang.window("de", span) == words


# The customer's action pages (noticeflow/web/actions.py renders <language>/<page> for a customer
# whose language is not English).
ACTION_PAGES = ("action.html", "action_receipt.html")


@pytest.mark.parametrize("code", sorted(set(lang.LANGUAGES) - {lang.DEFAULT}))
def test_every_language_has_every_action_page(code):
    from noticeflow.web.actions import page_template

    folder = resources.files("noticeflow") / "web" / "templates"
    for name in ACTION_PAGES:
        assert page_template(name, code) == f"{code}/{name}"
        page = (folder / code / name).read_text()
        assert "{% block lang %}{{ language }}{% endblock %}" in page, name
    assert page_template("action.html", "en-GB") == "action.html"


# --- the CSV column ------------------------------------------------------------------------------


def test_the_language_column():
    header = "customer_id,name,region,services,contact_emails,timezone,language\n"
    rows = parse_customers_csv(
        header
        + "a,A,EU,x,a@a.example,UTC,de\n"
        + "b,B,EU,x,b@b.example,UTC,\n"
        + "c,C,EU,x,c@c.example,UTC, de-at \n"
        + "d,D,EU,x,d@d.example,UTC,EN\n"
    )
    assert [c.language for c in rows] == ["de", "en", "de-AT", "en"]
    without = parse_customers_csv(
        "customer_id,name,region,services,contact_emails,timezone\na,A,EU,x,a@a.example,UTC\n"
    )
    assert without[0].language is None  # no column: what is stored stays


def test_a_bad_language_is_named_with_every_other_problem_and_the_supported_ones():
    with pytest.raises(InputError) as caught:
        parse_customers_csv(
            "customer_id,name,region,services,contact_emails,timezone,language\n"
            "a,A,EU,x,a@a.example,UTC,deutsch\n"
            "b,B,EU,x,not-an-address,UTC,fr\n"
            "c,C,EU,x,c@c.example,Mars/Base,de\n"
        )
    lines = str(caught.value).splitlines()
    assert lines[0] == "CSV (3 problems):"
    supported = "use one of en (English), de (German), optionally with a region such as de-AT"
    assert lines[1] == f"  line 2: language: 'deutsch' is not a supported language; {supported}"
    assert "not an e-mail address" in lines[2]
    assert f"language: 'fr' is not a supported language; {supported}" in lines[2]
    assert "unknown IANA timezone" in lines[3] and "language" not in lines[3]


# --- on real parts ------------------------------------------------------------------------------

CUSTOMERS = (
    "customer_id,name,region,services,contact_emails,timezone,language\n"
    "hooli,Hooli GmbH,US,assistant,datenschutz@hooli.example,Europe/Berlin,de\n"
    "acme,Acme Corp,US,assistant,privacy@acme.example,Europe/Berlin,\n"
    "initech,Initech,US,assistant,dpo@initech.example,America/New_York,en-US\n"
)
# Delivered on 30 November 2030 (a Saturday), the 31-day window's last day is Tuesday 31 December.
AT = datetime(2030, 11, 30, 10, 0, tzinfo=UTC)


def _part(message: Message, content_type: str) -> Any:
    for part in message.walk():
        if part.get_content_type() == content_type:
            return part
    raise AssertionError(f"no {content_type} part")


def _old_digest(rows: list[dict[str, Any]]) -> str:
    """snapshot_sha256 as the code before languages computed it (its columns, general left out)."""
    frozen = []
    for row in rows:
        row = {k: v for k, v in row.items() if k not in ("language", "audience")}
        if row.get("authorisation") == "general":
            del row["authorisation"]
        frozen.append(row)
    return hashlib.sha256(json.dumps(frozen, default=str, sort_keys=True).encode()).hexdigest()


@pytest.fixture
async def mailed(pool, smtp_sink):
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    spec = helpers.notice(
        AT,
        opt_in=False,
        objection_window="P31D",
        effective_at=(AT + timedelta(days=60)).isoformat(),
    )
    await repository.upsert_customers(pool, parse_customers_csv(CUSTOMERS))
    await repository.create_notice(pool, spec, "alice", AT)
    env, sending = ActivityEnvironment(), SendingActivities(deps)
    await env.run(sending.snapshot_audience, AudienceRequest(spec=spec, at=AT))
    await env.run(sending.send_notices, SendRequest(spec=spec, at=AT))
    return deps, spec


async def test_a_german_customer_gets_a_german_notice_with_a_german_date_and_calendar(
    pool, smtp_sink, mailed
):
    _deps, spec = mailed
    messages = {m["To"]: m for m in smtp_sink.messages()}
    german = messages["datenschutz@hooli.example"]
    deadline = await pool.fetchval(
        "SELECT deadline FROM recipients WHERE notice_id = $1 AND customer_id = 'hooli'",
        spec.notice_id,
    )
    assert german["Subject"].startswith("Mitteilung über einen neuen Unterauftragsverarbeiter:")
    text = _part(german, "text/plain").get_content()
    assert text.lstrip("\n").startswith("Guten Tag Hooli GmbH,\n")
    assert "Ihre Widerspruchsfrist: Dienstag, 31. Dezember 2030, 24:00 Uhr (Europe/Berlin)" in text
    assert "Widerspruchsfrist: 31 Tage ab dem Tag nach Zugang dieser Mitteilung" in text
    assert spec.text() in text and f"SHA-256 des Originaltexts: {spec.text_sha256()}" in text
    html = _part(german, "text/html").get_content()
    assert '<html lang="de">' in html and "31. Dezember 2030" in html
    attached = _part(german, "text/calendar")
    assert attached.get_filename() == "frist.ics"
    event = next(iter(icalendar.Calendar.from_ical(attached.get_content()).walk("VEVENT")))
    assert str(event["summary"]).startswith("Frist: Mitteilung ")
    # An all-day event on the last day; its end (local midnight) is the recorded deadline.
    assert event.decoded("dtstart") == (deadline.astimezone(lang.ZoneInfo("Europe/Berlin"))
                                        - timedelta(days=1)).date()  # fmt: skip
    end = event.decoded("dtend")
    local_end = datetime(end.year, end.month, end.day, tzinfo=lang.ZoneInfo("Europe/Berlin"))
    assert local_end == deadline


async def test_an_english_customer_gets_the_english_mail_as_before(pool, smtp_sink, mailed):
    _deps, spec = mailed
    messages = {m["To"]: m for m in smtp_sink.messages()}
    for address, customer, name, zone in (
        ("privacy@acme.example", "acme", "Acme Corp", "Europe/Berlin"),
        ("dpo@initech.example", "initech", "Initech", "America/New_York"),
    ):
        message = messages[address]
        row = await pool.fetchrow(
            "SELECT deadline, authorisation FROM recipients WHERE notice_id = $1"
            " AND customer_id = $2",
            spec.notice_id,
            customer,
        )
        # What the mail was rendered from before languages: no language in the context.
        context = render.mail_context(spec, zone, row["deadline"], {}, row["authorisation"])
        context.pop("language")
        text = _part(message, "text/plain").get_content()
        assert text.lstrip("\n").startswith(f"Dear {name},\n\n{spec.text()}")
        assert "Your objection deadline: end of Tuesday 31 December 2030" in text
        assert context["deadline_text"] in text
        event = next(iter(icalendar.Calendar.from_ical(
            _part(message, "text/calendar").get_content()
        ).walk("VEVENT")))  # fmt: skip
        assert str(event["summary"]).startswith("Deadline: sub-processor notice ")
        assert _part(message, "text/calendar").get_filename() == "deadline.ics"


async def test_the_snapshot_hashes_as_before_for_english_customers(pool, smtp_sink, mailed):
    _deps, spec = mailed
    snapshot = await pool.fetchrow(
        "SELECT data FROM events WHERE event_type = 'audience_snapshotted'"
        " AND data->>'customers' = '3' ORDER BY position DESC LIMIT 1"
    )
    data = json.loads(snapshot["data"]) if isinstance(snapshot["data"], str) else snapshot["data"]
    assert data["terms"]["hooli"]["language"] == "de"
    assert "language" not in data["terms"]["acme"] or data["terms"]["acme"]["language"] is None
    assert data["terms"]["initech"]["language"] == "en-US"
    languages = dict(
        await pool.fetch(
            "SELECT customer_id, language FROM recipients WHERE notice_id = $1", spec.notice_id
        )
    )
    assert languages == {"hooli": "de", "acme": "en", "initech": "en-US"}
    verification = await verify_database(pool, spec.notice_id)
    assert verification.ok, verification.problems
    live = await helpers.records_of(pool)
    await records.rebuild(pool)
    assert helpers.records_diff(live, await helpers.records_of(pool)) == []


async def test_an_english_only_audience_hashes_exactly_as_before_languages(pool, smtp_sink):
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    spec = helpers.notice(AT, opt_in=False, effective_at=(AT + timedelta(days=60)).isoformat())
    await repository.upsert_customers(pool, helpers.customers())
    await repository.create_notice(pool, spec, "alice", AT)
    await ActivityEnvironment().run(
        SendingActivities(deps).snapshot_audience, AudienceRequest(spec=spec, at=AT)
    )
    data = await pool.fetchval(
        "SELECT data FROM events WHERE event_type = 'audience_snapshotted' ORDER BY"
        " position DESC LIMIT 1"
    )
    data = json.loads(data) if isinstance(data, str) else data
    rows = await pool.fetch(
        "SELECT customer_id, region, services, timezone, window_days, window_unit, country,"
        " authorisation FROM customers WHERE customer_id = ANY($1::text[]) ORDER BY customer_id",
        data["customer_ids"],
    )
    assert data["snapshot_sha256"] == _old_digest([dict(r) for r in rows])
    assert all("language" not in terms for terms in data["terms"].values())


async def test_a_file_without_the_column_keeps_each_customers_language(pool):
    await repository.upsert_customers(pool, parse_customers_csv(CUSTOMERS))
    await repository.upsert_customers(
        pool,
        parse_customers_csv(
            "customer_id,name,region,services,contact_emails,timezone\n"
            "hooli,Hooli AG,US,assistant,datenschutz@hooli.example,Europe/Berlin\n"
        ),
    )
    stored = {row["customer_id"]: row["language"] for row in await repository.list_customers(pool)}
    assert stored == {"hooli": "de", "acme": "en", "initech": "en-US"}
    await repository.upsert_customers(  # a blank cell is the default
        pool,
        parse_customers_csv(
            "customer_id,name,region,services,contact_emails,timezone,language\n"
            "hooli,Hooli AG,US,assistant,datenschutz@hooli.example,Europe/Berlin,\n"
        ),
    )
    assert {r["customer_id"]: r["language"] for r in await repository.list_customers(pool)}[
        "hooli"
    ] == "en"


async def test_erasure_is_unaffected(pool, smtp_sink, mailed):
    _deps, spec = mailed
    await repository.erase_customer(pool, "hooli")
    row = await pool.fetchrow(
        "SELECT name, language FROM recipients WHERE notice_id = $1 AND customer_id = 'hooli'",
        spec.notice_id,
    )
    assert row["language"] == "de"  # a language is no personal data: the record keeps it
    recipients = await helpers_load(pool, spec.notice_id)
    assert "hooli" not in recipients  # nobody left to mail
    verification = await verify_database(pool, spec.notice_id)
    assert verification.ok, verification.problems


async def helpers_load(pool: Any, notice_id: str) -> dict[str, Any]:
    from noticeflow.application.shared import load_recipients

    return await load_recipients(pool, notice_id, ["hooli", "acme", "initech"])


async def test_the_preview_shows_the_customers_language(pool, smtp_sink, mailed):
    from noticeflow.preview import preview_notice

    deps, spec = mailed
    shown = await preview_notice(pool, spec.notice_id, "hooli", MailRenderer(), deps.links)
    assert shown["subject"].startswith("Mitteilung über einen neuen Unterauftragsverarbeiter")
    assert "31. Dezember 2030" in shown["text"]
    english = await preview_notice(pool, spec.notice_id, "acme", MailRenderer(), deps.links)
    assert english["text"].lstrip("\n").startswith("Dear Acme Corp,")


# --- acknowledgements of a customer's answer ------------------------------------------------------


def _old_acknowledgements(subprocessor: str, receipt: str, when: str) -> dict[str, list[str]]:
    """The English acknowledgements exactly as noticeflow/application/intake.py wrote them before
    the catalogue held them (its f-strings, copied): headline first, then the paragraphs."""
    out: dict[str, list[str]] = {}
    for timely in (True, False):
        out[f"changes:{timely}"] = [
            "We have received your request for changes",
            f"Your request for changes to the use of {subprocessor} was"
            f" received on {when} and is recorded as"
            f" {'timely' if timely else 'late (after your deadline)'}"
            f" (receipt {receipt}).",
            "Our privacy team will contact you about it. "
            + (
                "Until it is resolved the sub-processor will not be used for your organisation."
                if timely
                else "As it came after your deadline, it does not hold the change"
                " back; should the change go ahead, your contract lets you"
                " terminate the affected service."
            ),
        ]
        out[f"objection:{timely}"] = [
            "We have received your objection",
            f"Your objection to {subprocessor} was received on {when} and is "
            f"recorded as {'timely' if timely else 'late (after your deadline)'}"
            f" (receipt {receipt}).",
            "Our privacy team will contact you to resolve it. Until then the sub-processor "
            "will not be used for your organisation"
            + ("." if timely else " unless the objection is resolved otherwise."),
        ]
    outcomes = {
        "withdrawn": "Your objection has been withdrawn; the sub-processor may be used for your"
        " organisation.",
        "excluded": "Your objection is upheld: the sub-processor will not be used for your"
        " organisation.",
        "terminated": "As agreed, the affected service will be terminated for your organisation.",
    }
    for outcome, words in outcomes.items():
        for what, name in (("objection", "objection"), ("changes", "request for changes")):
            out[f"resolved:{outcome}:{what}"] = [
                f"Your {name} has been resolved",
                words.replace("objection", name),
            ]
    for opted_in in (True, False):
        out[f"dora:{opted_in}"] = [
            "Your approval is recorded" if opted_in else "Your approval is withdrawn",
            f"We have recorded that you {'approve' if opted_in else 'withdraw your approval of'}"
            f" the use of {subprocessor} (receipt {receipt}). "
            + (
                "It will be used for your organisation from the effective date of the notice."
                if opted_in
                else "Under your contract the change still goes ahead unless you object or"
                " request changes before your deadline."
            ),
        ]
    out["opt_in"] = [
        "Your opt-in is recorded",
        f"We have recorded your opt-in to {subprocessor} (receipt "
        f"{receipt}). It will be used for your organisation from the "
        "effective date of the notice, and you can revoke this opt-in at any time.",
    ]
    for switched_off in (True, False):
        out[f"revoke:{switched_off}"] = [
            "Your opt-in is revoked",
            f"We have recorded that you revoked your opt-in to {subprocessor} (receipt "
            f"{receipt}). "
            + (
                "It is no longer used for your organisation."
                if switched_off
                else "It will not be used for your organisation."
            ),
        ]
    return out


def _stored_acknowledgements(subprocessor: str, receipt: str, at: datetime, zone: str) -> dict:
    """The same acknowledgements as intake.py now stores them (keys and fields)."""
    when = lang.stored_instant(at, zone)
    names = {"subprocessor": subprocessor, "receipt": receipt}
    out: dict[str, dict[str, Any]] = {}
    for timely in (True, False):
        judged = "timely" if timely else "late"
        for what in ("changes", "objection"):
            out[f"{what}:{timely}"] = {
                "headline": lang.stored(f"ack.{what}.headline"),
                "paragraphs": [
                    lang.stored(f"ack.{what}.received.{judged}", when=when, **names),
                    lang.stored(f"ack.{what}.next.{judged}"),
                ],
            }
    for outcome in ("withdrawn", "excluded", "terminated"):
        for what in ("objection", "changes"):
            out[f"resolved:{outcome}:{what}"] = {
                "headline": lang.stored(f"ack.resolved.headline.{what}"),
                "paragraphs": [lang.stored(f"ack.resolved.{outcome}.{what}")],
            }
    for opted_in, what in ((True, "approve"), (False, "withdraw")):
        out[f"dora:{opted_in}"] = {
            "headline": lang.stored(f"ack.{what}.headline"),
            "paragraphs": [lang.stored(f"ack.{what}", **names)],
        }
    out["opt_in"] = {
        "headline": lang.stored("ack.opt_in.headline"),
        "paragraphs": [lang.stored("ack.opt_in", **names)],
    }
    for switched_off in (True, False):
        out[f"revoke:{switched_off}"] = {
            "headline": lang.stored("ack.revoke.headline"),
            "paragraphs": [
                lang.stored(f"ack.revoke.{'switched_off' if switched_off else 'not_used'}", **names)
            ],
        }
    return out


@pytest.mark.parametrize("tag", [None, "en", "en-GB", "en-US"])
@pytest.mark.parametrize(
    ("at", "zone"),
    [
        (datetime(2026, 12, 31, 23, 0, tzinfo=UTC), "Europe/Berlin"),
        (datetime(2027, 1, 5, 8, 0, 7, 123456, tzinfo=UTC), "UTC"),
        (datetime(2026, 7, 1, 12, 30, tzinfo=UTC), "America/New_York"),
    ],
)
def test_english_acknowledgements_are_byte_for_byte_what_they_were(tag, at, zone):
    from noticeflow.domain.deadlines import describe_instant

    old = _old_acknowledgements(
        "OpenAI, LLC {x}", "r-0123456789abcdef0123", describe_instant(at, zone)
    )
    stored = _stored_acknowledgements("OpenAI, LLC {x}", "r-0123456789abcdef0123", at, zone)
    assert sorted(old) == sorted(stored)
    for name, plan in stored.items():
        # Through JSON, as the plan is kept (sealed) until mailed.
        headline, paragraphs = lang.written_mail(tag, json.loads(json.dumps(plan)))
        assert [headline, *paragraphs] == old[name], name


def test_german_acknowledgements_are_german_throughout_with_a_german_date():
    at = datetime(2026, 12, 31, 13, 5, tzinfo=UTC)
    for name, plan in _stored_acknowledgements("OpenAI, LLC", "r-1", at, "Europe/Berlin").items():
        headline, paragraphs = lang.written_mail("de", json.loads(json.dumps(plan)))
        english, _ = lang.written_mail("en", plan)
        assert headline != english, name
        for words in (headline, *paragraphs):
            english_words = {"your", "the", "we", "has", "have", "will", "received", "recorded"}
            assert not english_words & set(re.findall(r"[a-z]+", words.lower())), words
            assert "Ihr" in words, words
    objection = lang.written_mail(
        "de-AT", _stored_acknowledgements("X", "r-1", at, "UTC")["objection:True"]
    )
    assert objection == (
        "Wir haben Ihren Widerspruch erhalten",
        [
            "Ihr Widerspruch gegen X ist am Donnerstag, 31. Dezember 2026, 13:05 Uhr UTC"
            " eingegangen und als fristgerecht erfasst (Beleg r-1).",
            "Unser Datenschutzteam wird sich mit Ihnen in Verbindung setzen, um ihn zu klären."
            " Bis dahin wird der Unterauftragsverarbeiter für Ihre Organisation nicht eingesetzt.",
        ],
    )


def test_an_acknowledgement_stored_before_the_catalogue_is_mailed_as_it_was():
    plan = {"headline": "We have received your objection", "paragraphs": ["As written."]}
    assert lang.written_mail("de", plan) == ("We have received your objection", ["As written."])
    # An operator's note (free text) rides along as written, in any language.
    note = {"headline": lang.stored("ack.resolved.headline.objection"), "paragraphs": ["Ok."]}
    assert lang.written_mail("de", note) == ("Ihr Widerspruch ist erledigt", ["Ok."])


def test_a_stored_message_names_a_catalogue_key():
    with pytest.raises(KeyError):
        lang.stored("ack.no_such_message")


# --- the page link of an update mail for customers that may consent or approve ------------------

AUTHORISED = (
    "customer_id,name,region,services,contact_emails,timezone,language,authorisation\n"
    "spez,Spez GmbH,US,assistant,dpo@spez.example,Europe/Berlin,de,specific\n"
    "spec,Spec Inc,US,assistant,dpo@spec.example,Europe/Berlin,en,specific\n"
    "dora,Dora Bank AG,US,assistant,dpo@dora.example,Europe/Berlin,de,dora\n"
    "dorx,Dorx Bank,US,assistant,dpo@dorx.example,Europe/Berlin,en,dora\n"
    "plain,Plain Co,US,assistant,dpo@plain.example,Europe/Berlin,en,general\n"
)


async def test_reminders_to_specific_and_dora_customers_link_their_consent_page(pool, smtp_sink):
    """An ordinary (not opt-in) notice: the reminder asks a specific customer to opt in and a
    dora customer to approve, so it links the opt-in page (and, for dora, the object page too),
    in English and German; a general customer's reminder links the object page as before."""
    from noticeflow.application.deps import mail_update, quiet
    from noticeflow.application.reminders import ReminderService
    from noticeflow.contracts import ReminderRequest

    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    spec = helpers.notice(
        AT, opt_in=False, objection_window="P31D", reminder_before="P7D",
        effective_at=(AT + timedelta(days=60)).isoformat(),
    )  # fmt: skip
    await repository.upsert_customers(pool, parse_customers_csv(AUTHORISED))
    await repository.create_notice(pool, spec, "alice", AT)
    env, sending = ActivityEnvironment(), SendingActivities(deps)
    await env.run(sending.snapshot_audience, AudienceRequest(spec=spec, at=AT))
    await env.run(sending.send_notices, SendRequest(spec=spec, at=AT))
    before = len(smtp_sink.messages())
    await ReminderService(deps).send_reminders(
        ReminderRequest(spec=spec, now=AT + timedelta(days=30)), quiet
    )
    reminders = {m["To"]: m for m in smtp_sink.messages()[before:]}
    assert set(reminders) == {f"dpo@{c}.example" for c in ("spez", "spec", "dora", "dorx", "plain")}

    def links(address: str) -> tuple[str, str]:
        message = reminders[address]
        return _part(message, "text/plain").get_content(), _part(message, "text/html").get_content()

    def actions(words: str) -> list[str]:
        return [
            deps.links.read(token).action.value
            for token in re.findall(r"/a/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", words)
        ]

    for address, opening in (
        ("dpo@spec.example", "opt in or revoke your opt-in"),
        ("dpo@spez.example", "zuzustimmen oder Ihre\nZustimmung zu widerrufen"),
    ):
        text, page = links(address)
        assert opening in text, text
        assert actions(text) == ["opt_in"] and actions(page) == ["opt_in"], address
    for address, opening in (
        ("dpo@dorx.example", "approve or withdraw your approval"),
        ("dpo@dora.example", "zuzustimmen oder Ihre\nZustimmung zurückzunehmen"),
    ):
        text, page = links(address)
        assert opening in text, text
        assert actions(text) == ["opt_in", "object"] and actions(page) == ["opt_in", "object"]
    text, page = links("dpo@plain.example")
    assert actions(text) == ["object"] and "see where you stand or object" in text
    # mail_update gives every update mail (postponement, cancellation, activation) the same terms
    await mail_update(
        deps, spec, ["spez"], "postponed",
        lambda r: render.update_context(spec, "Verschoben", ["Absatz"], r.language), quiet,
    )  # fmt: skip
    last = [m for m in smtp_sink.messages() if m["To"] == "dpo@spez.example"][-1]
    assert actions(_part(last, "text/plain").get_content()) == ["opt_in"]


@pytest.mark.parametrize(
    ("language", "mode", "expected"),
    [
        ("en", "specific", ["opt_in"]),
        ("de", "specific", ["opt_in"]),
        ("en", "dora", ["opt_in", "object"]),
        ("de", "dora", ["opt_in", "object"]),
        ("en", "general", ["object"]),
        ("de", "general", ["object"]),
    ],
)
def test_an_acknowledgement_links_the_consent_page_of_a_customer_that_may_consent(
    language, mode, expected
):
    """The acknowledgement of an opt-in or approval says it can be revoked or withdrawn: its link
    is the opt-in page (the context intake.py's acknowledgement builds: links and silence terms)."""
    spec = helpers.notice(NOW, opt_in=False)
    headline, paragraphs = lang.written_mail(
        language,
        {
            "headline": ["ack.opt_in.headline", {}],
            "paragraphs": [["ack.opt_in", {"subprocessor": spec.subprocessor, "receipt": "r-1"}]],
        },
    )
    context = (
        {"object_url": "https://x/a/object", "opt_in_url": "https://x/a/opt_in"}
        | render.silence_terms(spec.opt_in, mode)
        | render.update_context(spec, headline, paragraphs, language)
    )
    context.update(customer_name="Acme", customer_id="acme")
    for part in MailRenderer().render("update", context)[1:]:
        assert re.findall(r"https://x/a/(\w+)", part) == expected, part
