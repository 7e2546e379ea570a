"""Who is asking: a signed-in session (local account or OpenID Connect) or the bearer token.

Every ops route, page or API, depends on :func:`require` with the role it needs. Pages send a
visitor without a session to the sign-in page; the API answers 401. The bearer token
(``NOTICEFLOW_WEB_TOKEN``) is for scripts: it acts as the user ``api-token`` with every role.
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
from noticeflow.users import Role, User
from noticeflow.web import csrf
from noticeflow.web.context import Web, get_web, security_log

log = structlog.get_logger(__name__)
router = APIRouter()
TOKEN_USER = "api-token"
LOGIN_RATE = 10  # failed or not, sign-in attempts per minute per client and per name


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


def is_api(request: Request) -> bool:
    return (
        request.url.path.startswith("/api/")
        or "application/json" in request.headers.get("accept", "").split(",")[0]
    )


async def current_user(request: Request, web: Web = Depends(get_web)) -> User | None:
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        expected = web.settings.web_token
        if (
            scheme.lower() == "bearer"
            and expected
            and hmac.compare_digest(value.strip().encode(), expected.encode())
        ):
            token_user = User(TOKEN_USER, Role.approver, "token")
            request.state.user = token_user
            return token_user
        security_log.warning("bearer token refused", path=_route_of(request))
        raise HTTPException(
            401, "the bearer token is not valid", headers={"WWW-Authenticate": "Bearer"}
        )
    found = request.session.get("user") if "session" in request.scope else None
    user: User | None = None
    if isinstance(found, dict) and isinstance(found.get("name"), str):
        if found.get("via") == "oidc":
            try:
                user = User(found["name"], Role(str(found.get("role"))), "oidc")
            except ValueError:
                user = None
        else:  # a local account: its role or its removal takes effect at once
            user = await users.get_user(web.pool, found["name"])
        if user is None:
            request.session.pop("user", None)
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


def _route_of(request: Request) -> str:
    """The route's shape, never its values (a link token is not for the logs)."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or request.url.path.split("/", 2)[1][:20]


def safe_next(value: str | None) -> str:
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def sign_in(request: Request, user: User) -> None:
    request.session.clear()  # a fresh session (and CSRF token) at every sign-in
    request.session["user"] = {"name": user.name, "role": user.role.value, "via": user.via}


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
    for key in (f"login-client:{client}", f"login-name:{name[:64]}"):
        if web.limiter.hit(key, LOGIN_RATE) is not None:
            security_log.warning("sign-in rate limit reached")
            return web.render(
                request, "login.html", status_code=429, next=safe_next(next), name=name[:64],
                error="Too many attempts; wait a minute and try again.", oidc=oidc_enabled(web),
            )  # fmt: skip
    user = await users.authenticate(web.pool, name, password) if name and password else None
    if user is None:
        security_log.warning("sign-in refused")
        return web.render(
            request, "login.html", status_code=401, next=safe_next(next), name=name[:64],
            error="That user name and password do not match an account.", oidc=oidc_enabled(web),
        )  # fmt: skip
    sign_in(request, user)
    log.info("signed in", user=user.name, role=user.role.value)
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/logout", include_in_schema=False)
async def logout(request: Request, csrf_token: str = Form("")) -> Response:
    csrf.check(request, csrf_token)
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
            client_secret=s.oidc_client_secret,
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
    name = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in raw_name.lower())[:64]
    try:
        role = Role(str(claims.get(web.settings.oidc_role_claim) or web.settings.oidc_default_role))
        users.check_name(name)
    except Exception:
        security_log.warning("oidc sign-in refused", error="no usable name or role in the claims")
        raise HTTPException(403, "your account has no usable user name or role here") from None
    next_path = safe_next(request.session.get("oidc_next"))
    sign_in(request, User(name, role, "oidc"))
    log.info("signed in", user=name, role=role.value, via="oidc")
    return RedirectResponse(next_path, status_code=303)


def login_redirect(next_path: str) -> RedirectResponse:
    return RedirectResponse("/login?next=" + quote(next_path, safe="/"), status_code=303)
