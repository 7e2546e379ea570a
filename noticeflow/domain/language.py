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


def counted(tag: str | None, key: str, count: int) -> str:
    """A count with its unit, in the plural form the language's CLDR rules (Babel) give it:
    ``{key}.one`` ("1 Tag") or ``{key}.other`` ("2 Tage")."""
    form = "one" if locale_of(tag).plural_form(count) == "one" else "other"
    return text(tag, f"{key}.{form}", count=number(tag, count))


def _joined(tag: str | None, parts: list[str]) -> str:
    """Units in words joined as the language lists them ("1 Tag und 14 Stunden")."""
    if len(parts) < 2:
        return "".join(parts)
    return text(tag, "time.and", first=", ".join(parts[:-1]), last=parts[-1])


def window(tag: str | None, span: timedelta) -> str:
    """A notice's objection window in words, to the second (as English's ``str(span)``)."""
    days, rest = divmod(span.total_seconds(), 86400)
    english = language_of(tag) == DEFAULT
    if not rest:
        if english:  # the English wording as it always was
            return text(tag, "notice.window_days", days=int(days), days_text=number(tag, days))
        form = "one" if locale_of(tag).plural_form(int(days)) == "one" else "other"
        return text(
            tag, f"notice.window_days.{form}", days=int(days), days_text=number(tag, int(days))
        )
    if english:
        return text(tag, "notice.window_other", span=str(span))
    seconds = int(span.total_seconds())
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [
        counted(tag, key, count)
        for key, count in (
            ("time.hours", hours),
            ("time.minutes", minutes),
            ("time.seconds", seconds),
        )
        if count
    ]
    return text(tag, "notice.window_other", span=_joined(tag, parts))


