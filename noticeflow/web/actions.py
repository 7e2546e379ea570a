"""Customer action pages (rule 11): ``/a/<token>`` shows, only a POST acts.

* ``GET /a/<token>`` verifies the signed link and shows the notice, this customer's deadline in its
  own timezone and words, where it stands (case open? opted in? switched on?) and the actions open
  to it now. It changes nothing, so a mail scanner that fetches links acts on nothing.
* ``POST /a/<token>`` (CSRF-checked) writes the action to the intake of record
  (``control.receive``, channel ``link``), wakes the notice (``Web.hand_over``, a few seconds at
  most) and redirects (303) to the receipt page. A hidden per-render nonce is the action's
  idempotency key, so a double click or a browser's resubmit is the same receipt.
* ``GET /a/<token>/receipts/<receipt_id>`` shows one receipt of this notice and customer;
  ``…/<receipt_id>.jws`` downloads it signed (noticeflow/receipts.py), and
  ``GET /.well-known/noticeflow-receipts.json`` publishes the keys that check it (no sign-in).

A token is bound to a notice, a customer and an action (``object`` or ``opt_in``; an opt-in link
also revokes). It stays usable while its action is open: an expired opt-in link still revokes
while the customer is opted in. Forged, altered, malformed, expired, unknown-notice and
erased-customer links get a clear 4xx page and a security log line that names the refusal and the
token's fingerprint — never the token, an address or a client address — and nothing else happens,
except that a button pressed for a customer erased for good (410 "erased") is also recorded in the
intake as a rejection ("customer erased") with ids only.
Per-token and per-client rate limits answer 429 with Retry-After.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import orjson
import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser

from noticeflow import control, intake, receipts
from noticeflow.annex import CustomerList, customer_list
from noticeflow.crypto import ERASED, CustomerKey, Field, load_keys, open_sealed
from noticeflow.domain import language as lang
from noticeflow.domain.deadlines import describe_instant
from noticeflow.domain.errors import InputError
from noticeflow.domain.notice import NoticeSpec
from noticeflow.domain.render import render_notice_text, silence_words
from noticeflow.domain.rules import Authorisation, ChangeKind, Phase, consent_required, is_timely
from noticeflow.domain.text import FREE_TEXT_MAX, control_character
from noticeflow.links import ActionLink, InvalidLink, LinkAction, fingerprint
from noticeflow.web import csrf
from noticeflow.web.context import Web, get_web, security_log
from noticeflow.web.format import zone

log = structlog.get_logger(__name__)
router = APIRouter(include_in_schema=False)

SENT = {Phase.notifying, Phase.window_open, Phase.awaiting_effective_date, Phase.active}
# What each kind of link may do: an opt-in link also takes its opt-in back (rule 8).
FAMILY: dict[LinkAction, tuple[str, ...]] = {
    LinkAction.object: ("object", "request_changes"),
    LinkAction.opt_in: ("opt_in", "revoke_opt_in"),
}
REASONED = {"object", "request_changes"}  # the actions a customer gives a reason for
BODY_MAX = 2_000_000  # a reason of FREE_TEXT_MAX characters, percent-encoded, fits
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_RECEIPT_ID = re.compile(r"^r-[0-9a-f]{20}$")
ACTION_WORDS = {
    "object": "Objection",
    "request_changes": "Request for changes",
    "opt_in": "Opt-in",
    "revoke_opt_in": "Revocation of an opt-in",
}


class Refusal(Exception):
    """A link that may not be used: the page to show and the code for the security log."""

    def __init__(
        self, status: int, code: str, title: str, message: str, hint: str | None = None
    ) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.title = title
        self.message = message
        self.hint = hint


ASK_AGAIN = (
    "Please open the link in the most recent mail we sent about this notice, or reply to that mail."
)


def _link_refusal(error: InvalidLink) -> Refusal:
    if error.kind == "malformed":
        return Refusal(
            400,
            "malformed",
            "This link is incomplete",
            "The address you opened is not a complete link from our mail.",
            "Links are long and some mail programs break them over two lines: click the link in"
            " the mail rather than copying it, or copy all of it. " + ASK_AGAIN,
        )
    return Refusal(
        403,
        "forged",
        "This link is not valid",
        "The link does not match any link we sent: it may have been altered, or copied with a"
        " character missing or changed.",
        ASK_AGAIN,
    )


def deadline_words(deadline: datetime, timezone: str, language: str | None = None) -> str:
    """``Monday 14 December 2026, 23:59 EST (America/New_York)``: a deadline at a local midnight
    (whole-day windows) is the last minute of the day before. In another language as the
    customer's mail says it (domain/language.py: "…, 24:00 Uhr (Europe/Berlin)")."""
    name = zone(timezone).key
    if lang.language_of(language) != lang.DEFAULT:
        return lang.deadline(language, deadline, name)
    local = deadline.astimezone(zone(name))
    if (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0):
        deadline -= timedelta(minutes=1)
    return describe_instant(deadline, name)


