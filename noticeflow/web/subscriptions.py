"""Subscribing to the public list by e-mail (docs/public.md, "E-mail subscriptions"), no sign-in:

* ``POST /subprocessors/subscribe`` (the form on ``/subprocessors``: an address only): the same
  page for every valid address, whether new, pending or subscribed already (nothing is revealed
  about it); a bad address gets the form back with every problem (400). No CSRF token: the public
  page is cached for everyone, and a forged request can only queue a confirmation mail, which is
  bounded per address (noticeflow/subscriptions.py) and per client here.
* ``GET /subscribe/confirm/{token}`` shows a button; ``POST`` confirms (a mail scanner that
  fetches the link confirms nothing).
* ``GET /unsubscribe/{token}`` shows a button; ``POST`` — the button, or a mail client's RFC 8058
  one-click POST with the body ``List-Unsubscribe=One-Click`` — unsubscribes and erases the
  address, without sign-in or CSRF token (the signed link is the authority). Never on GET.

A forged, malformed or expired link gets a clear 4xx page and a security log line with the
token's fingerprint (never the token, never an address).

Rate limits: the form, per client address (10 a minute). A link whose signature verifies is
always honoured, never rate-limited: mailbox providers send RFC 8058 one-click POSTs from their
own servers, so many subscribers' unsubscribes share one address, and a 429 would lose one. Only
refused links count against their client (60 a minute, then 429). Behind a reverse proxy the
client address is the proxy's unless NOTICEFLOW_WEB_FORWARDED_ALLOW_IPS names it
(noticeflow/web/app.py serve(): uvicorn then takes X-Forwarded-For from it)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from noticeflow import subscriptions
from noticeflow.subscriptions import InvalidToken, Tokens
from noticeflow.web.context import Web, get_web, log, security_log
from noticeflow.web.public import render_public

router = APIRouter()

SUBSCRIBE_PER_CLIENT = 10  # subscribe requests per client address per minute
LINK_PER_CLIENT = 60  # refused confirm/unsubscribe links per client address per minute
MAX_FORM = 4096


def tokens(request: Request, web: Web) -> Tokens:
    found: Tokens | None = getattr(request.app.state, "subscription_tokens", None)
    if found is None:
        found = request.app.state.subscription_tokens = Tokens(
            web.settings.verification_keys, web.settings.public_url
        )
    return found


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _page(web: Web, request: Request, status_code: int = 200, **context: object) -> Response:
    response = render_public(
        web, request, "public/subscription.html", status_code=status_code, **context
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"  # the token stays off other sites' logs
    return response


def _limited(web: Web, request: Request, key: str, limit: int) -> Response | None:
    wait = web.limiter.hit(f"{key}:{_client(request)}", limit)
    if wait is None:
        return None
    response = _page(
        web,
        request,
        429,
        title="Too many requests",
        message=f"Too many requests from your address: try again in {int(wait) + 1} seconds.",
    )
    response.headers["Retry-After"] = str(int(wait) + 1)
    return response


@router.post("/subprocessors/subscribe", include_in_schema=False)
async def subscribe(request: Request, web: Web = Depends(get_web)) -> Response:
    limited = _limited(web, request, "subscribe", SUBSCRIBE_PER_CLIENT)
    if limited is not None:
        return limited
    raw = await request.body()
    typed = ""
    if len(raw) <= MAX_FORM:
        try:
            typed = await _typed(request, raw)
        except UnicodeDecodeError:
            return _page(
                web,
                request,
                400,
                title="Subscribe to sub-processor changes",
                problems=[
                    "the form's text was not valid UTF-8 (send it as this page's form does, in"
                    " UTF-8); nothing was stored"
                ],
                form=True,
            )
        except Exception:  # an unreadable form body: the same as an empty one
            typed = ""
    try:
        subscriber_id, outcome = await subscriptions.subscribe(web.pool, typed)
    except subscriptions.SubscriptionError as error:
        return _page(
            web,
            request,
            400,
            title="Subscribe to sub-processor changes",
            problems=error.problems,
            typed=typed[:300],
            form=True,
        )
    log.info("subscription requested", subscriber_id=subscriber_id, outcome=outcome.value)
    return _page(
        web,
        request,
        title="Check your inbox",
        message=(
            "If that address can receive mail, a message to confirm the subscription is on its"
            " way. Open its link and press the button to confirm; until then you get no mail"
            " from this list."
        ),
    )


async def _typed(request: Request, raw: bytes) -> str:
    """The ``email`` field. A urlencoded body is read as UTF-8 (what the page's form sends, and
    what ``curl -d`` sends unescaped), whatever charset it is labelled with — never as Latin-1,
    which would turn ``müller`` into ``mÃ¼ller``: bytes or escapes that are not UTF-8 raise
    :class:`UnicodeDecodeError`. Other bodies (multipart) are read by Starlette."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", ""):
        form = await request.form()
        value = form.get("email")
        return value if isinstance(value, str) else ""
    pairs = parse_qsl(
        raw.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict"
    )
    return next((value for name, value in pairs if name == "email"), "")


