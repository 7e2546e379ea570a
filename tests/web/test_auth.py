"""Sign-in, roles and the bearer token, against the real stack."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest

from noticeflow import users
from noticeflow.domain.errors import InputError
from noticeflow.users import Role, User
from noticeflow.web.auth import TOKEN_USER, may_act
from tests.web.conftest import PASSWORDS, csrf_of
from tests.web.test_oidc import (
    _sign_in,
    oidc_web,  # noqa: F401 (a fixture; the tests name it)
)


async def test_pages_need_sign_in_and_api_needs_a_token(web_stack):
    async with web_stack.http() as http:
        page = await http.get("/")
        assert page.status_code == 303 and page.headers["location"].startswith("/login?next=/")
        api = await http.get("/api/notices")
        assert api.status_code == 401 and api.headers["www-authenticate"] == "Bearer"
        wrong = await http.get("/api/notices", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]
        css = await http.get("/static/app.css")
        assert css.status_code == 200 and "noticeflow" in css.text


async def test_sign_in_with_a_wrong_password_then_the_right_one(web_stack):
    async with web_stack.http() as http:
        form = await http.get("/login?next=/notices/x")
        token = csrf_of(form.text)
        bad = await http.post(
            "/login", data={"name": "alice", "password": "nope", "csrf_token": token}
        )
        assert bad.status_code == 401 and "do not match" in bad.text
        no_csrf = await http.post("/login", data={"name": "alice", "password": PASSWORDS["alice"]})
        assert no_csrf.status_code == 403
        good = await http.post(
            "/login",
            data={
                "name": "alice", "password": PASSWORDS["alice"], "csrf_token": token,
                "next": "//evil.example/",
            },
        )  # fmt: skip
        assert good.status_code == 303 and good.headers["location"] == "/"
        assert "nf_session" in http.cookies


async def test_a_viewer_cannot_act(web_stack):
    http = await web_stack.signed_in("vera")
    try:
        home = await http.get("/")
        assert home.status_code == 200 and "vera" in home.text
        refused = await http.post("/notices/none/actions/approve", data={"csrf_token": "x"})
        assert refused.status_code in (403, 404)
    finally:
        await http.aclose()


# --- server-side sessions ------------------------------------------------------------------------


def _cookie_data(cookie: str) -> dict[str, Any]:
    """What a session cookie says (its payload is readable; only its signature is secret)."""
    payload = cookie.split(".", 1)[0]
    return json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))


async def test_a_copied_cookie_is_worth_nothing_after_logout(web_stack):
    bob = await web_stack.signed_in("bob")
    try:
        copied = bob.cookies["nf_session"]
        held = _cookie_data(copied)
        assert set(held) <= {"sid", "csrf"}, held  # no name, no role: those live in the database
        row = await web_stack.pool.fetchrow(
            "SELECT user_name, role, via, expires_at - created_at AS lifetime, revoked_at"
            " FROM web_sessions WHERE sid = $1",
            held["sid"],
        )
        assert (row["user_name"], row["role"], row["via"]) == ("bob", "approver", "password")
        assert row["lifetime"] == timedelta(hours=12) and row["revoked_at"] is None
        home = await bob.get("/")
        assert home.status_code == 200 and "bob" in home.text
        out = await bob.post("/logout", data={"csrf_token": csrf_of(home.text)})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert await web_stack.pool.fetchval(
            "SELECT revoked_at IS NOT NULL FROM web_sessions WHERE sid = $1", held["sid"]
        )
    finally:
        await bob.aclose()
    async with web_stack.http(cookies={"nf_session": copied}) as replay:
        page = await replay.get("/")
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        api = await replay.get("/api/notices")
        assert api.status_code == 401


async def test_disable_remove_and_expiry_end_a_session_at_once(web_stack):
    vera = await web_stack.signed_in("vera")
    alice = await web_stack.signed_in("alice")
    try:
        assert (await vera.get("/")).status_code == 200
        assert await users.disable_user(web_stack.pool, "vera") == 1
        assert (await vera.get("/")).status_code == 303
        assert (await alice.get("/api/notices")).status_code == 200
        assert await users.remove_user(web_stack.pool, "alice") == (True, 1)
        assert (await alice.get("/api/notices")).status_code == 401
        # An expired session (12 h after sign-in) is refused too.
        await users.add_user(web_stack.pool, "alice", Role.operator, PASSWORDS["alice"])
        alice = await web_stack.signed_in("alice")
        await web_stack.pool.execute(
            "UPDATE web_sessions SET expires_at = now() - interval '1 second'"
            " WHERE user_name = 'alice' AND revoked_at IS NULL"
        )
        assert (await alice.get("/")).status_code == 303
    finally:
        await vera.aclose()
        await alice.aclose()


# --- the bearer token and other schemes ----------------------------------------------------------


async def test_only_the_bearer_scheme_is_ours(web_stack):
    basic = {"Authorization": "Basic " + base64.b64encode(b"proxy:secret").decode()}
    bob = await web_stack.signed_in("bob")
    try:
        # A proxy's Basic credentials are not ours: the session decides.
        assert (await bob.get("/api/notices", headers=basic)).status_code == 200
        # A bearer token that is not ours is refused, session or not.
        wrong = await bob.get("/api/notices", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
    finally:
        await bob.aclose()
    async with web_stack.http(headers=basic) as stranger:
        assert (await stranger.get("/api/notices")).status_code == 401
        assert (await stranger.get("/")).status_code == 303


def test_may_act_needs_the_role_and_a_person_to_approve():
    token = User(TOKEN_USER, Role.approver, "token")
    reason = may_act(token, "approve")
    assert reason and reason.startswith("approval needs a signed-in person: four eyes")
    assert may_act(token, "postpone") is None and may_act(token, "resolve_objection") is None
    assert may_act(User("bob", Role.approver, "password"), "approve") is None
    assert may_act(User("olga", Role.approver, "oidc"), "approve") is None
    viewer = may_act(User("vera", Role.viewer, "password"), "object")
    assert viewer == "this needs the operator role; you are viewer"
    assert may_act(User("alice", Role.operator, "password"), "cancel") == (
        "this needs the approver role; you are operator"
    )
    assert (
        may_act(User("bob", Role.approver, "password"), "launch") == "there is no action 'launch'"
    )


# --- forms -----------------------------------------------------------------------------------------


async def test_a_non_ascii_csrf_token_is_a_403_not_a_500(web_stack):
    async with web_stack.http() as http:
        await http.get("/login")
        answer = await http.post(
            "/login", data={"name": "bob", "password": PASSWORDS["bob"], "csrf_token": "é"}
        )
        assert answer.status_code == 403 and "expired" in answer.text


async def test_a_control_character_in_the_name_is_a_failed_sign_in(web_stack):
    async with web_stack.http() as http:
        token = csrf_of((await http.get("/login")).text)
        answer = await http.post(
            "/login", data={"name": "bo\x00b", "password": "x" * 12, "csrf_token": token}
        )
        assert answer.status_code == 401 and "do not match" in answer.text


def _from(web_stack, address: str) -> httpx.AsyncClient:
    """A client whose requests come from another loopback address (another "client")."""
    return web_stack.http(transport=httpx.AsyncHTTPTransport(local_address=address))


async def _attempt(http: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    token = csrf_of((await http.get("/login")).text)
    return await http.post("/login", data={"name": name, "password": password, "csrf_token": token})


async def test_the_limit_per_name_counts_only_failed_sign_ins(web_stack):
    # Twelve sign-ins of vera in a minute, from two clients (each within its own limit): all in.
    for address in ("127.0.0.5", "127.0.0.6"):
        async with _from(web_stack, address) as http:
            for _ in range(6):
                answer = await _attempt(http, "vera", PASSWORDS["vera"])
                assert answer.status_code == 303, answer.text
    # Ten failures for alice (a guesser's ten tries) ...
    async with _from(web_stack, "127.0.0.7") as guesser:
        for _ in range(10):
            assert (await _attempt(guesser, "alice", "not-her-password")).status_code == 401
    # ... and her name is closed for the minute, from anywhere, even with the right password.
    async with _from(web_stack, "127.0.0.8") as http:
        closed = await _attempt(http, "alice", PASSWORDS["alice"])
        assert closed.status_code == 429 and closed.headers["retry-after"]
        assert "Too many failed sign-ins for this user name" in closed.text
        assert "only failed attempts count" in closed.text
        assert (await _attempt(http, "bob", PASSWORDS["bob"])).status_code == 303
    # One client is still held to ten attempts a minute, whatever their outcome.
    async with _from(web_stack, "127.0.0.9") as http:
        for _ in range(10):
            assert (await _attempt(http, "vera", PASSWORDS["vera"])).status_code == 303
        too_many = await _attempt(http, "bob", PASSWORDS["bob"])
        assert too_many.status_code == 429 and "from your address" in too_many.text


# --- OpenID Connect ------------------------------------------------------------------------------


async def test_an_oidc_session_keeps_its_role_in_the_database(web_stack, oidc_web):  # noqa: F811
    url, claims = oidc_web
    claims["noticeflow_role"] = "approver"
    async with web_stack.http() as http:
        assert (await _sign_in(http, url)).status_code == 303
        copied = http.cookies["nf_session"]
        held = _cookie_data(copied)
        assert set(held) <= {"sid", "csrf"}
        row = await web_stack.pool.fetchrow(
            "SELECT user_name, role, via FROM web_sessions WHERE sid = $1", held["sid"]
        )
        assert dict(row) == {"user_name": "olga.ops", "role": "approver", "via": "oidc"}
        # Her name is taken now: no local account may be made in it.
        with pytest.raises(InputError, match="OpenID Connect user"):
            await users.add_user(web_stack.pool, "olga.ops", Role.viewer, "olga-password-1")
        home = await http.get(f"{url}/")
        assert home.status_code == 200 and "olga.ops" in home.text and "approver" in home.text
        out = await http.post(f"{url}/logout", data={"csrf_token": csrf_of(home.text)})
        assert out.status_code == 303
    async with web_stack.http(cookies={"nf_session": copied}) as replay:
        assert (await replay.get(f"{url}/")).status_code == 303


async def test_oidc_refuses_a_local_accounts_or_a_reserved_name(web_stack, oidc_web):  # noqa: F811
    url, claims = oidc_web
    claims["preferred_username"] = "Bob"  # bob is a local account (approver)
    claims["noticeflow_role"] = "approver"
    async with web_stack.http() as http:
        refused = await _sign_in(http, url)
        assert refused.status_code == 403
        assert "a local account named" in refused.text and "identity provider" in refused.text
        assert (await http.get(f"{url}/")).status_code == 303  # nobody signed in
    claims["preferred_username"] = "system"
    async with web_stack.http() as http:
        refused = await _sign_in(http, url)
        assert refused.status_code == 403 and "reserved" in refused.text
    count = await web_stack.pool.fetchval("SELECT count(*) FROM web_sessions WHERE via = 'oidc'")
    assert count == 0