def instant_words(instant: datetime, timezone: str, language: str | None = None) -> str:
    return lang.instant(language, instant, zone(timezone).key)


def page_template(name: str, language: str | None) -> str:
    """A page's template in the customer's language: ``de/action.html`` for German, the
    top-level one for English (and a language without page templates)."""
    base = lang.language_of(language)
    return name if base == lang.DEFAULT else f"{base}/{name}"


def action_words(language: str | None) -> dict[str, str]:
    """What each action is called, in the customer's language (ACTION_WORDS in English)."""
    if lang.language_of(language) == lang.DEFAULT:
        return ACTION_WORDS
    return {action: lang.text(language, f"page.action.{action}") for action in ACTION_WORDS}


@dataclass
class Standing:
    """A link's notice and customer as the records have them now."""

    link: ActionLink
    spec: NoticeSpec
    phase: Phase
    notice_text: str
    effective_at: datetime
    recipient: asyncpg.Record
    customer_name: str | None
    key: CustomerKey
    case: asyncpg.Record | None
    now: datetime

    @property
    def timezone(self) -> str:
        return zone(self.recipient["timezone"]).key

    @property
    def language(self) -> str:
        """The customer's language as frozen with the notice's audience (BCP 47 tag)."""
        return str(self.recipient.get("language") or lang.DEFAULT)

    def say(self, key: str, **fields: Any) -> str:
        """One of the page's messages in the customer's language (domain/language.py)."""
        return lang.text(self.language, key, **fields)

    @property
    def deadline(self) -> datetime | None:
        value: datetime | None = self.recipient["deadline"]
        return value

    @property
    def opted_in(self) -> bool:
        return bool(self.recipient["opted_in"])

    @property
    def activated(self) -> bool:
        return bool(self.recipient["activated"])

    @property
    def expired(self) -> bool:
        return self.link.expired(self.now)

    @property
    def authorisation(self) -> str:
        """What the customer's contract asks (as frozen with the audience)."""
        return str(self.recipient["authorisation"])

    @property
    def consent(self) -> bool:
        """Silence is refusal for this customer: an opt-in notice, or a specific contract."""
        return consent_required(self.spec.opt_in, self.authorisation)

    @property
    def may_opt_in(self) -> bool:
        """An opt-in (an authorisation; a dora contract's approval) means something here."""
        return self.consent or self.authorisation == Authorisation.dora

    def silence(self) -> str:
        return silence_words(
            self.spec.subprocessor, self.spec.opt_in, self.authorisation, self.language
        )

    def open_actions(self) -> list[str]:
        """The actions this link may take now, the link's own action first."""
        opt_in_link = self.link.action is LinkAction.opt_in and self.may_opt_in
        if self.spec.kind is ChangeKind.removal:
            return []  # informational: nothing to object to or opt in to
        if self.phase is Phase.cancelled:
            # Nothing new on a cancelled notice; a customer switched on before it keeps its way out
            # (a revoked opt-in; a dora approval's withdrawal would switch nothing off).
            way_out = opt_in_link and self.consent and self.opted_in and self.activated
            return ["revoke_opt_in"] if way_out else []
        if self.phase not in SENT:
            return []
        if self.link.action is LinkAction.object:
            if self.expired:
                return []
            dora = self.authorisation == Authorisation.dora
            return ["object", "request_changes"] if dora else ["object"]
        if not opt_in_link:
            return []
        if self.opted_in:
            if not self.consent:  # a dora approval: withdrawn only while it can still matter
                return (
                    ["revoke_opt_in"] if self.deadline is None or self.now < self.deadline else []
                )
            return ["revoke_opt_in"]  # open for as long as the customer is opted in
        return [] if self.expired else ["opt_in"]

    def closed_because(self, action: str) -> str:
        """Why ``action`` is not open now, in the customer's words."""
        if self.spec.kind is ChangeKind.removal:
            return self.say("page.closed.removal")
        if self.phase is Phase.cancelled:
            return self.say("page.closed.cancelled")
        if self.phase not in SENT:
            return self.say("page.closed.not_sent")
        if action == "opt_in" and self.opted_in:
            return self.say("page.closed.opted_in")
        if action == "revoke_opt_in" and not self.opted_in:
            return self.say("page.closed.not_opted_in")
        if action == "opt_in" and not self.may_opt_in:
            return self.say("page.closed.no_opt_in")
        if action == "request_changes" and self.authorisation != Authorisation.dora:
            return self.say("page.closed.no_changes")
        if self.expired:
            return self.say("page.closed.expired")
        return self.say("page.closed.other")


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _refuse(
    web: Web,
    request: Request,
    refusal: Refusal,
    token: str,
    link: ActionLink | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The refusal page and its security log line (ids and the token's fingerprint only)."""
    ids: dict[str, Any] = {}
    if link is not None:  # the signature held: the ids are ours, not whatever was sent
        ids = {"notice_id": link.notice_id, "customer_id": link.customer_id, "action": link.action}
    security_log.warning(
        "action link refused",
        reason=refusal.code,
        status=refusal.status,
        method=request.method,
        token_sha256=fingerprint(token),
        **ids,
    )
    response: Response = web.render(
        request,
        "action_error.html",
        status_code=refusal.status,
        title=refusal.title,
        message=refusal.message,
        hint=refusal.hint,
        csrf_token="",  # a refusal page starts no session
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _rate_limited(web: Web, request: Request, token: str) -> Response | None:
    settings = web.settings
    waits = {
        "token": web.limiter.hit(f"link-token:{fingerprint(token)}", settings.link_rate_per_token),
        "client": web.limiter.hit(f"link-client:{_client(request)}", settings.link_rate_per_client),
    }
    over = {scope: wait for scope, wait in waits.items() if wait is not None}
    if not over:
        return None
    retry = max(1, math.ceil(max(over.values())))
    refusal = Refusal(
        429,
        "rate_limited_" + "_".join(sorted(over)),
        "Too many requests",
        "This link was opened or submitted too many times in a short while.",
        f"Please wait {retry} seconds and try again. Nothing was recorded from the requests"
        " that were turned away.",
    )
    return _refuse(web, request, refusal, token, headers={"Retry-After": str(retry)})


async def _load(web: Web, token: str, now: datetime, *, allow_expired: bool = False) -> Standing:
    """The link's standing, or the Refusal to show."""
    try:
        link = web.signer.read(token)
    except InvalidLink as error:
        raise _link_refusal(error) from None
    pool = web.pool
    notice = await pool.fetchrow(
        "SELECT spec, notice_text, phase, effective_at FROM notices WHERE notice_id = $1",
        link.notice_id,
    )
    if notice is None:
        raise Refusal(
            404,
            "unknown_notice",
            "We cannot find this notice",
            "The notice this link was made for is not in our records.",
            ASK_AGAIN,
        )
    key = (await load_keys(pool, [link.customer_id])).get(link.customer_id)
    known = await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM customers WHERE customer_id = $1)", link.customer_id
    )
    if key is None or not known:  # erased (for good: it never gets a key again)
        raise Refusal(
            410,
            "erased",
            "This link is no longer available",
            "The organisation this link was made for is no longer in our records, so the link"
            " cannot be used any more.",
            "If you believe this is a mistake, please contact us by replying to our mail.",
        )
    recipient = await pool.fetchrow(
        "SELECT * FROM recipients WHERE notice_id = $1 AND customer_id = $2",
        link.notice_id,
        link.customer_id,
    )
    if recipient is None:
        raise Refusal(
            404,
            "not_a_recipient",
            "We cannot find this notice for your organisation",
            "Our records do not show this notice as sent to the organisation this link names.",
            ASK_AGAIN,
        )
    name = open_sealed(key, Field.CUSTOMER_NAME, recipient["name"])
    case = await pool.fetchrow(
        "SELECT status, timely, received_at, resolved_at, request FROM objections"
        " WHERE notice_id = $1 AND customer_id = $2"
        " ORDER BY (status = 'open') DESC, received_at DESC LIMIT 1",
        link.notice_id,
        link.customer_id,
    )
    standing = Standing(
        link=link,
        spec=NoticeSpec.model_validate_json(notice["spec"]),
        phase=Phase(notice["phase"]),
        notice_text=notice["notice_text"],
        effective_at=notice["effective_at"],
        recipient=recipient,
        customer_name=None if name == ERASED else name,
        key=key,
        case=case,
        now=now,
    )
    if standing.expired and not allow_expired and not standing.open_actions():
        raise Refusal(
            410,
            "expired",
            "This link has expired",
            f"This link was valid until {instant_words(link.expires_at, standing.timezone)}.",
            "If you still want to tell us something about this notice, please reply to our mail.",
        )
    return standing


async def _receipts(web: Web, standing: Standing) -> list[asyncpg.Record]:
    return list(
        await web.pool.fetch(
            f"SELECT {intake.RECEIPT_COLUMNS} FROM intake WHERE notice_id = $1"
            " AND customer_id = $2 AND channel = 'link' ORDER BY seq DESC LIMIT 10",
            standing.link.notice_id,
            standing.link.customer_id,
        )
    )


def _page_path(request: Request, token: str) -> str:
    return f"{request.scope.get('root_path', '')}/a/{token}"


async def _page(
    web: Web,
    request: Request,
    token: str,
    standing: Standing,
    *,
    status_code: int = 200,
    error: str | None = None,
    problems: list[str] | None = None,
    reason: str = "",
    nonce: str | None = None,
) -> Response:
    actions = standing.open_actions()
    primary = "object" if standing.link.action is LinkAction.object else None
    if primary is None:
        primary = "revoke_opt_in" if "revoke_opt_in" in actions else "opt_in"
    deadline = standing.deadline
    tz, tag = standing.timezone, standing.language
    english = lang.language_of(tag) == lang.DEFAULT
    return web.render(
        request,
        page_template("action.html", tag),
        status_code=status_code,
        language=tag,
        # Another language's page: instants with Babel, and the notice in the customer's
        # language above its English text of record (as the mail shows it).
        when=lambda moment: instant_words(moment, tz, tag),
        countdown_text=None
        if english or deadline is None
        else lang.relative(tag, deadline - standing.now),
        translated_text=None if english else render_notice_text(standing.spec, tag),
        page=_page_path(request, token),
        s=standing,
        spec=standing.spec,
        actions=actions,
        primary=primary,
        nonce=nonce or secrets.token_urlsafe(18),
        reason=reason,
        error=error,
        problems=problems or [],
        reason_max=FREE_TEXT_MAX,
        deadline_text=deadline_words(deadline, tz, tag) if deadline else None,
        deadline_utc=instant_words(deadline, "UTC", tag) if deadline else None,
        deadline_passed=deadline is not None and standing.now >= deadline,
        effective_text=instant_words(standing.effective_at, tz, tag),
        case_received=instant_words(standing.case["received_at"], tz, tag)
        if standing.case
        else None,
        opted_in_text=instant_words(standing.recipient["opted_in_at"], tz, tag)
        if standing.recipient["opted_in_at"]
        else None,
        activated_text=instant_words(standing.recipient["activated_at"], tz, tag)
        if standing.recipient["activated_at"]
        else None,
        receipts=await _receipts(web, standing),
        action_words=action_words(tag),
        in_use=await _in_use(web, standing),
    )


async def _in_use(web: Web, standing: Standing) -> CustomerList | None:
    """The sub-processors in use for the customer now, from the events (noticeflow/annex.py);
    None for a customer the list refuses (erased, unknown)."""
    try:
        return await customer_list(web.pool, standing.link.customer_id, standing.now)
    except InputError:
        return None


@router.get("/a/{token}")
@router.head("/a/{token}", include_in_schema=False)  # link checkers and mail scanners
async def action_page(request: Request, token: str, web: Web = Depends(get_web)) -> Response:
    """The notice and what this customer can do about it now; changes nothing."""
    limited = _rate_limited(web, request, token)
    if limited is not None:
        return limited
    try:
        standing = await _load(web, token, datetime.now(UTC))
    except Refusal as refusal:
        return _refuse(web, request, refusal, token, _signed(web, token))
    return await _page(web, request, token, standing)


def _signed(web: Web, token: str) -> ActionLink | None:
    try:
        return web.signer.read(token)
    except InvalidLink:
        return None


async def _form(request: Request) -> dict[str, str] | None:
    """The posted fields (first value of each), read within BODY_MAX; None if unusable.

    The body must be UTF-8 (what the page's own form sends), whatever its charset label says:
    bytes or %-escapes that are not UTF-8 are read with U+FFFD in their place and the form marked
    (``utf8``), to be refused — never kept replaced or, as Starlette reads a multipart field that
    is not UTF-8, as Latin-1."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded", ""):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > BODY_MAX:
            raise HTTPException(
                413, f"The form is larger than {BODY_MAX:,} bytes; nothing was recorded."
            )
    found = _Posted()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text, found.utf8 = body.decode("utf-8", "replace"), False
    if kind == "multipart/form-data":
        headers = _utf8_multipart(request.headers.get("content-type", ""))
        if headers is None:
            return None
        try:  # fields only (no files); the text re-encoded, so every part decodes as UTF-8
            form = await MultiPartParser(
                headers, _once(text.encode()), max_files=0, max_fields=20,
                max_part_size=3 * BODY_MAX,  # each unreadable byte is U+FFFD, 3 bytes
            ).parse()  # fmt: skip
        except Exception:  # a broken multipart body: not our page's form
            return None
        for name, value in form.multi_items():
            if isinstance(value, str):
                found.setdefault(name, value)
        return found
    try:
        try:
            pairs = _pairs(text, "strict")
        except UnicodeDecodeError:  # %-escapes of bytes that are not UTF-8
            pairs, found.utf8 = _pairs(text, "replace"), False
    except ValueError:
        return None
    for name, value in pairs:
        found.setdefault(name, value)
    return found


def _pairs(text: str, errors: str) -> list[tuple[str, str]]:
    return parse_qsl(
        text, keep_blank_values=True, encoding="utf-8", errors=errors, max_num_fields=20
    )


def _utf8_multipart(content_type: str) -> Headers | None:
    """The multipart Content-Type to parse with: its boundary, and charset UTF-8 whatever the
    label says (Starlette decodes each part by the label's charset, and by Latin-1 a part it
    cannot or a charset it does not know: UTF-8 words labelled iso-8859-1 were kept garbled).
    None without a boundary, or with one no client sends (a quote or backslash in it)."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary", b"").decode("latin-1")
    if not boundary or '"' in boundary or "\\" in boundary:
        return None
    return Headers({"content-type": f'multipart/form-data; boundary="{boundary}"; charset=utf-8'})


