"""CSRF protection for every form: a random token kept in the signed session cookie and repeated
in a hidden field; a POST whose field does not match its session's token is refused (403).

The session cookie is SameSite=Lax, so another site's form cannot even carry it. Requests
authenticated by the bearer token (scripts, the JSON API) carry no cookie and need no token."""

from __future__ import annotations

import hmac
import secrets

from fastapi import HTTPException, Request

FIELD = "csrf_token"


def token(request: Request) -> str:
    if "session" not in request.scope:
        return ""
    session = request.session
    if not isinstance(session.get("csrf"), str):
        session["csrf"] = secrets.token_urlsafe(24)
    return str(session["csrf"])


def check(request: Request, submitted: str | None) -> None:
    expected = request.session.get("csrf") if "session" in request.scope else None
    # Bytes, not str: compare_digest refuses a str with non-ASCII characters (a 500, not a 403).
    if (
        not isinstance(expected, str)
        or not expected
        or not isinstance(submitted, str)
        or not submitted
        or not hmac.compare_digest(expected.encode(), submitted.encode("utf-8", "replace"))
    ):
        raise HTTPException(
            403,
            "This form has expired or did not come from this site. Go back, reload the page"
            " and try again.",
        )
