"""The public sub-processor list (docs/public.md): ``/subprocessors`` (HTML), ``.json`` and
``.atom``, no sign-in. Each answer is derived from the events only (noticeflow/public_list.py)
and carries the chain head it was derived from: the ``X-Noticeflow-Chain-Head`` header (also the
``ETag``, so a reader may ask ``If-None-Match``), ``chain_head`` in the JSON, a
``<meta name="noticeflow-chain-head">`` and ``data-`` attributes in the HTML, and an
``nf:chain-head`` element in the Atom feed. Nothing about customers is ever in them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from noticeflow import public_list
from noticeflow.domain.public_list import (
    ATOM_NAMESPACE,
    KIND_WORDS,
    Change,
    PublicList,
    entry_title,
    iso,
)
from noticeflow.web.context import Web, get_web

router = APIRouter()

HEAD_HEADER = "X-Noticeflow-Chain-Head"
ATOM = "http://www.w3.org/2005/Atom"
NF = "urn:noticeflow:public-list:1"
ATOM_TYPE = "application/atom+xml; charset=utf-8"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # a feed's <updated> before anything is public
# Serialised with prefixes (atom:, nf:): ElementTree writes a default namespace only when no
# attribute is unqualified, and Atom's attributes are.
ET.register_namespace("atom", ATOM)
ET.register_namespace("nf", NF)

# HEAD wherever GET works (RFC 9110 9.3.2: feed readers and link checkers use it): the same status
# and headers (ETag, chain head), and uvicorn sends no body.
READ_METHODS = ["GET", "HEAD"]
STATUS_WORDS = {"upcoming": "upcoming", "in_effect": "in effect", "cancelled": "cancelled"}


async def current(request: Request, web: Web) -> PublicList:
    """The list as the events now say, from this app's cache (only new events are read)."""
    cache: public_list.Cache | None = getattr(request.app.state, "public_list", None)
    if cache is None:
        cache = request.app.state.public_list = public_list.Cache()
    return await cache.current(web.pool)


def _headers(listing: PublicList) -> dict[str, str]:
    token = listing.head.token
    return {
        HEAD_HEADER: token,
        "ETag": f'"{token}"',
        # Public, and revalidated on every use: the ETag makes that cheap.
        "Cache-Control": "public, no-cache",
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Expose-Headers": f"{HEAD_HEADER}, ETag",
    }


@router.options("/subprocessors", include_in_schema=False)
@router.options("/subprocessors.json", include_in_schema=False)
@router.options("/subprocessors.atom", include_in_schema=False)
async def preflight() -> Response:
    """CORS preflight (the answers say ``Access-Control-Allow-Origin: *``): a script on another
    site may GET or HEAD the list with ``If-None-Match`` (a non-simple header, so its browser asks
    first). Nothing else is allowed; no credentials are involved (the list is the same for all)."""
    return Response(
        status_code=204,
        headers={
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": "GET, HEAD",
            "Access-Control-Allow-Headers": "If-None-Match",
            "Access-Control-Max-Age": "86400",
            "Allow": "GET, HEAD, OPTIONS",
            "Cache-Control": "public, max-age=86400",
        },
    )


def _not_modified(request: Request, listing: PublicList) -> Response | None:
    asked = request.headers.get("if-none-match", "")
    tags = {tag.strip().removeprefix("W/") for tag in asked.split(",")}
    if f'"{listing.head.token}"' in tags or asked.strip() == "*":
        return Response(status_code=304, headers=_headers(listing))
    return None


def render_public(
    web: Web, request: Request, template: str, /, status_code: int = 200, **context: Any
) -> Response:
    """A public page, rendered without touching the session: no CSRF token is made and no user
    is shown, so no ``Set-Cookie`` goes out and a shared cache may keep the page for everyone
    (``web.render`` would create a session for every anonymous visitor)."""
    context = {"csrf_token": "", "user": None, **context}
    response: Response = web.templates.TemplateResponse(
        request, template, context, status_code=status_code
    )
    return response


def _base(web: Web) -> str:
    return web.settings.public_url.rstrip("/")


# Two routes, not one for both methods: OpenAPI would list the JSON twice under one operation id.
@router.get("/subprocessors.json")
@router.head("/subprocessors.json", include_in_schema=False)
async def subprocessors_json(request: Request, web: Web = Depends(get_web)) -> Response:
    """The public list as JSON (docs/schemas/subprocessors.schema.json)."""
    listing = await current(request, web)
    return _not_modified(request, listing) or JSONResponse(
        listing.as_json(), headers=_headers(listing)
    )


