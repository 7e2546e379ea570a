"""The web app: routers, sessions, error pages, and how it is served (uvicorn)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from temporalio.client import Client

from noticeflow import db, keyring
from noticeflow.config import Settings
from noticeflow.domain.errors import InputError
from noticeflow.links import LinkSigner
from noticeflow.serving import serve_until
from noticeflow.web import auth
from noticeflow.web.context import Web, make_templates
from noticeflow.web.guard import Guard
from noticeflow.web.ratelimit import RateLimiter

log = structlog.get_logger(__name__)

TITLES = {
    400: "That request is not valid",
    401: "Sign in needed",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "Conflict",
    410: "No longer available",
    422: "Please check the form",
    429: "Too many requests",
    500: "Something went wrong",
    503: "Not available right now",
}
DATABASE_RETRY_AFTER = 5  # seconds: a 503 for a database that does not answer


def session_key(settings: Settings) -> str:
    """The session cookie's signing key: derived (HKDF) from the current link key, never the key
    itself. There is no default: `noticeflow web` refuses to start without a real link key."""
    keys = settings.verification_keys
    if not keys:
        raise InputError(keyring.key_problem("secret_key", None) or "NOTICEFLOW_SECRET_KEY")
    return keyring.derive(keys[0], "link/sessions").hex()


def create_app(
    settings: Settings, *, pool: asyncpg.Pool | None = None, client: Client | None = None
) -> FastAPI:
    """The app; ``pool`` and ``client`` are the caller's to close when given (tests, `up`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_pool = pool is None
        web = Web(
            settings=settings,
            # Bounded (NOTICEFLOW_WEB_DB_TIMEOUT): a database that hangs is a 503, not a hang.
            pool=pool
            or await db.create_pool(
                settings.require_database_url(), timeout=settings.web_db_timeout
            ),
            signer=LinkSigner(settings.verification_keys, settings.public_url),
            templates=make_templates(),
            limiter=RateLimiter(),
            client=client,
        )
        app.state.web = web
        if await db.runs_as_owner(web.pool):
            log.warning(db.OWNER_WARNING)
        if client is None:
            await web.temporal()  # try once now; pages work without it
        try:
            yield
        finally:
            if own_pool:
                await web.close()

    app = FastAPI(
        title="noticeflow",
        version="1",
        summary="Sub-processor notices: dashboard, JSON API and customer action pages",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI would load from a CDN: the schema is at /api/openapi.json
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_key(settings),
        session_cookie="nf_session",
        same_site="lax",
        https_only=settings.public_url.startswith("https://"),
        max_age=12 * 3600,
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        _own_origin_redirect(request, response, settings.public_url)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
            " frame-ancestors 'none'; form-action 'self'",
        )
        if not request.url.path.startswith(("/static/", "/subprocessors")):
            # Personal pages, signed-in pages and API answers: never kept by a browser or proxy
            # (the back button after signing out shows nothing).
            response.headers["Cache-Control"] = "no-store"
        elif "set-cookie" in response.headers:
            # A public page that set a cookie (it should not: the public pages never touch the
            # session): that answer is one visitor's alone, never a shared cache's.
            response.headers["Cache-Control"] = "private, no-cache"
        if settings.public_url.startswith("https://"):
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    _error_handlers(app)
    from noticeflow.web import actions, api, dashboard, ops, public, subscriptions

    app.include_router(auth.router)
    app.include_router(actions.router)
    app.include_router(dashboard.router)
    app.include_router(api.router)
    app.include_router(ops.router)
    app.include_router(public.router)  # the public sub-processor list: no sign-in
    app.include_router(subscriptions.router)  # e-mail subscriptions to it: no sign-in
    ops.instrument(app)  # request counts and durations by route template, for /metrics
    app.add_middleware(Guard)  # outermost: NUL bytes, body size, and no traceback on a crash
    app.mount("/static", StaticFiles(packages=[("noticeflow.web", "static")]), name="static")
    return app


