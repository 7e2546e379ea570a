"""`noticeflow codec-server`: Temporal's remote codec protocol, so the Temporal Web UI and the
Temporal CLI (``--codec-endpoint``) show decrypted payloads to those allowed, while Temporal itself
keeps only ciphertext (noticeflow/codec.py).

``POST /decode`` and ``POST /encode`` take and answer ``{"payloads": [...]}``, payloads in protobuf
JSON form (``temporal.api.common.v1.Payloads``). Who may call it:

* a browser only from the Temporal UI's origin (``NOTICEFLOW_TEMPORAL_UI_URL``) or one listed in
  ``NOTICEFLOW_CODEC_CORS_ORIGINS``: a request carrying any other ``Origin`` is refused, so a web
  page elsewhere (or a DNS-rebinding name for 127.0.0.1) cannot use it through someone's browser;
* ``X-Namespace`` must name the configured namespace (``NOTICEFLOW_TEMPORAL_NAMESPACE``);
* ``Authorization: Bearer <NOTICEFLOW_CODEC_SERVER_TOKEN>`` is required whenever a token is set, and
  a token must be set to listen on anything but loopback. On loopback only people (or processes)
  on this machine reach it — every local user, so ``noticeflow up`` is for a single-user machine —
  and the Temporal UI cannot attach a token of ours to its requests (its ``passAccessToken``
  forwards the UI's own sign-in token), so ``up`` runs it on 127.0.0.1 without one.

Bodies are bounded (:data:`MAX_BODY_BYTES`, :data:`MAX_PAYLOADS`); bad input is a 4xx with one
line, never a traceback; the log holds counts, key ids and reasons, never a payload.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, Payloads

from noticeflow import keyring
from noticeflow.codec import (
    ENCODING,
    KEY_ID,
    CodecError,
    EncryptionCodec,
    UnknownKeyError,
    codec_keys,
)
from noticeflow.domain.errors import InputError
from noticeflow.serving import serve_until

log = structlog.get_logger("noticeflow.codec_server")

DEFAULT_PORT = 8234  # beside the dev server's Web UI (8233)
MAX_BODY_BYTES = 8 * 1024 * 1024  # Temporal refuses payloads over 2 MiB; a few of them per call
MAX_PAYLOADS = 10_000
ALLOW_HEADERS = "content-type, x-namespace, authorization"
TOKEN_SETTING = "NOTICEFLOW_CODEC_SERVER_TOKEN"


class Refused(Exception):
    """A request answered with ``status`` and one line, logged as ``reason``."""

    def __init__(self, status: int, reason: str, message: str, key_id: str | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.key_id = status, reason, message, key_id


@dataclass(frozen=True)
class Policy:
    """Who may call: the namespace, the bearer token (None: none asked) and browser origins."""

    namespace: str
    token: str | None
    origins: frozenset[str]


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, as browsers send it in ``Origin``; None if not a URL."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def allowed_origins(settings: Any) -> tuple[frozenset[str], list[str]]:
    """The browser origins that may call (the Temporal UI's and NOTICEFLOW_CODEC_CORS_ORIGINS), and
    a problem for each listed origin that is not one. A loopback UI is reachable as both
    127.0.0.1 and localhost, so both are allowed."""
    found: set[str] = set()
    problems = []
    ui = getattr(settings, "temporal_ui_url", None)
    if ui and (origin := origin_of(ui)):
        found.add(origin)
        for a, b in (("://127.0.0.1", "://localhost"), ("://localhost", "://127.0.0.1")):
            if a in origin:
                found.add(origin.replace(a, b))
    for listed in getattr(settings, "codec_cors_origins", None) or []:
        origin = origin_of(listed)
        if origin is None:
            problems.append(
                f"NOTICEFLOW_CODEC_CORS_ORIGINS: {listed[:60]!r} is not an origin"
                " (e.g. https://temporal.example.com)"
            )
        else:
            found.add(origin)
    return frozenset(found), problems


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check(settings: Any, host: str, token: str | None) -> tuple[EncryptionCodec | None, list[str]]:
    """The codec, and every problem with serving it on ``host`` with ``token`` (empty: good)."""
    problems: list[str] = []
    codec = None
    try:
        codec = EncryptionCodec.from_keyring(codec_keys(settings))
    except InputError as error:
        problems += [line.strip(" -") for line in str(error).splitlines()[1:] if line.strip()]
    if token is not None:
        problem = keyring.key_problem("codec_server_token", token)
        if problem:
            problems.append(problem)
    elif not is_loopback(host):
        problems.append(
            f"{TOKEN_SETTING} is not set: the codec server decrypts every payload for whoever"
            f" calls it, so off loopback ({host}) it needs a bearer token"
            f" ({keyring.HOW_TO_MAKE}); or listen on 127.0.0.1"
        )
    _, origin_problems = allowed_origins(settings)
    return codec, problems + origin_problems


def create_app(codec: EncryptionCodec, policy: Policy) -> Starlette:
    async def decode(request: Request) -> Response:
        return await _apply(request, "decode", codec.decode)

    async def encode(request: Request) -> Response:
        return await _apply(request, "encode", codec.encode)

    async def _apply(
        request: Request,
        action: str,
        transform: Callable[[Sequence[Payload]], Awaitable[list[Payload]]],
    ) -> Response:
        cors = _cors_headers(request, policy)
        try:
            _admit(request, policy)
            payloads = _parse(await _read_body(request))
            try:
                result = await transform(payloads)
            except UnknownKeyError as error:
                raise Refused(400, "key", str(error), key_id=error.key_id) from None
            except CodecError as error:
                raise Refused(400, "decrypt", str(error)) from None
        except Refused as refused:
            log.warning(
                f"codec.{action}.refused", status=refused.status, reason=refused.reason,
                key_id=refused.key_id,
            )  # fmt: skip
            headers = dict(cors)
            if refused.status == 401:
                headers["WWW-Authenticate"] = "Bearer"
            return PlainTextResponse(refused.message + "\n", refused.status, headers=headers)
        except Exception as error:  # never a traceback to the caller; the type in the log
            log.error(f"codec.{action}.failed", error=type(error).__name__)
            return PlainTextResponse("internal error (logged)\n", 500, headers=cors)
        log.info(
            f"codec.{action}", payloads=len(payloads),
            key_ids=sorted(_key_ids(payloads if action == "decode" else result)),
        )  # fmt: skip
        body = json_format.MessageToDict(Payloads(payloads=result))
        body.setdefault("payloads", [])
        return Response(json.dumps(body), 200, headers=cors, media_type="application/json")

    async def preflight(request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin is None or origin not in policy.origins:
            log.warning("codec.preflight.refused", reason="origin")
            return PlainTextResponse(
                f"origin not allowed: add it to NOTICEFLOW_CODEC_CORS_ORIGINS"
                f" (allowed: {', '.join(sorted(policy.origins)) or 'none'})\n",
                403,
            )
        return Response(status_code=204, headers=_cors_headers(request, policy, preflight=True))

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    return Starlette(
        routes=[
            Route("/decode", decode, methods=["POST"]),
            Route("/encode", encode, methods=["POST"]),
            Route("/decode", preflight, methods=["OPTIONS"]),
            Route("/encode", preflight, methods=["OPTIONS"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def _cors_headers(request: Request, policy: Policy, preflight: bool = False) -> dict[str, str]:
    origin = request.headers.get("origin")
    if origin is None or origin not in policy.origins:
        return {}
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",  # the UI may send cookies (includeCredentials)
        "Vary": "Origin",
    }
    if preflight:
        headers |= {
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": "600",
        }
    return headers


def _admit(request: Request, policy: Policy) -> None:
    origin = request.headers.get("origin")
    if origin is not None and origin not in policy.origins:
        raise Refused(403, "origin", "origin not allowed: add it to NOTICEFLOW_CODEC_CORS_ORIGINS")
    if policy.token is not None:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if not (
            scheme.lower() == "bearer"
            and hmac.compare_digest(value.strip().encode(), policy.token.encode())
        ):
            raise Refused(
                401,
                "token",
                f"a bearer token is required (Authorization: Bearer <{TOKEN_SETTING}>)",
            )
    namespace = request.headers.get("x-namespace")
    if namespace is None:
        raise Refused(400, "namespace", f"X-Namespace header missing (expected {policy.namespace})")
    if namespace != policy.namespace:
        raise Refused(
            403, "namespace", f"namespace not served here (this codec serves {policy.namespace})"
        )
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "application/json":
        raise Refused(400, "content-type", "Content-Type must be application/json")


async def _read_body(request: Request) -> bytes:
    too_large = Refused(413, "size", f"body over {MAX_BODY_BYTES} bytes")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> list[Payload]:
    try:
        loaded = json.loads(body)
    except (ValueError, RecursionError):
        raise Refused(400, "json", 'body is not JSON: expected {"payloads": [...]}') from None
    if not isinstance(loaded, dict):
        raise Refused(400, "shape", 'body must be a JSON object: {"payloads": [...]}')
    if isinstance(loaded.get("payloads"), list) and len(loaded["payloads"]) > MAX_PAYLOADS:
        raise Refused(400, "count", f"more than {MAX_PAYLOADS} payloads in one request")
    try:
        return list(json_format.ParseDict(loaded, Payloads()).payloads)
    except (json_format.ParseError, ValueError, TypeError) as error:
        text = " ".join(str(error).split())
        raise Refused(400, "shape", f"not Temporal payloads: {text[:200]}") from None


def _key_ids(payloads: Sequence[Payload]) -> set[str]:
    return {
        p.metadata[KEY_ID].decode("ascii", "replace")[:64]
        for p in payloads
        if p.metadata.get("encoding") == ENCODING and KEY_ID in p.metadata
    }


def policy_for(settings: Any, token: str | None) -> Policy:
    origins, _ = allowed_origins(settings)
    return Policy(namespace=settings.temporal_namespace, token=token, origins=origins)


def settings_token(settings: Any) -> str | None:
    """NOTICEFLOW_CODEC_SERVER_TOKEN's text, or None when unset or blank."""
    value = getattr(settings, "codec_server_token", None)
    if value is None:
        return None
    text = str(value.get_secret_value() if hasattr(value, "get_secret_value") else value)
    return text.strip() or None


async def serve(
    settings: Any,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    token: str | None,
    started: asyncio.Future[str] | None = None,
) -> None:
    """Serve until ``stop``; ``started`` gets the URL once it listens (or why it could not).
    Refuses (InputError, every problem at once) without codec keys, or off loopback without a
    token."""
    import uvicorn

    codec, problems = check(settings, host, token)
    if problems or codec is None:
        error = InputError("the codec server cannot start:\n  - " + "\n  - ".join(problems))
        if started is not None and not started.done():
            started.set_exception(error)
        raise error
    config = uvicorn.Config(
        create_app(codec, policy_for(settings, token)),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
    )

    await serve_until(
        config, stop, started, "codec server",
        on_listening=lambda: log.info("codec.server.started", port=port, token=token is not None),
    )  # fmt: skip