@router.api_route("/subprocessors", include_in_schema=False, methods=READ_METHODS)
async def subprocessors_page(request: Request, web: Web = Depends(get_web)) -> Response:
    listing = await current(request, web)
    cached = _not_modified(request, listing)
    if cached is not None:
        return cached
    response = render_public(
        web,
        request,
        "public/subprocessors.html",
        listing=listing,
        head=listing.head,
        kind_words=KIND_WORDS,
        status_words=STATUS_WORDS,
        updated=iso(listing.updated_at) if listing.updated_at else None,
    )
    response.headers.update(_headers(listing))
    return response


@router.api_route("/subprocessors.atom", include_in_schema=False, methods=READ_METHODS)
async def subprocessors_atom(request: Request, web: Web = Depends(get_web)) -> Response:
    listing = await current(request, web)
    return _not_modified(request, listing) or Response(
        atom_feed(listing, _base(web)), media_type=ATOM_TYPE, headers=_headers(listing)
    )


# --- Atom (RFC 4287) -----------------------------------------------------------------------------


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
    if text is not None:
        element.text = text
    return element


def entry_summary(change: Change) -> str:
    lines = [entry_title(change) + "."]
    details = change.details
    if change.kind != "removal":
        lines += [
            f"Purpose: {details.purpose or '—'}",
            f"Location: {details.location or '—'}",
            f"Data categories: {', '.join(details.data_categories) or '—'}",
            f"Transfer mechanism: {details.transfer_mechanism or '—'}",
            f"Services: {', '.join(details.services) or '—'}",
        ]
    for name, old in sorted(change.previous.items()):
        shown = ", ".join(old) if isinstance(old, list) else str(old)
        lines.append(f"Previously ({name.replace('subprocessor_', '')}): {shown}")
    lines.append(f"Effective: {iso(change.effective_at)}")
    for at, old, new in change.postponements:
        lines.append(f"Postponed on {iso(at)} from {iso(old)} to {iso(new)}")
    if change.cancelled_at is not None:
        lines.append(f"Cancelled on {iso(change.cancelled_at)}: it does not take effect.")
    elif change.in_effect_at is not None:
        lines.append(f"In effect since {iso(change.in_effect_at)}.")
    return "\n".join(lines)


def atom_feed(listing: PublicList, base: str) -> bytes:
    """The change feed: one entry per notice once its mailing began (its id never changes;
    ``updated`` moves on a postponement or a cancellation)."""
    feed = ET.Element(f"{{{ATOM}}}feed")
    _el(feed, "id", f"urn:uuid:{uuid.uuid5(ATOM_NAMESPACE, f'feed/{base}')}")
    _el(feed, "title", "Sub-processor changes")
    _el(feed, "subtitle", "Every change to the sub-processors in use, from the notices sent.")
    _el(feed, "updated", iso(listing.updated_at or EPOCH))
    author = _el(feed, "author")
    _el(author, "name", urlsplit(base).hostname or base)
    _el(author, "uri", f"{base}/subprocessors")
    _el(feed, "link", rel="self", type="application/atom+xml", href=f"{base}/subprocessors.atom")
    _el(feed, "link", rel="alternate", type="text/html", href=f"{base}/subprocessors")
    _el(feed, "link", rel="related", type="application/json", href=f"{base}/subprocessors.json")
    _el(feed, "generator", "noticeflow")
    ET.SubElement(
        feed,
        f"{{{NF}}}chain-head",
        {"position": str(listing.head.position), "digest": f"sha256:{listing.head.digest.hex()}"},
    )
    changes = sorted(
        (*listing.upcoming, *listing.past),
        key=lambda change: (change.updated_at, change.notice_id),
        reverse=True,
    )
    for change in changes:
        entry = _el(feed, "entry")
        _el(entry, "id", change.atom_id)
        _el(entry, "title", entry_title(change))
        _el(entry, "published", iso(change.sent_at))
        _el(entry, "updated", iso(change.updated_at))
        _el(entry, "link", rel="alternate", type="text/html",
            href=f"{base}/subprocessors#notice-{change.notice_id}")  # fmt: skip
        _el(entry, "category", term=change.kind, label=KIND_WORDS.get(change.kind, change.kind))
        _el(entry, "summary", entry_summary(change), type="text")
    body: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return body
