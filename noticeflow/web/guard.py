"""The outermost layer of the web app (pure ASGI, so server-sent event streams pass untouched).

* A path or query with a NUL byte is a 400 at once: nothing behind it can store or look it up.
* A request body over ``MAX_BODY`` bytes is a 413, counted as it arrives (also without a
  Content-Length): nothing reads 40 MB before deciding the caller may not send them.
* An unexpected exception becomes a 500 page in our words, logged as its type and route only,
  and is not re-raised: uvicorn prints no traceback (which could hold a payload's text).
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)
MAX_BODY = 2 * 1024 * 1024  # a customer's reason is kept whole; 2 MiB is far beyond any real one


class _TooLarge(Exception):
    pass


class Guard:
    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or b""
        query = scope.get("query_string") or b""
        if "\x00" in scope.get("path", "") or b"%00" in raw_path or b"%00" in query.lower():
            await _answer(scope, send, 400, "The address contains a NUL byte; it cannot be used.")
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            await _answer(scope, send, 413, f"The request is larger than {self.max_body:,} bytes.")
            return
        received = 0
        started = False
        too_large = False

        async def counted() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    too_large = True
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if too_large:  # whatever the app made of a cut body (a 400), the answer is a 413
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _answer(
                        scope, send, 413, f"The request is larger than {self.max_body:,} bytes."
                    )
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except Exception as error:
            if too_large or _holds(error, _TooLarge):
                if not started:
                    await _answer(
                        scope, send, 413, f"The request is larger than {self.max_body:,} bytes."
                    )
                return
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            log.error("web request failed", route=route, error_type=type(error).__name__)
            if not started:
                await _answer(
                    scope, send, 500, "The server could not answer this time; please try again."
                )


def _holds(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``error`` is ``kind`` or an exception group holding one (a middleware that runs
    the app in a task group wraps what it raises)."""
    if isinstance(error, kind):
        return True
    if isinstance(error, BaseExceptionGroup):
        return any(_holds(inner, kind) for inner in error.exceptions)
    return False


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _answer(scope: Scope, send: Send, status: int, message: str) -> None:
    path: str = scope.get("path", "")
    accept = dict(scope.get("headers", [])).get(b"accept", b"")
    as_json = (
        path.startswith("/api/")
        or path in ("/metrics", "/healthz")
        or (b"application/json" in accept.split(b",")[0])
    )
    if as_json:
        body, kind = orjson.dumps({"error": message}), b"application/json"
    else:
        from html import escape

        body = (
            "<!doctype html><html lang=en><meta charset=utf-8><title>noticeflow</title>"
            f'<link rel="stylesheet" href="/static/app.css"><main class="narrow"><h1>'
            f"{'Something went wrong' if status >= 500 else 'That request is not valid'}</h1>"
            f"<p>{escape(message)}</p></main>"
        ).encode()
        kind = b"text/html; charset=utf-8"
    headers: list[Any] = [
        (b"content-type", kind),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