async def _once(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data


class _Posted(dict[str, str]):
    """A form's fields; ``utf8`` is False when its body was not UTF-8 (nothing may be recorded
    from it: its words would be kept replaced or garbled)."""

    utf8 = True


def reason_problems(text: str, language: str | None = None) -> tuple[str, list[str]]:
    """The reason as it can be kept, and every problem with it, in plain words (in the
    customer's language)."""

    def count(value: int) -> str:
        return (
            f"{value:,}"
            if lang.language_of(language) == lang.DEFAULT
            else lang.number(language, value)
        )

    problems = []
    odd = control_character(text, allowed="\t\n\r\u2028\u2029")
    if odd is not None:
        kept = "\t\n\r\u2028\u2029"
        cleaned = "".join(ch for ch in text if ch in kept or control_character(ch) is None)
        problems.append(lang.text(language, "page.problem.control", code=f"U+{ord(odd):04X}"))
        text = cleaned
    stripped = text.strip()
    if not stripped:
        problems.append(lang.text(language, "page.problem.empty"))
    elif len(stripped) > FREE_TEXT_MAX:
        problems.append(
            lang.text(
                language,
                "page.problem.too_long",
                length=count(len(stripped)),
                most=count(FREE_TEXT_MAX),
            )
        )
    return text, problems


def _form_key(standing: Standing, action: str, nonce: str, reason: str) -> str:
    """The idempotency key of one form submission: the page's nonce, and for an objection a keyed
    digest of its words (the same form sent twice is one receipt; edited words are a new one)."""
    # Keys are the notice's, so a key names its customer: a nonce copied from another
    # customer's page can never meet (or reveal) that customer's receipt.
    who = standing.key.ident("link-who", nonce)[:8]
    if action != "object":
        return f"link-{nonce}-{who}"
    return f"link-{nonce}-{who}-{standing.key.ident('link-form', reason)[:16]}"


async def _record_erased(web: Web, request: Request, link: ActionLink) -> None:
    """A customer erased for good pressed a button: a recorded rejection ("customer erased")
    with ids only — whatever the form said is not read, let alone kept."""
    fields = await _form(request)
    try:
        csrf.check(request, (fields or {}).get(csrf.FIELD))
    except HTTPException:
        return  # not from our page: nothing to record
    family = FAMILY[link.action]
    action = (fields or {}).get("action", "")
    await intake.record(
        web.pool,
        link.notice_id,
        action if action in family else family[0],
        {"customer_id": link.customer_id, "channel": "link"},
        channel="link",
        problem=intake.erased_reason(link.customer_id),
    )


def _receipt_path(request: Request, token: str, receipt_id: str) -> str:
    return f"{_page_path(request, token)}/receipts/{receipt_id}"


@router.post("/a/{token}")
async def act(request: Request, token: str, web: Web = Depends(get_web)) -> Response:
    """Record the customer's action (after the CSRF check) and show its receipt."""
    limited = _rate_limited(web, request, token)
    if limited is not None:
        return limited
    try:
        standing = await _load(web, token, datetime.now(UTC))
    except Refusal as refusal:
        signed = _signed(web, token)
        if refusal.code == "erased" and signed is not None:
            await _record_erased(web, request, signed)
        return _refuse(web, request, refusal, token, signed)
    link = standing.link
    fields = await _form(request)
    if fields is None:
        return _refuse(
            web,
            request,
            Refusal(
                400,
                "bad_form",
                "That form could not be read",
                "Nothing was recorded. Please go back to the page, reload it and try again.",
            ),
            token,
            link,
        )
    try:
        csrf.check(request, fields.get(csrf.FIELD))
    except HTTPException:
        security_log.warning(
            "action form refused", reason="csrf", token_sha256=fingerprint(token),
            notice_id=link.notice_id, customer_id=link.customer_id,
        )  # fmt: skip
        # The typed text is not shown again: it may have come from another site's form.
        return await _page(
            web,
            request,
            token,
            standing,
            status_code=403,
            error=standing.say("page.error.csrf"),
        )
    action = fields.get("action", "")
    nonce = fields.get("nonce", "")
    if action not in FAMILY[link.action]:
        security_log.warning(
            "action form refused", reason="action_not_in_link", token_sha256=fingerprint(token),
            notice_id=link.notice_id, customer_id=link.customer_id,
        )  # fmt: skip
        return await _page(
            web,
            request,
            token,
            standing,
            status_code=400,
            error=standing.say("page.error.not_in_link"),
        )
    if not _NONCE.match(nonce):
        return await _page(
            web,
            request,
            token,
            standing,
            status_code=400,
            error=standing.say("page.error.nonce"),
            reason=fields.get("reason", "") if action in REASONED else "",
        )
    if isinstance(fields, _Posted) and not fields.utf8:
        return await _page(
            web,
            request,
            token,
            standing,
            status_code=422,
            error=standing.say("page.error.not_utf8"),
            reason=fields.get("reason", "") if action in REASONED else "",
            nonce=nonce,
        )
    reason = ""
    if action in REASONED:
        reason, problems = reason_problems(fields.get("reason", ""), standing.language)
        if problems:
            return await _page(
                web,
                request,
                token,
                standing,
                status_code=422,
                problems=problems,
                reason=reason,
                nonce=nonce,
            )
        reason = reason.strip()
    key = _form_key(standing, action, nonce, reason)
    earlier = await web.pool.fetchrow(
        "SELECT receipt_id, customer_id FROM intake WHERE notice_id = $1 AND action = $2"
        " AND idempotency_key = $3",
        link.notice_id,
        action,
        key,
    )
    if earlier is not None and earlier["customer_id"] == link.customer_id:
        # The same form again (a double click, a resubmit): the same receipt.
        return RedirectResponse(
            _receipt_path(request, token, earlier["receipt_id"]), status_code=303
        )
    if action not in standing.open_actions():
        return await _page(
            web,
            request,
            token,
            standing,
            status_code=409,
            error=standing.closed_because(action) + standing.say("page.nothing_recorded"),
        )
    payload: dict[str, Any] = {
        "customer_id": link.customer_id,
        "by": "customer",
        "channel": "link",
        "idempotency_key": key,
    }
    if action in REASONED:
        payload["reason"] = reason
    try:
        receipt = await control.receive(web.pool, link.notice_id, action, payload, channel="link")
    except InputError as error:  # the notice vanished between the page and the post
        return _refuse(
            web,
            request,
            Refusal(404, "unknown_notice", "We cannot find this notice", str(error), ASK_AGAIN),
            token,
            link,
        )
    # Woken through the web's coalescing waker: a burst of posts costs a few signals.
    judged, pending_because = await web.hand_over(
        receipt, wait_seconds=web.settings.link_wait_seconds
    )
    log.info(
        "customer action received",
        notice_id=link.notice_id,
        customer_id=link.customer_id,
        action=action,
        receipt_id=judged.receipt_id,
        status=judged.status,
        repeat=judged.repeat,
        pending_because=pending_because,
    )
    return RedirectResponse(_receipt_path(request, token, judged.receipt_id), status_code=303)


async def _receipt_of(
    web: Web, request: Request, token: str, receipt_id: str
) -> tuple[Standing, intake.Receipt] | Response:
    """This link's standing and one receipt of its notice and customer, or the refusal page
    (viewing is not acting: an expired link still shows and hands out its receipts)."""
    limited = _rate_limited(web, request, token)
    if limited is not None:
        return limited
    now = datetime.now(UTC)
    try:
        standing = await _load(web, token, now, allow_expired=True)
    except Refusal as refusal:
        return _refuse(web, request, refusal, token, _signed(web, token))
    link = standing.link
    receipt = await intake.get(web.pool, receipt_id) if _RECEIPT_ID.match(receipt_id) else None
    if receipt is None or (receipt.notice_id, receipt.customer_id) != (
        link.notice_id,
        link.customer_id,
    ):
        return _refuse(
            web,
            request,
            Refusal(
                404,
                "receipt_not_for_this_link",
                "We cannot find this receipt",
                "There is no receipt with this number for your organisation on this notice.",
                "Your receipts for this notice are listed on the notice page.",
            ),
            token,
            link,
        )
    return standing, receipt


@router.get(receipts.JWKS_PATH)
@router.head(receipts.JWKS_PATH, include_in_schema=False)
async def receipt_keys() -> Response:
    """The receipt-signing public keys, current and previous, as a JWK Set (RFC 7517): public,
    no sign-in, so that anyone holding a receipt can check it."""
    return Response(orjson.dumps(receipts.jwks()), media_type="application/jwk-set+json")


# Before the receipt page's route: its {receipt_id} would take "r-….jws" too.
@router.get("/a/{token}/receipts/{receipt_id}.jws")
@router.head("/a/{token}/receipts/{receipt_id}.jws", include_in_schema=False)
async def receipt_download(
    request: Request, token: str, receipt_id: str, web: Web = Depends(get_web)
) -> Response:
    """The receipt as a signed JWS (noticeflow/receipts.py) to keep: ids and instants only,
    checked with `noticeflow receipts verify` or the keys at /.well-known/noticeflow-receipts.json.
    """
    found = await _receipt_of(web, request, token, receipt_id)
    if isinstance(found, Response):
        return found
    _, receipt = found
    text_sha256 = await web.pool.fetchval(
        "SELECT text_sha256 FROM notices WHERE notice_id = $1", receipt.notice_id
    )
    case = await web.pool.fetchrow(  # the case it opened: judged timely or late (rule 7)
        "SELECT timely, (SELECT deadline FROM recipients r WHERE r.notice_id = o.notice_id"
        "   AND r.customer_id = o.customer_id) AS deadline"
        " FROM objections o WHERE o.notice_id = $1 AND o.receipt_id = $2",
        receipt.notice_id,
        receipt.receipt_id,
    )
    body = receipts.claims(
        receipt,
        str(text_sha256),
        datetime.now(UTC),
        timely=None if case is None else case["timely"],
        deadline=None if case is None else case["deadline"],
    )
    return Response(
        receipts.sign(body),
        media_type=receipts.MEDIA_TYPE,
        headers={
            "Content-Disposition": (
                f'attachment; filename="noticeflow-receipt-{receipt.receipt_id}.jws"'
            )
        },
    )


@router.get("/a/{token}/receipts/{receipt_id}")
@router.head("/a/{token}/receipts/{receipt_id}", include_in_schema=False)
async def receipt_page(
    request: Request, token: str, receipt_id: str, web: Web = Depends(get_web)
) -> Response:
    """One receipt of this link's notice and customer (viewing it is not acting: an expired link
    still shows its receipts)."""
    found = await _receipt_of(web, request, token, receipt_id)
    if isinstance(found, Response):
        return found
    standing, receipt = found
    link = standing.link
    tz, tag = standing.timezone, standing.language
    words = action_words(tag)
    timely = is_timely(receipt.received_at, standing.deadline)
    mail_owed = await web.pool.fetchval(
        "SELECT mail_due IS NOT NULL FROM intake WHERE receipt_id = $1", receipt.receipt_id
    )
    # A receipt shown again (a resubmitted old form lands here too) says what came after it:
    # "opted in" is not the truth any more once a later revocation was accepted.
    since = None
    if receipt.action in ("opt_in", "revoke_opt_in"):
        since = await web.pool.fetchrow(
            "SELECT receipt_id, action, received_at FROM intake WHERE notice_id = $1"
            " AND customer_id = $2 AND action IN ('opt_in', 'revoke_opt_in')"
            " AND status = 'accepted' AND received_at > $3"
            " ORDER BY received_at DESC, seq DESC LIMIT 1",
            link.notice_id,
            link.customer_id,
            receipt.received_at,
        )
        if since is not None and since["action"] == receipt.action:
            since = None
    response: Response = web.render(
        request,
        page_template("action_receipt.html", tag),
        language=tag,
        since=None
        if since is None
        else {
            "receipt_id": since["receipt_id"],
            "what": words.get(since["action"], since["action"]),
            "when": instant_words(since["received_at"], tz, tag),
            "path": _receipt_path(request, token, since["receipt_id"]),
        },
        page=_page_path(request, token),
        s=standing,
        spec=standing.spec,
        receipt=receipt,
        action_words=words,
        received_local=instant_words(receipt.received_at, tz, tag),
        received_utc=instant_words(receipt.received_at.replace(microsecond=0), "UTC", tag),
        timely=timely,
        deadline_text=deadline_words(standing.deadline, tz, tag) if standing.deadline else None,
        mail_owed=bool(mail_owed),
        download=_receipt_path(request, token, receipt.receipt_id) + ".jws",
        jwks_path=receipts.JWKS_PATH,
    )
    if receipt.pending:
        response.headers["Refresh"] = "3"  # no script needed: the browser asks again
    return response
