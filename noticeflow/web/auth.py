"""Who is asking: a signed-in session (local account or OpenID Connect) or the bearer token.

Every ops route, page or API, depends on :func:`require` with the role it needs, and an action
also asks :func:`may_act`. Pages send a visitor without a session to the sign-in page; the API
answers 401. The bearer token (``Authorization: Bearer $NOTICEFLOW_WEB_TOKEN``) is for scripts:
it acts as the user ``api-token`` with every role, but approves nothing (four eyes needs a
person). Another authorization scheme (a proxy's Basic credentials) is not ours and is ignored.

Sessions live in the database (``web_sessions``, see :mod:`noticeflow.users`); the signed cookie
holds only the session id and the CSRF token. Signing out revokes the row, so a copied cookie is
worth nothing afterwards. An OpenID Connect user never shares a name with a local account.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from noticeflow import users
from noticeflow.config import reveal
from noticeflow.domain.errors import InputError
from noticeflow.users import Role, User
from noticeflow.web import csrf
from noticeflow.web.context import Web, get_web, security_log

log = structlog.get_logger(__name__)
router = APIRouter()
TOKEN_USER = "api-token"
SESSION_KEY = "sid"  # the only thing about the user the session cookie holds
LOGIN_RATE = 10  # sign-in attempts per minute per client, failed or not
LOGIN_FAILURES = 10  # failed sign-ins per minute per user name (successes do not count)
MAX_PASSWORD = 1024  # longer is not a password anyone typed


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


def is_api(request: Request) -> bool:
    return (
        request.url.path.startswith("/api/")
        or "application/json" in request.headers.get("accept", "").split(",")[0]
    )


async def current_user(request: Request, web: Web = Depends(get_web)) -> User | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        expected = reveal(web.settings.web_token)
        if expected and hmac.compare_digest(value.strip().encode(), expected.encode()):
            token_user = User(TOKEN_USER, Role.approver, "token")
            request.state.user = token_user
            return token_user
        security_log.warning("bearer token refused", path=_route_of(request))
        raise HTTPException(
            401, "the bearer token is not valid", headers={"WWW-Authenticate": "Bearer"}
        )
    # No header, or another scheme (e.g. Basic credentials a proxy in front adds): the session.
    user: User | None = None
    if "session" in request.scope:
        session = request.session
        session.pop("user", None)  # a cookie from before sessions were kept server-side
        sid = session.get(SESSION_KEY)
        if sid is not None:
            user = await users.load_session(web.pool, sid)
            if user is None:  # signed out, expired, revoked, or the account is gone
                session.pop(SESSION_KEY, None)
    request.state.user = user
    return user


def require(role: Role) -> Callable[..., Awaitable[User]]:
    async def dependency(request: Request, user: User | None = Depends(current_user)) -> User:
        if user is None:
            if is_api(request):
                raise HTTPException(
                    401,
                    "sign in, or send the bearer token (Authorization: Bearer ...)",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise SignInRequired(target)
        if not user.role.allows(role):
            raise HTTPException(403, f"this needs the {role.value} role; you are {user.role.value}")
        return user

    return dependency


def may_act(user: User, action: str) -> str | None:
    """Why ``user`` may not take ``action`` (a key of ``users.ACTION_ROLES``), or None if they may.

    The role must allow it; and an approval is four eyes' second pair, which only a signed-in
    person has: the bearer token (scripts) may not approve."""
    needed = users.ACTION_ROLES.get(action)
    if needed is None:
        return f"there is no action {action[:40]!r}"
    if not user.role.allows(needed):
        return f"this needs the {needed.value} role; you are {user.role.value}"
    if action == "approve" and user.via == "token":
        return (
            "approval needs a signed-in person: four eyes (the bearer token is for scripts and"
            " approves nothing)"
        )
    return None


def _route_of(request: Request) -> str:
    """The route's shape, never its values (a link token is not for the logs)."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or request.url.path.split("/", 2)[1][:20]


def safe_next(value: str | None) -> str:
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def sign_in(request: Request, web: Web, user: User) -> None:
    """A fresh session (and CSRF token) at every sign-in; the cookie holds only its id."""
    await users.revoke_session(web.pool, request.session.get(SESSION_KEY))
    request.session.clear()
    request.session[SESSION_KEY] = await users.create_session(web.pool, user)
    request.state.user = user


@router.get("/login", include_in_schema=False)
async def login_page(request: Request, next: str = "/", web: Web = Depends(get_web)) -> Response:
    return web.render(
        request, "login.html", next=safe_next(next), name="", error=None, oidc=oidc_enabled(web)
    )