def _bad_link(web: Web, request: Request, error: InvalidToken, token: str, what: str) -> Response:
    """A refused link: counted against its client (a valid one never is), 429 past the limit."""
    limited = _limited(web, request, "subscription-link-refused", LINK_PER_CLIENT)
    if limited is not None:
        return limited
    security_log.warning(
        "subscription link refused",
        kind=error.kind,
        link=what,
        token_fingerprint=subscriptions.fingerprint(token),
        client=_client(request),
    )
    return _page(
        web,
        request,
        400,
        title="This link does not work",
        message=(
            f"This {what} link is not valid: {error}. Copy the whole link from the mail, or"
            " subscribe again on the sub-processor page."
        ),
    )


@router.api_route("/subscribe/confirm/{token}", methods=["GET", "HEAD"], include_in_schema=False)
async def confirm_page(token: str, request: Request, web: Web = Depends(get_web)) -> Response:
    try:
        _, state = await subscriptions.confirmation_state(web.pool, tokens(request, web), token)
    except InvalidToken as error:
        return _bad_link(web, request, error, token, "confirmation")
    if state is not None:  # expired, ended or confirmed already: no button that cannot work
        status, title, message = CONFIRMED_WORDS[state]
        return _page(web, request, status, title=title, message=message)
    return _page(
        web,
        request,
        title="Confirm your subscription",
        message="Press the button to get an informational mail for each sub-processor change.",
        action=f"/subscribe/confirm/{token}",
        button="Confirm the subscription",
    )


@router.post("/subscribe/confirm/{token}", include_in_schema=False)
async def confirm(token: str, request: Request, web: Web = Depends(get_web)) -> Response:
    try:
        subscriber_id, result = await subscriptions.confirm(web.pool, tokens(request, web), token)
    except InvalidToken as error:
        return _bad_link(web, request, error, token, "confirmation")
    log.info("subscription confirmation", subscriber_id=subscriber_id, outcome=result.value)
    status, title, message = CONFIRMED_WORDS[result]
    return _page(web, request, status, title=title, message=message)


SUBSCRIBED = (
    "You will get an informational mail when a sub-processor change is announced, postponed or"
    " cancelled. Each mail has a link to unsubscribe."
)
CONFIRMED_WORDS = {
    subscriptions.Confirmed.confirmed: (200, "Subscribed", SUBSCRIBED),
    subscriptions.Confirmed.already: (200, "Subscribed", SUBSCRIBED),
    subscriptions.Confirmed.expired: (
        410,
        "This link has expired",
        "This confirmation link has expired. Subscribe again on the sub-processor page.",
    ),
    subscriptions.Confirmed.gone: (
        410,
        "This subscription has ended",
        "This subscription was cancelled or erased. Subscribe again on the sub-processor page.",
    ),
}


@router.api_route("/unsubscribe/{token}", methods=["GET", "HEAD"], include_in_schema=False)
async def unsubscribe_page(token: str, request: Request, web: Web = Depends(get_web)) -> Response:
    try:
        tokens(request, web).read_unsubscribe(token)
    except InvalidToken as error:
        return _bad_link(web, request, error, token, "unsubscribe")
    return _page(
        web,
        request,
        title="Unsubscribe",
        message=(
            "Press the button to stop the mails about sub-processor changes. Your address is"
            " erased at once."
        ),
        action=f"/unsubscribe/{token}",
        button="Unsubscribe",
        one_click=True,
    )


@router.post("/unsubscribe/{token}", include_in_schema=False)
async def unsubscribe(token: str, request: Request, web: Web = Depends(get_web)) -> Response:
    """RFC 8058: a POST (``List-Unsubscribe=One-Click``) unsubscribes; the signed token is the
    authority, so neither a session nor a CSRF token is asked for."""
    try:
        subscriber_id, erased = await subscriptions.unsubscribe(
            web.pool, tokens(request, web), token
        )
    except InvalidToken as error:
        return _bad_link(web, request, error, token, "unsubscribe")
    log.info("unsubscribed", subscriber_id=subscriber_id, erased=erased)
    # The same page whether it was live or had ended already: one click is enough, twice too.
    return _page(
        web,
        request,
        title="Unsubscribed",
        message="You get no more mail from this list. Your address is erased.",
    )