def _own_origin_redirect(request: Request, response: Response, public_url: str) -> None:
    """A redirect Starlette builds from the request (the trailing-slash one: ``/subprocessors/``
    to ``/subprocessors``) names the ``Host`` the client sent, so ``Host: evil.com`` would send a
    reader, or poison a shared cache, to another site. Such a Location is rebuilt on the
    configured NOTICEFLOW_PUBLIC_URL (absolute, so a path like ``//evil.com`` stays a path)."""
    location = response.headers.get("location")
    if not location or not 300 <= response.status_code < 400:
        return
    parts = urlsplit(location)
    if parts.netloc and parts.netloc.lower() == request.headers.get("host", "").lower():
        base = urlsplit(public_url)
        response.headers["location"] = urlunsplit(
            (base.scheme, base.netloc, parts.path, parts.query, parts.fragment)
        )


def _wants_json(request: Request) -> bool:
    return auth.is_api(request) or request.url.path in ("/metrics", "/healthz")


def _error(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    web: Web | None = getattr(request.app.state, "web", None)
    if web is None:
        return Response(message, status_code=status, media_type="text/plain", headers=headers)
    response: Response = web.render(
        request, "error.html", status_code=status, title=TITLES.get(status, "Error"),
        message=message, hint=None,
    )  # fmt: skip
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(auth.SignInRequired)
    async def sign_in(request: Request, error: auth.SignInRequired) -> Response:
        return auth.login_redirect(error.next_path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        detail = (
            error.detail if isinstance(error.detail, str) else TITLES.get(error.status_code, "")
        )
        if error.status_code == 404 and detail == "Not Found":
            detail = "There is no page at this address."
        return _error(request, error.status_code, detail, getattr(error, "headers", None))

    @app.exception_handler(InputError)
    async def input_error(request: Request, error: InputError) -> Response:
        text = str(error)
        return _error(request, 404 if text.startswith("no notice") else 400, text)

    @app.exception_handler(asyncpg.DataError)
    async def unstorable(request: Request, error: asyncpg.DataError) -> Response:
        # e.g. a NUL byte inside a decoded cursor: PostgreSQL cannot even compare it
        return _error(
            request, 400, "The request holds characters or values that cannot be used here."
        )

    @app.exception_handler(TimeoutError)
    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(ConnectionError)
    async def database_away(request: Request, error: Exception) -> Response:
        # The web's pool is bounded (NOTICEFLOW_WEB_DB_TIMEOUT): a database that does not answer
        # in time, or cannot be reached, is a short 503, never a hang or a traceback.
        log.warning(
            "web request: database not answering",
            route=auth._route_of(request),
            error_type=type(error).__name__,
        )
        message = "The database is not answering right now; please try again in a moment."
        headers = {"Retry-After": str(DATABASE_RETRY_AFTER)}
        if request.url.path.endswith(".json"):
            return JSONResponse({"error": message}, status_code=503, headers=headers)
        return _error(request, 503, message, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        problems = []
        for item in error.errors():
            where = ".".join(str(p) for p in item["loc"][1:]) or "request"
            problems.append(f"{where}: {item['msg']}")
        message = "; ".join(problems)
        if _wants_json(request):
            return JSONResponse({"error": message, "problems": problems}, status_code=422)
        return _error(request, 422, message)

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> Response:
        log.error(
            "web request failed", route=auth._route_of(request), error_type=type(error).__name__
        )
        return _error(request, 500, "The server could not answer this time; please try again.")


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    pool: asyncpg.Pool | None = None,
    client: Client | None = None,
    started: asyncio.Future[str] | None = None,
) -> None:
    """Serve until ``stop``; ``started`` gets the address once it listens."""
    import uvicorn

    config = uvicorn.Config(
        create_app(settings, pool=pool, client=client),
        host=settings.web_host,
        port=settings.web_port,
        log_level="warning",
        access_log=False,  # an access log would hold link tokens; the app logs what it needs
        # X-Forwarded-For/-Proto only from the proxies named (NOTICEFLOW_WEB_FORWARDED_ALLOW_IPS):
        # then the rate limits count the visitor's address, not the proxy's.
        proxy_headers=bool(settings.web_forwarded_allow_ips),
        forwarded_allow_ips=settings.web_forwarded_allow_ips or None,
        lifespan="on",
        # An open dashboard holds a server-sent event stream: do not wait for it on shutdown.
        timeout_graceful_shutdown=3,
    )
    await serve_until(config, stop, started, "web server")