def relative(tag: str | None, span: timedelta) -> str:
    """How far away a deadline is, in words in the customer's language ("in 42 Tagen", "in 1 Tag
    und 14 Stunden", "vor 2 Stunden"). Never more time than there is: whole days, hours and
    minutes are counted down (floored), to the granularity of the English page's countdown
    (noticeflow/web/format.py ``countdown``): days and hours under 10 days, days alone from 10,
    hours and minutes under a day, minutes under an hour, "less than a minute" under one."""
    seconds = span.total_seconds()
    ahead = seconds >= 0
    days, rest = divmod(int(abs(seconds)), 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    units: list[tuple[str, int]]
    if days:
        units = [("relative.days", days)] + ([("relative.hours", hours)] if days < 10 else [])
    elif hours:
        units = [("relative.hours", hours), ("relative.minutes", minutes)]
    else:
        units = [("relative.minutes", minutes)]
    parts = [counted(tag, key, count) for key, count in units if count]
    words = _joined(tag, parts) if parts else text(tag, "relative.under_a_minute")
    return text(tag, "relative.ahead" if ahead else "relative.ago", span=words)


# A message kept to be written later (an acknowledgement, stored sealed until mailed): its key
# and fields as JSON, so that it is written in the recipient's language when the mail is built.
# A field that is an instant is kept as {"instant": ISO 8601, "timezone": IANA name} and written
# with :func:`instant` in that language. A plain string is text as written (an operator's note,
# or a sentence an older version stored already rendered in English): it is shown as it is.
StoredMessage = str | list[Any]


def stored(key: str, **fields: Any) -> list[Any]:
    """A catalogue message to keep, written in the reader's language later (:func:`written`)."""
    if key not in MESSAGES[DEFAULT]:
        raise KeyError(f"no message {key!r} in the catalogue")
    return [key, fields]


def stored_instant(moment: datetime, timezone: str) -> dict[str, str]:
    """An instant as a stored message's field: written in words in the reader's language."""
    return {"instant": moment.isoformat(), "timezone": timezone}


def written(tag: str | None, message: StoredMessage) -> str:
    """A stored message in the language of ``tag``: a catalogue message with its fields (an
    instant in words, as :func:`instant` writes it), or a plain string as it is. A key a
    language lacks falls back to English (keys are never removed: stored rows name them)."""
    if isinstance(message, str):
        return message
    key, fields = message
    values = {
        name: instant(tag, datetime.fromisoformat(value["instant"]), value["timezone"])
        if isinstance(value, dict)
        else value
        for name, value in fields.items()
    }
    words = MESSAGES[language_of(tag)].get(key) or MESSAGES[DEFAULT][key]
    return words.format(**values) if values else words


def written_mail(tag: str | None, plan: dict[str, Any]) -> tuple[str, list[str]]:
    """A stored acknowledgement's headline and paragraphs in the language of ``tag``. A plan an
    older version stored (its headline a string: English already written) comes out as it is."""
    return written(tag, plan["headline"]), [written(tag, p) for p in plan["paragraphs"]]


# Our own wording, per language: the same keys in every catalogue (tests/test_languages.py).
# English is the wording the mails always had (byte for byte: the hashes of notices already sent
# and the tests pin it). A message is a str.format pattern; the vendor's words go in as fields.
MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "time.instant": "{day}, {clock} {zone}",
        "time.end_of_day": "end of {day} ({timezone})",
        "time.hours.one": "{count} hour",
        "time.hours.other": "{count} hours",
        "time.minutes.one": "{count} minute",
        "time.minutes.other": "{count} minutes",
        "time.seconds.one": "{count} second",
        "time.seconds.other": "{count} seconds",
        "time.and": "{first} and {last}",
        "relative.ahead": "in {span}",
        "relative.ago": "{span} ago",
        "relative.days.one": "{count} day",
        "relative.days.other": "{count} days",
        "relative.hours.one": "{count} hour",
        "relative.hours.other": "{count} hours",
        "relative.minutes.one": "{count} minute",
        "relative.minutes.other": "{count} minutes",
        "relative.under_a_minute": "less than a minute",
        "deadline.not_set": "not yet set",
        "notice.window_days": "{days} days from the day after delivery of this notice",
        "notice.window_days.one": "{days} day from the day after delivery of this notice",
        "notice.window_days.other": "{days} days from the day after delivery of this notice",
        "notice.window_other": "{span} from delivery of this notice",
        "notice.how_to_object_default": "Use the personal link in this message, or reply to it,"
        " before your deadline.",
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
        # Acknowledgements of a customer's answer (noticeflow/application/intake.py stores the
        # keys and fields, sealed; the mail is written in the recipient's language when sent).
        "ack.objection.headline": "We have received your objection",
        "ack.objection.received.timely": "Your objection to {subprocessor} was received on {when}"
        " and is recorded as timely (receipt {receipt}).",
        "ack.objection.received.late": "Your objection to {subprocessor} was received on {when}"
        " and is recorded as late (after your deadline) (receipt {receipt}).",
        "ack.objection.next.timely": "Our privacy team will contact you to resolve it. Until then"
        " the sub-processor will not be used for your organisation.",
        "ack.objection.next.late": "Our privacy team will contact you to resolve it. Until then"
        " the sub-processor will not be used for your organisation unless the objection is"
        " resolved otherwise.",
        "ack.changes.headline": "We have received your request for changes",
        "ack.changes.received.timely": "Your request for changes to the use of {subprocessor} was"
        " received on {when} and is recorded as timely (receipt {receipt}).",
        "ack.changes.received.late": "Your request for changes to the use of {subprocessor} was"
        " received on {when} and is recorded as late (after your deadline) (receipt {receipt}).",
        "ack.changes.next.timely": "Our privacy team will contact you about it. Until it is"
        " resolved the sub-processor will not be used for your organisation.",
        "ack.changes.next.late": "Our privacy team will contact you about it. As it came after"
        " your deadline, it does not hold the change back; should the change go ahead, your"
        " contract lets you terminate the affected service.",
        "ack.resolved.headline.objection": "Your objection has been resolved",
        "ack.resolved.headline.changes": "Your request for changes has been resolved",
        "ack.resolved.withdrawn.objection": "Your objection has been withdrawn; the sub-processor"
        " may be used for your organisation.",
        "ack.resolved.withdrawn.changes": "Your request for changes has been withdrawn; the"
        " sub-processor may be used for your organisation.",
        "ack.resolved.excluded.objection": "Your objection is upheld: the sub-processor will not"
        " be used for your organisation.",
        "ack.resolved.excluded.changes": "Your request for changes is upheld: the sub-processor"
        " will not be used for your organisation.",
        "ack.resolved.terminated.objection": "As agreed, the affected service will be terminated"
        " for your organisation.",
        "ack.resolved.terminated.changes": "As agreed, the affected service will be terminated"
        " for your organisation.",
        "ack.opt_in.headline": "Your opt-in is recorded",
        "ack.opt_in": "We have recorded your opt-in to {subprocessor} (receipt {receipt}). It will"
        " be used for your organisation from the effective date of the notice, and you can"
        " revoke this opt-in at any time.",
        "ack.revoke.headline": "Your opt-in is revoked",
        "ack.revoke.switched_off": "We have recorded that you revoked your opt-in to"
        " {subprocessor} (receipt {receipt}). It is no longer used for your organisation.",
        "ack.revoke.not_used": "We have recorded that you revoked your opt-in to {subprocessor}"
        " (receipt {receipt}). It will not be used for your organisation.",
        "ack.approve.headline": "Your approval is recorded",
        "ack.approve": "We have recorded that you approve the use of {subprocessor} (receipt"
        " {receipt}). It will be used for your organisation from the effective date of the"
        " notice.",
        "ack.withdraw.headline": "Your approval is withdrawn",
        "ack.withdraw": "We have recorded that you withdraw your approval of the use of"
        " {subprocessor} (receipt {receipt}). Under your contract the change still goes ahead"
        " unless you object or request changes before your deadline.",
        # The customer's action pages (noticeflow/web/actions.py: the words its code writes; the
        # prose is in the page templates, noticeflow/web/templates/<language>/).
        "page.action.object": "Objection",
        "page.action.request_changes": "Request for changes",
        "page.action.opt_in": "Opt-in",
        "page.action.revoke_opt_in": "Revocation of an opt-in",
        "page.closed.removal": "This notice is for your information only: there is nothing to"
        " answer.",
        "page.closed.cancelled": "This notice was cancelled, so nothing can be recorded on it any"
        " more.",
        "page.closed.not_sent": "This notice has not been sent yet.",
        "page.closed.opted_in": "You have already opted in; nothing more is needed.",
        "page.closed.not_opted_in": "You are not opted in, so there is no opt-in to revoke.",
        "page.closed.no_opt_in": "This notice does not ask for an opt-in.",
        "page.closed.no_changes": "Your contract does not provide for requests for changes; you"
        " may object.",
        "page.closed.expired": "This link has expired for that action.",
        "page.closed.other": "That action is not open through this link.",
        "page.nothing_recorded": " Nothing was recorded.",
        "page.error.csrf": "This form had expired or did not come from this page, so nothing was"
        " recorded. Please enter your answer again and press the button.",
        "page.error.not_in_link": "This link cannot do that; nothing was recorded. Please use the"
        " buttons below.",
        "page.error.nonce": "This form is out of date, so nothing was recorded. Please press the"
        " button again.",
        "page.error.not_utf8": "The form's text was not valid UTF-8, so nothing was recorded."
        " Characters that could not be read are shown as \ufffd: please check the text and send"
        " it again from this page.",
        "page.problem.control": "Your reason contained a character we cannot store ({code}, an"
        " invisible control character). We have removed it: please check the text and send it"
        " again.",
        "page.problem.empty": "Please tell us why you object: the reason must not be empty.",
        "page.problem.too_long": "Your reason is too long: {length} characters, at most {most}."
        " Please shorten it, or reply to our mail with the full text.",
    },
    "de": {
        "time.instant": "{day}, {clock} Uhr {zone}",
        "time.end_of_day": "{day}, 24:00 Uhr ({timezone})",
        "time.hours.one": "{count} Stunde",
        "time.hours.other": "{count} Stunden",
        "time.minutes.one": "{count} Minute",
        "time.minutes.other": "{count} Minuten",
        "time.seconds.one": "{count} Sekunde",
        "time.seconds.other": "{count} Sekunden",
        "time.and": "{first} und {last}",
        "relative.ahead": "in {span}",
        "relative.ago": "vor {span}",
        "relative.days.one": "{count} Tag",
        "relative.days.other": "{count} Tagen",
        "relative.hours.one": "{count} Stunde",
        "relative.hours.other": "{count} Stunden",
        "relative.minutes.one": "{count} Minute",
        "relative.minutes.other": "{count} Minuten",
        "relative.under_a_minute": "weniger als einer Minute",
        "deadline.not_set": "noch nicht festgelegt",
        "notice.window_days": "{days_text} Tage ab dem Tag nach Zugang dieser Mitteilung",
        "notice.window_days.one": "{days_text} Tag ab dem Tag nach Zugang dieser Mitteilung",
        "notice.window_days.other": "{days_text} Tage ab dem Tag nach Zugang dieser Mitteilung",
        "notice.window_other": "{span} ab Zugang dieser Mitteilung",
        "notice.how_to_object_default": "Nutzen Sie vor Ablauf Ihrer Frist den persönlichen Link"
        " in dieser Nachricht, oder antworten Sie auf sie.",
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
        "ack.objection.headline": "Wir haben Ihren Widerspruch erhalten",
        "ack.objection.received.timely": "Ihr Widerspruch gegen {subprocessor} ist am {when}"
        " eingegangen und als fristgerecht erfasst (Beleg {receipt}).",
        "ack.objection.received.late": "Ihr Widerspruch gegen {subprocessor} ist am {when}"
        " eingegangen und als verspätet (nach Ablauf Ihrer Frist) erfasst (Beleg {receipt}).",
        "ack.objection.next.timely": "Unser Datenschutzteam wird sich mit Ihnen in Verbindung"
        " setzen, um ihn zu klären. Bis dahin wird der Unterauftragsverarbeiter für Ihre"
        " Organisation nicht eingesetzt.",
        "ack.objection.next.late": "Unser Datenschutzteam wird sich mit Ihnen in Verbindung"
        " setzen, um ihn zu klären. Bis dahin wird der Unterauftragsverarbeiter für Ihre"
        " Organisation nicht eingesetzt, es sei denn, über den Widerspruch wird anders"
        " entschieden.",
        "ack.changes.headline": "Wir haben Ihr Änderungsverlangen erhalten",
        "ack.changes.received.timely": "Ihr Änderungsverlangen zum Einsatz von {subprocessor} ist"
        " am {when} eingegangen und als fristgerecht erfasst (Beleg {receipt}).",
        "ack.changes.received.late": "Ihr Änderungsverlangen zum Einsatz von {subprocessor} ist"
        " am {when} eingegangen und als verspätet (nach Ablauf Ihrer Frist) erfasst (Beleg"
        " {receipt}).",
        "ack.changes.next.timely": "Unser Datenschutzteam wird sich dazu mit Ihnen in Verbindung"
        " setzen. Bis es geklärt ist, wird der Unterauftragsverarbeiter für Ihre Organisation"
        " nicht eingesetzt.",
        "ack.changes.next.late": "Unser Datenschutzteam wird sich dazu mit Ihnen in Verbindung"
        " setzen. Da es nach Ablauf Ihrer Frist einging, hält es die Änderung nicht auf; wird"
        " die Änderung umgesetzt, erlaubt Ihnen Ihr Vertrag, den betroffenen Dienst zu kündigen.",
        "ack.resolved.headline.objection": "Ihr Widerspruch ist erledigt",
        "ack.resolved.headline.changes": "Ihr Änderungsverlangen ist erledigt",
        "ack.resolved.withdrawn.objection": "Ihr Widerspruch wurde zurückgenommen; der"
        " Unterauftragsverarbeiter darf für Ihre Organisation eingesetzt werden.",
        "ack.resolved.withdrawn.changes": "Ihr Änderungsverlangen wurde zurückgenommen; der"
        " Unterauftragsverarbeiter darf für Ihre Organisation eingesetzt werden.",
        "ack.resolved.excluded.objection": "Ihrem Widerspruch wird stattgegeben: Der"
        " Unterauftragsverarbeiter wird für Ihre Organisation nicht eingesetzt.",
        "ack.resolved.excluded.changes": "Ihrem Änderungsverlangen wird stattgegeben: Der"
        " Unterauftragsverarbeiter wird für Ihre Organisation nicht eingesetzt.",
        "ack.resolved.terminated.objection": "Wie vereinbart wird der betroffene Dienst für Ihre"
        " Organisation beendet.",
        "ack.resolved.terminated.changes": "Wie vereinbart wird der betroffene Dienst für Ihre"
        " Organisation beendet.",
        "ack.opt_in.headline": "Ihre Zustimmung ist erfasst",
        "ack.opt_in": "Wir haben Ihre Zustimmung zu {subprocessor} erfasst (Beleg {receipt})."
        " {subprocessor} wird ab dem Wirksamkeitsdatum der Mitteilung für Ihre Organisation"
        " eingesetzt; Sie können Ihre Zustimmung jederzeit widerrufen.",
        "ack.revoke.headline": "Ihre Zustimmung ist widerrufen",
        "ack.revoke.switched_off": "Wir haben erfasst, dass Sie Ihre Zustimmung zu {subprocessor}"
        " widerrufen haben (Beleg {receipt}). {subprocessor} wird für Ihre Organisation nicht"
        " mehr eingesetzt.",
        "ack.revoke.not_used": "Wir haben erfasst, dass Sie Ihre Zustimmung zu {subprocessor}"
        " widerrufen haben (Beleg {receipt}). {subprocessor} wird für Ihre Organisation nicht"
        " eingesetzt.",
        "ack.approve.headline": "Ihre Billigung ist erfasst",
        "ack.approve": "Wir haben erfasst, dass Sie den Einsatz von {subprocessor} billigen"
        " (Beleg {receipt}). {subprocessor} wird ab dem Wirksamkeitsdatum der Mitteilung für"
        " Ihre Organisation eingesetzt.",
        "ack.withdraw.headline": "Ihre Billigung ist zurückgenommen",
        "ack.withdraw": "Wir haben erfasst, dass Sie Ihre Billigung des Einsatzes von"
        " {subprocessor} zurücknehmen (Beleg {receipt}). Nach Ihrem Vertrag wird die Änderung"
        " dennoch umgesetzt, es sei denn, Sie widersprechen oder verlangen Änderungen vor Ablauf"
        " Ihrer Frist.",
        "page.action.object": "Widerspruch",
        "page.action.request_changes": "Änderungsverlangen",
        "page.action.opt_in": "Zustimmung",
        "page.action.revoke_opt_in": "Widerruf einer Zustimmung",
        "page.closed.removal": "Diese Mitteilung dient nur Ihrer Information: Es gibt nichts zu"
        " beantworten.",
        "page.closed.cancelled": "Diese Mitteilung wurde zurückgezogen; dazu kann nichts mehr"
        " erfasst werden.",
        "page.closed.not_sent": "Diese Mitteilung wurde noch nicht versandt.",
        "page.closed.opted_in": "Sie haben bereits zugestimmt; mehr ist nicht nötig.",
        "page.closed.not_opted_in": "Sie haben nicht zugestimmt; es gibt keine Zustimmung zu"
        " widerrufen.",
        "page.closed.no_opt_in": "Diese Mitteilung erfordert keine Zustimmung.",
        "page.closed.no_changes": "Ihr Vertrag sieht kein Änderungsverlangen vor; Sie können"
        " widersprechen.",
        "page.closed.expired": "Dieser Link ist für diese Aktion abgelaufen.",
        "page.closed.other": "Diese Aktion ist über diesen Link nicht möglich.",
        "page.nothing_recorded": " Es wurde nichts erfasst.",
        "page.error.csrf": "Dieses Formular war abgelaufen oder kam nicht von dieser Seite; es"
        " wurde nichts erfasst. Bitte geben Sie Ihre Antwort erneut ein und drücken Sie die"
        " Schaltfläche.",
        "page.error.not_in_link": "Das ist mit diesem Link nicht möglich; es wurde nichts"
        " erfasst. Bitte verwenden Sie die Schaltflächen unten.",
        "page.error.nonce": "Dieses Formular ist veraltet; es wurde nichts erfasst. Bitte drücken"
        " Sie die Schaltfläche erneut.",
        "page.error.not_utf8": "Der Text des Formulars war kein gültiges UTF-8; es wurde nichts"
        " erfasst. Zeichen, die nicht gelesen werden konnten, werden als \ufffd angezeigt: Bitte"
        " prüfen Sie den Text und senden Sie ihn von dieser Seite aus erneut.",
        "page.problem.control": "Ihre Begründung enthielt ein Zeichen, das wir nicht speichern"
        " können ({code}, ein unsichtbares Steuerzeichen). Wir haben es entfernt: Bitte prüfen"
        " Sie den Text und senden Sie ihn erneut.",
        "page.problem.empty": "Bitte sagen Sie uns, warum Sie widersprechen: Die Begründung darf"
        " nicht leer sein.",
        "page.problem.too_long": "Ihre Begründung ist zu lang: {length} Zeichen, höchstens"
        " {most}. Bitte kürzen Sie sie oder antworten Sie mit dem vollständigen Text auf unsere"
        " E-Mail.",
    },
}
