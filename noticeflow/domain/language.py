"""The languages customers are mailed in: which ones, their wording, and dates and numbers in the
customer's locale (Babel). Pure: no I/O.

A customer's ``language`` is a BCP 47 tag whose language is one of :data:`LANGUAGES` (``en``,
``de``), optionally with a region for the locale's dates and numbers (``de-AT``: "5. Jänner"). Our
own fixed wording comes from :data:`MESSAGES` (one catalogue per language, the same keys in each:
``tests/test_languages.py`` checks it) and the mail templates (``noticeflow/templates/mail`` for
English, ``noticeflow/templates/mail/<language>/`` for each other). The vendor's own words (a
notice's title, purpose, how to object, body) stay as written. English is the default, and its
wording is byte for byte what it was before languages: the English path of every function here
is the one the mails always used (``describe_deadline``, ``describe_instant``).

How to add a language: docs/languages.md.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from noticeflow.domain.deadlines import describe_deadline, describe_instant, end_of_local_day

DEFAULT = "en"
# The languages noticeflow writes mail in, by BCP 47 primary language subtag, with their names.
LANGUAGES: dict[str, str] = {"en": "English", "de": "German"}
# BCP 47 shape: language[-Script][-REGION][-variant...], e.g. en, de-DE, zh-Hant-TW
TAG_PATTERN = re.compile(
    r"^[a-z]{2,3}(?:-[a-z]{4})?(?:-(?:[a-z]{2}|\d{3}))?(?:-(?:[a-z\d]{5,8}|\d[a-z\d]{3}))*$",
    re.IGNORECASE,
)


def supported_words() -> str:
    """The supported languages as an error message lists them."""
    return ", ".join(f"{code} ({name})" for code, name in LANGUAGES.items())


def canonical_tag(value: str) -> str:
    """A customer's language as stored: the BCP 47 tag in its usual case (de-AT, en-GB).

    Raises ValueError, saying what is wrong and listing the supported languages, for a tag that is
    not BCP 47, names a language noticeflow has no mail for, or a region Babel has no locale for.
    """
    tag = value.strip()
    if not TAG_PATTERN.match(tag):
        hint = " (use '-', not '_')" if "_" in tag else ""
        raise ValueError(
            f"{tag[:40]!r} is not a supported language{hint}; use one of {supported_words()},"
            " optionally with a region such as de-AT"
        )
    parts = tag.split("-")
    canonical = [parts[0].lower()]
    for part in parts[1:]:  # BCP 47 case conventions: de-DE, zh-Hant-TW
        if len(part) == 4 and part.isalpha():
            canonical.append(part.title())
        elif len(part) == 2 and part.isalpha():
            canonical.append(part.upper())
        else:
            canonical.append(part.lower())
    if canonical[0] not in LANGUAGES:
        raise ValueError(
            f"{tag[:40]!r} is not a supported language; use one of {supported_words()},"
            " optionally with a region such as de-AT"
        )
    result = "-".join(canonical)
    if _locale(result) is None:
        raise ValueError(
            f"{tag[:40]!r}: no locale for this region; use one of {supported_words()},"
            " optionally with a region such as de-AT"
        )
    return result


def language_of(tag: str | None) -> str:
    """The language whose templates and wording a customer gets (``en`` for none, or for a tag
    whose language is not, or no longer, supported)."""
    base = (tag or DEFAULT).split("-", 1)[0].lower()
    return base if base in LANGUAGES else DEFAULT


@functools.lru_cache(maxsize=64)
def _locale(tag: str) -> Any:
    """The Babel locale for a tag (None: Babel has none)."""
    from babel import Locale, UnknownLocaleError  # imported on first use

    try:
        return Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return None


def locale_of(tag: str | None) -> Any:
    """The Babel locale dates and numbers are written in (the language's own without a region)."""
    return _locale(tag or DEFAULT) or _locale(language_of(tag))


def text(tag: str | None, key: str, **fields: Any) -> str:
    """One message of the customer's language, its ``{fields}`` filled in."""
    words = MESSAGES[language_of(tag)][key]
    return words.format(**fields) if fields else words


def number(tag: str | None, value: float) -> str:
    from babel.numbers import format_decimal

    return str(format_decimal(value, locale=locale_of(tag)))


def _day(tag: str | None, day: date) -> str:
    from babel.dates import format_date

    return str(format_date(day, format="full", locale=locale_of(tag)))


def instant(tag: str | None, moment: datetime, timezone: str) -> str:
    """An instant in words in ``timezone``: English as ever (describe_instant); another language
    with Babel, e.g. "Donnerstag, 31. Dezember 2026, 14:00 Uhr MEZ (Europe/Berlin)"."""
    if language_of(tag) == DEFAULT:
        return describe_instant(moment, timezone)
    from babel.dates import get_timezone_name

    zone = ZoneInfo(timezone)
    local = moment.astimezone(zone)
    clock = f"{local.hour:02d}:{local.minute:02d}"
    if local.second:
        clock += f":{local.second:02d}"
    short = str(get_timezone_name(local, "short", locale=locale_of(tag)))
    if timezone == "UTC":
        short = "UTC"
    words = text(tag, "time.instant", day=_day(tag, local.date()), clock=clock, zone=short)
    return words if short == timezone else f"{words} ({timezone})"


def deadline(tag: str | None, moment: datetime, timezone: str) -> str:
    """A deadline in words: the end of its last day when it falls at local midnight (the usual
    case), else the exact instant. English as ever (describe_deadline)."""
    if language_of(tag) == DEFAULT:
        return describe_deadline(moment, timezone)
    zone = ZoneInfo(timezone)
    last_day = moment.astimezone(zone).date() - timedelta(days=1)
    if moment == end_of_local_day(last_day, zone):
        return text(tag, "time.end_of_day", day=_day(tag, last_day), timezone=timezone)
    return instant(tag, moment, timezone)


def window(tag: str | None, span: timedelta) -> str:
    """A notice's objection window in words."""
    days, rest = divmod(span.total_seconds(), 86400)
    if not rest:
        return text(tag, "notice.window_days", days=int(days), days_text=number(tag, int(days)))
    if language_of(tag) == DEFAULT:
        return text(tag, "notice.window_other", span=str(span))
    minutes = int(span.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    words = (
        text(tag, "time.hours", hours=number(tag, hours)) if hours else "",
        text(tag, "time.minutes", minutes=number(tag, minutes)) if minutes else "",
    )
    return text(tag, "notice.window_other", span=" ".join(w for w in words if w))


# Our own wording, per language: the same keys in every catalogue (tests/test_languages.py).
# English is the wording the mails always had (byte for byte: the hashes of notices already sent
# and the tests pin it). A message is a str.format pattern; the vendor's words go in as fields.
MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "time.instant": "{day}, {clock} {zone}",
        "time.end_of_day": "end of {day} ({timezone})",
        "time.hours": "{hours} hours",
        "time.minutes": "{minutes} minutes",
        "deadline.not_set": "not yet set",
        "notice.window_days": "{days} days from the day after delivery of this notice",
        "notice.window_other": "{span} from delivery of this notice",
        "field.subprocessor_location": "Location",
        "field.purpose": "Purpose",
        "field.transfer_mechanism": "Transfer mechanism",
        "field.data_categories": "Categories of personal data",
        "field.services": "Affected services",
        "field.effective": "Effective date",
        "field.window": "Objection window",
        "field.how_to_object": "How to object",
        "headline.addition": "Notice of a new sub-processor",
        "headline.replacement": "Notice of a sub-processor replacement",
        "headline.removal": "Notice of a sub-processor removal",
        "headline.material_change": "Notice of a material change to a sub-processor",
        "opening.addition": "We intend to engage {who} as a new sub-processor.",
        "opening.replacement": "We intend to engage {who} as a new sub-processor, replacing"
        " {replaces}.",
        "opening.removal": "We will stop using {who} as a sub-processor.",
        "opening.material_change": "We intend to change how {who} processes personal data as"
        " our sub-processor.",
        "change.replacement": "Change: replacement of {replaces} by {subprocessor}",
        "change.replacement_stops": "{replaces} stops processing personal data for your"
        " organisation when {subprocessor} starts.",
        "change.removal": "Change: removal — no objection window; {subprocessor} stops"
        " processing on {when}",
        "change.material_change": "Change: material change",
        "notice.removal_info": "This notice is for your information: there is nothing to object"
        " to or opt in to.",
        "notice.opt_in": "These services are opt-in: the sub-processor is used for your"
        " organisation only if you opt in. Not opting in is an objection.",
        "silence.specific": "Your contract requires your specific authorisation: unless you"
        " authorise (opt in), {subprocessor} will not be used for your organisation.",
        "silence.opt_in": "This is an opt-in notice: unless you opt in, {subprocessor} will not be"
        " used for your organisation.",
        "silence.dora": "Under your contract (DORA) you may approve, object or request changes; if"
        " you neither object nor request changes by your deadline, the change goes ahead.",
        "silence.general": "If you do not object by your deadline, the change is deemed accepted"
        " and {subprocessor} will be used for your organisation from the effective date.",
        "update.postponed": "The effective date of this notice has been postponed",
        "update.cancelled": "This notice has been cancelled",
        "update.postponed.addition": "{subprocessor} will now be engaged no earlier than {when}.",
        "update.postponed.replacement": "{subprocessor} will now replace {replaces} no earlier"
        " than {when}.",
        "update.postponed.removal": "{subprocessor} will now stop processing personal data no"
        " earlier than {when}.",
        "update.postponed.material_change": "The changes to {subprocessor} will now apply no"
        " earlier than {when}.",
        "update.deadline_unchanged": " Your deadline is unchanged.",
        "update.cancelled.removal": "{subprocessor} stays in use as before: the removal is"
        " cancelled. ",
        "update.cancelled.material_change": "We will not go ahead with this change to"
        " {subprocessor}. ",
        "update.cancelled.other": "We will not engage {subprocessor} under this notice. ",
        "update.nothing_changes": "Nothing changes for your organisation.",
        "update.reason": "Reason: {reason}",
        "reminder.headline.opt_in": "Reminder: the deadline to opt in is approaching",
        "reminder.headline.dora": "Reminder: the deadline to approve, object or request changes"
        " is approaching",
        "reminder.headline.object": "Reminder: the deadline to object is approaching",
        "reminder.plan": "We plan to engage {subprocessor} as a sub-processor ({purpose}).",
        "reminder.before.opt_in": "If you wish to opt in, please do so before the {deadline}.",
        "reminder.before.dora": "If you wish to approve, object or request changes, please do so"
        " before the {deadline}.",
        "reminder.before.object": "If you wish to object, please do so before the {deadline}.",
        "activation.removal.headline": "{name} is no longer used for your organisation",
        "activation.removal": "As announced in notice {notice_id}, {name} no longer processes"
        " personal data for {services} on our behalf.",
        "activation.material_change.headline": "The changes to {name} now apply to your"
        " organisation",
        "activation.material_change": "As announced in notice {notice_id}, the changed terms of"
        " {name} (its {fields}) now apply to the personal data it processes for {services} on"
        " our behalf.",
        "activation.headline": "{name} is now in use for your organisation",
        "activation.in_use": "As announced in notice {notice_id}, {name} now processes personal"
        " data for {services} on our behalf.",
        "activation.replaces": "It replaces {replaces}, which no longer processes personal data"
        " for your organisation.",
        "refusal.headline": "{name} is no longer used for your organisation",
        "refusal": "You did not accept the changes to {name} announced in notice {notice_id}, so"
        " from their effective date {name} no longer processes personal data for {services} on"
        " our behalf.",
        "calendar.filename": "deadline.ics",
        "calendar.summary": "Deadline: sub-processor notice {notice_id} ({subprocessor})",
        "calendar.description": "Your deadline to answer notice {notice_id} about"
        " {subprocessor}: {deadline}. Open the notice mail for your personal link.",
    },
    "de": {
        "time.instant": "{day}, {clock} Uhr {zone}",
        "time.end_of_day": "{day}, 24:00 Uhr ({timezone})",
        "time.hours": "{hours} Stunden",
        "time.minutes": "{minutes} Minuten",
        "deadline.not_set": "noch nicht festgelegt",
        "notice.window_days": "{days_text} Tage ab dem Tag nach Zugang dieser Mitteilung",
        "notice.window_other": "{span} ab Zugang dieser Mitteilung",
        "field.subprocessor_location": "Standort",
        "field.purpose": "Zweck",
        "field.transfer_mechanism": "Übermittlungsgrundlage",
        "field.data_categories": "Kategorien personenbezogener Daten",
        "field.services": "Betroffene Dienste",
        "field.effective": "Wirksam ab",
        "field.window": "Widerspruchsfrist",
        "field.how_to_object": "So widersprechen Sie",
        "headline.addition": "Mitteilung über einen neuen Unterauftragsverarbeiter",
        "headline.replacement": "Mitteilung über den Austausch eines Unterauftragsverarbeiters",
        "headline.removal": "Mitteilung über das Ausscheiden eines Unterauftragsverarbeiters",
        "headline.material_change": "Mitteilung über eine wesentliche Änderung bei einem"
        " Unterauftragsverarbeiter",
        "opening.addition": "Wir beabsichtigen, {who} als neuen Unterauftragsverarbeiter"
        " einzusetzen.",
        "opening.replacement": "Wir beabsichtigen, {who} als neuen Unterauftragsverarbeiter"
        " einzusetzen, anstelle von {replaces}.",
        "opening.removal": "Wir werden {who} nicht länger als Unterauftragsverarbeiter einsetzen.",
        "opening.material_change": "Wir beabsichtigen zu ändern, wie {who} als unser"
        " Unterauftragsverarbeiter personenbezogene Daten verarbeitet.",
        "change.replacement": "Änderung: {subprocessor} ersetzt {replaces}",
        "change.replacement_stops": "{replaces} verarbeitet keine personenbezogenen Daten Ihrer"
        " Organisation mehr, sobald {subprocessor} den Betrieb aufnimmt.",
        "change.removal": "Änderung: Ausscheiden — keine Widerspruchsfrist; {subprocessor}"
        " beendet die Verarbeitung am {when}",
        "change.material_change": "Änderung: wesentliche Änderung",
        "notice.removal_info": "Diese Mitteilung dient Ihrer Information: Es gibt nichts, dem Sie"
        " widersprechen oder zustimmen müssten.",
        "notice.opt_in": "Für diese Dienste ist Ihre Zustimmung nötig: Der"
        " Unterauftragsverarbeiter wird für Ihre Organisation nur eingesetzt, wenn Sie"
        " zustimmen. Keine Zustimmung gilt als Widerspruch.",
        "silence.specific": "Ihr Vertrag verlangt Ihre gesonderte Genehmigung: Ohne Ihre"
        " Zustimmung wird {subprocessor} für Ihre Organisation nicht eingesetzt.",
        "silence.opt_in": "Diese Mitteilung erfordert Ihre Zustimmung: Ohne sie wird"
        " {subprocessor} für Ihre Organisation nicht eingesetzt.",
        "silence.dora": "Nach Ihrem Vertrag (DORA) können Sie zustimmen, widersprechen oder"
        " Änderungen verlangen; widersprechen Sie nicht und verlangen Sie keine Änderungen bis"
        " zu Ihrer Frist, wird die Änderung umgesetzt.",
        "silence.general": "Widersprechen Sie nicht bis zu Ihrer Frist, gilt die Änderung als"
        " angenommen, und {subprocessor} wird ab dem Wirksamkeitsdatum für Ihre Organisation"
        " eingesetzt.",
        "update.postponed": "Das Wirksamkeitsdatum dieser Mitteilung wurde verschoben",
        "update.cancelled": "Diese Mitteilung wurde zurückgezogen",
        "update.postponed.addition": "{subprocessor} wird nun frühestens ab {when} eingesetzt.",
        "update.postponed.replacement": "{subprocessor} ersetzt {replaces} nun frühestens ab"
        " {when}.",
        "update.postponed.removal": "{subprocessor} beendet die Verarbeitung personenbezogener"
        " Daten nun frühestens am {when}.",
        "update.postponed.material_change": "Die Änderungen bei {subprocessor} gelten nun"
        " frühestens ab {when}.",
        "update.deadline_unchanged": " Ihre Frist bleibt unverändert.",
        "update.cancelled.removal": "{subprocessor} bleibt wie bisher im Einsatz: Das"
        " Ausscheiden ist abgesagt. ",
        "update.cancelled.material_change": "Wir setzen diese Änderung bei {subprocessor} nicht"
        " um. ",
        "update.cancelled.other": "Wir setzen {subprocessor} auf Grundlage dieser Mitteilung"
        " nicht ein. ",
        "update.nothing_changes": "Für Ihre Organisation ändert sich nichts.",
        "update.reason": "Grund: {reason}",
        "reminder.headline.opt_in": "Erinnerung: Ihre Frist für die Zustimmung läuft bald ab",
        "reminder.headline.dora": "Erinnerung: Ihre Frist für Zustimmung, Widerspruch oder"
        " Änderungsverlangen läuft bald ab",
        "reminder.headline.object": "Erinnerung: Ihre Widerspruchsfrist läuft bald ab",
        "reminder.plan": "Wir planen, {subprocessor} als Unterauftragsverarbeiter einzusetzen"
        " ({purpose}).",
        "reminder.before.opt_in": "Wenn Sie zustimmen möchten, tun Sie dies bitte bis zum Ablauf"
        " Ihrer Frist: {deadline}.",
        "reminder.before.dora": "Wenn Sie zustimmen, widersprechen oder Änderungen verlangen"
        " möchten, tun Sie dies bitte bis zum Ablauf Ihrer Frist: {deadline}.",
        "reminder.before.object": "Wenn Sie widersprechen möchten, tun Sie dies bitte bis zum"
        " Ablauf Ihrer Frist: {deadline}.",
        "activation.removal.headline": "{name} wird für Ihre Organisation nicht mehr eingesetzt",
        "activation.removal": "Wie in Mitteilung {notice_id} angekündigt, verarbeitet {name} in"
        " unserem Auftrag keine personenbezogenen Daten für {services} mehr.",
        "activation.material_change.headline": "Die Änderungen bei {name} gelten jetzt für Ihre"
        " Organisation",
        "activation.material_change": "Wie in Mitteilung {notice_id} angekündigt, gelten die"
        " geänderten Bedingungen von {name} ({fields}) jetzt für die personenbezogenen Daten,"
        " die {name} in unserem Auftrag für {services} verarbeitet.",
        "activation.headline": "{name} ist jetzt für Ihre Organisation im Einsatz",
        "activation.in_use": "Wie in Mitteilung {notice_id} angekündigt, verarbeitet {name} jetzt"
        " in unserem Auftrag personenbezogene Daten für {services}.",
        "activation.replaces": "Damit wird {replaces} ersetzt; {replaces} verarbeitet keine"
        " personenbezogenen Daten Ihrer Organisation mehr.",
        "refusal.headline": "{name} wird für Ihre Organisation nicht mehr eingesetzt",
        "refusal": "Sie haben den in Mitteilung {notice_id} angekündigten Änderungen bei {name}"
        " nicht zugestimmt; ab deren Wirksamkeitsdatum verarbeitet {name} in unserem Auftrag"
        " keine personenbezogenen Daten für {services} mehr.",
        "calendar.filename": "frist.ics",
        "calendar.summary": "Frist: Mitteilung {notice_id} zum Unterauftragsverarbeiter"
        " {subprocessor}",
        "calendar.description": "Ihre Frist zur Mitteilung {notice_id} über {subprocessor}:"
        " {deadline}. Ihren persönlichen Link finden Sie in der Mitteilungs-E-Mail.",
    },
}
