"""Sign-in, roles and the bearer token, against the real stack."""

from __future__ import annotations

from tests.web.conftest import PASSWORDS, csrf_of


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