@router.post("/login", include_in_schema=False)
async def login(
    request: Request,
    name: str = Form(""),
    password: str = Form(""),
    next: str = Form("/"),
    csrf_token: str = Form(""),
    web: Web = Depends(get_web),
) -> Response:
    csrf.check(request, csrf_token)
    client = request.client.host if request.client else "unknown"
    name = name.strip()[:64]

    def page(status: int, error: str, retry_after: float | None = None) -> Response:
        response: Response = web.render(
            request, "login.html", status_code=status, next=safe_next(next), name=name,
            error=error, oidc=oidc_enabled(web),
        )  # fmt: skip
        if retry_after is not None:
            response.headers["Retry-After"] = str(max(1, round(retry_after)))
        return response

    wait = web.limiter.hit(f"login-client:{client}", LOGIN_RATE)
    if wait is not None:
        security_log.warning("sign-in rate limit reached", per="client")
        return page(
            429,
            f"Too many sign-in attempts from your address ({LOGIN_RATE} a minute); wait a minute"
            " and try again.",
            wait,
        )
    failures = f"login-failed:{name}"
    wait = web.limiter.peek(failures, LOGIN_FAILURES)
    if wait is not None:
        security_log.warning("sign-in rate limit reached", per="name")
        return page(
            429,
            f"Too many failed sign-ins for this user name ({LOGIN_FAILURES} a minute; only failed"
            " attempts count); wait a minute and try again.",
            wait,
        )
    user = None
    if _usable_name(name) and password and len(password) <= MAX_PASSWORD:
        user = await users.authenticate(web.pool, name, password)
    if user is None:
        web.limiter.hit(failures, LOGIN_FAILURES)
        security_log.warning("sign-in refused")
        return page(401, "That user name and password do not match an account.")
    await sign_in(request, web, user)
    log.info("signed in", user=user.name, role=user.role.value)
    return RedirectResponse(safe_next(next), status_code=303)


def _usable_name(name: str) -> bool:
    try:
        users.check_name(name)
    except InputError:
        return False
    return True


@router.post("/logout", include_in_schema=False)
async def logout(
    request: Request, csrf_token: str = Form(""), web: Web = Depends(get_web)
) -> Response:
    csrf.check(request, csrf_token)
    await users.revoke_session(web.pool, request.session.get(SESSION_KEY))
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# --- OpenID Connect ---------------------------------------------------------------------------


def oidc_enabled(web: Web) -> bool:
    s = web.settings
    return bool(s.oidc_issuer and s.oidc_client_id)


def _oauth(request: Request, web: Web) -> Any:
    oauth = getattr(request.app.state, "oauth", None)
    if oauth is None:
        from authlib.integrations.starlette_client import OAuth

        s = web.settings
        oauth = OAuth()
        oauth.register(
            "oidc",
            client_id=s.oidc_client_id,
            client_secret=reveal(s.oidc_client_secret),
            server_metadata_url=s.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"
            if s.oidc_issuer
            else None,
            client_kwargs={"scope": "openid profile email"},
        )
        request.app.state.oauth = oauth
    return oauth


@router.get("/login/oidc", include_in_schema=False)
async def oidc_start(request: Request, next: str = "/", web: Web = Depends(get_web)) -> Response:
    if not oidc_enabled(web):
        raise HTTPException(404, "OpenID Connect sign-in is not configured")
    request.session["oidc_next"] = safe_next(next)
    redirect_uri = web.settings.public_url.rstrip("/") + "/login/oidc/callback"
    response: Response = await _oauth(request, web).oidc.authorize_redirect(request, redirect_uri)
    return response


@router.get("/login/oidc/callback", include_in_schema=False)
async def oidc_callback(request: Request, web: Web = Depends(get_web)) -> Response:
    if not oidc_enabled(web):
        raise HTTPException(404, "OpenID Connect sign-in is not configured")
    from authlib.integrations.base_client.errors import OAuthError

    try:
        token = await _oauth(request, web).oidc.authorize_access_token(request)
    except OAuthError as error:
        security_log.warning("oidc sign-in refused", error=error.error)
        raise HTTPException(
            401, f"the identity provider's answer was refused ({error.error})"
        ) from None
    claims = token.get("userinfo") or {}
    raw_name = str(claims.get("preferred_username") or claims.get("sub") or "")
    name = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in raw_name.lower())[:63]
    try:
        role = Role(str(claims.get(web.settings.oidc_role_claim) or web.settings.oidc_default_role))
    except ValueError:
        security_log.warning("oidc sign-in refused", error="no usable role in the claims")
        raise HTTPException(
            403, "your account has no usable role here (viewer, operator or approver)"
        ) from None
    try:
        users.check_name(name)
    except InputError as error:
        security_log.warning("oidc sign-in refused", error="no usable user name in the claims")
        raise HTTPException(403, f"your account has no usable user name here: {error}") from None
    if await users.is_local_account(web.pool, name):
        # One name, one person: the name is the `by` of every action, and four eyes compares it.
        security_log.warning("oidc sign-in refused", error="the name of a local account")
        raise HTTPException(
            403,
            f"a local account named {name!r} exists here, so this name cannot also sign in"
            " through your identity provider: sign in with that account's password, or ask an"
            " administrator to remove it (noticeflow users remove)",
        )
    next_path = safe_next(request.session.get("oidc_next"))
    await sign_in(request, web, User(name, role, "oidc"))
    log.info("signed in", user=name, role=role.value, via="oidc")
    return RedirectResponse(next_path, status_code=303)


def login_redirect(next_path: str) -> RedirectResponse:
    return RedirectResponse("/login?next=" + quote(next_path, safe="/"), status_code=303)
