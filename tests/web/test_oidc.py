"""OpenID Connect sign-in, against a real (small) identity provider served on loopback: discovery,
JWKS, the authorization-code flow with state and nonce, and an RS256-signed ID token."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
import uvicorn
from fastapi import FastAPI, Form
from fastapi.responses import JSONResponse, RedirectResponse
from joserfc import jwt
from joserfc.jwk import RSAKey

from noticeflow.serving import quiet_server
from noticeflow.sink import free_port
from noticeflow.web.app import serve

CLIENT_ID, CLIENT_SECRET = "noticeflow-test", "client-secret-" + "y" * 16


def identity_provider(issuer: str, claims: dict[str, Any]) -> FastAPI:
    key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"})
    codes: dict[str, dict[str, str]] = {}
    app = FastAPI()

    @app.get("/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        return {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "jwks_uri": f"{issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    @app.get("/jwks")
    async def jwks() -> dict[str, Any]:
        return {"keys": [key.as_dict(private=False)]}

    @app.get("/authorize")
    async def authorize(
        client_id: str, redirect_uri: str, state: str, nonce: str, response_type: str
    ) -> RedirectResponse:
        assert client_id == CLIENT_ID and response_type == "code"
        code = secrets.token_urlsafe(16)
        codes[code] = {"nonce": nonce, "redirect_uri": redirect_uri}
        return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}")

    @app.post("/token")
    async def token(
        code: str = Form(), client_id: str = Form(""), client_secret: str = Form(""),
        redirect_uri: str = Form(""), grant_type: str = Form(""),
    ) -> JSONResponse:  # fmt: skip
        grant = codes.pop(code, None)
        if grant is None or grant["redirect_uri"] != redirect_uri:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = int(time.time())
        id_token = jwt.encode(
            {"alg": "RS256", "kid": "k1"},
            {"iss": issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
             "nonce": grant["nonce"], **claims},
            key,
        )  # fmt: skip
        return JSONResponse(
            {"access_token": "at-" + secrets.token_hex(8), "token_type": "Bearer",
             "expires_in": 300, "id_token": id_token}
        )  # fmt: skip

    return app


async def run_server(app: FastAPI, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    # uvicorn's server without its own signal handlers (the test process owns them)
    server = quiet_server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    return server, task


@pytest.fixture
async def oidc_web(web_stack) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A second web app on the same stack, signing in through the identity provider."""
    idp_port, web_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{idp_port}"
    claims: dict[str, Any] = {"sub": "u-123", "preferred_username": "Olga.Ops"}
    idp, idp_task = await run_server(identity_provider(issuer, claims), idp_port)
    url = f"http://127.0.0.1:{web_port}"
    settings = web_stack.settings.model_copy(
        update={
            "web_port": web_port, "public_url": url, "oidc_issuer": issuer,
            "oidc_client_id": CLIENT_ID, "oidc_client_secret": CLIENT_SECRET,
        }
    )  # fmt: skip
    stop = asyncio.Event()
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(settings, stop, pool=web_stack.pool, client=web_stack.client, started=started)
    )
    await asyncio.wait_for(started, 30)
    yield url, claims
    stop.set()
    idp.should_exit = True
    await asyncio.gather(task, idp_task, return_exceptions=True)


async def _sign_in(http: Any, url: str) -> Any:
    start = await http.get(f"{url}/login/oidc?next=/notices/none")
    assert start.status_code == 302, start.text
    to_idp = start.headers["location"]
    query = parse_qs(urlparse(to_idp).query)
    assert query["redirect_uri"] == [f"{url}/login/oidc/callback"] and query["nonce"][0]
    back = await http.get(to_idp)
    assert back.status_code in (302, 307)
    return await http.get(back.headers["location"])


async def test_sign_in_through_the_identity_provider(web_stack, oidc_web):
    url, claims = oidc_web
    claims["noticeflow_role"] = "approver"
    async with web_stack.http() as http:
        login = await http.get(f"{url}/login")
        assert "/login/oidc" in login.text  # the page offers it
        done = await _sign_in(http, url)
        assert done.status_code == 303 and done.headers["location"] == "/notices/none"
        home = await http.get(f"{url}/")
        assert home.status_code == 200 and "olga.ops" in home.text and "approver" in home.text


async def test_a_forged_state_is_refused_and_signs_nobody_in(web_stack, oidc_web):
    url, _ = oidc_web
    async with web_stack.http() as http:
        start = await http.get(f"{url}/login/oidc")
        to_idp = start.headers["location"]
        back = await http.get(to_idp)
        forged = back.headers["location"].replace("state=", "state=x")
        refused = await http.get(forged)
        assert refused.status_code == 401 and "refused" in refused.text
        assert (await http.get(f"{url}/")).status_code == 303  # still signed out


async def test_an_unknown_role_claim_gets_no_access(web_stack, oidc_web):
    url, claims = oidc_web
    claims["noticeflow_role"] = "superuser"
    async with web_stack.http() as http:
        done = await _sign_in(http, url)
        assert done.status_code == 403 and "role" in done.text


async def test_without_a_role_claim_the_default_role_applies(web_stack, oidc_web):
    url, claims = oidc_web
    claims.pop("noticeflow_role", None)
    async with web_stack.http() as http:
        assert (await _sign_in(http, url)).status_code == 303
        home = await http.get(f"{url}/")
        assert home.status_code == 200 and "viewer" in home.text
