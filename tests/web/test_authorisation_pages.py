"""Action pages by authorisation mode (issue 12), on the real stack (links from the mails in the
SMTP sink, pages over HTTP, outcomes from the records): each page says what silence means for its
customer; a dora customer requests changes through its object link and approves through its
opt-in link; a specific customer authorises on an ordinary notice; a general one cannot opt in."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta

from noticeflow import repository
from noticeflow.links import ActionLink, LinkAction, LinkSigner
from tests import helpers
from tests.web.conftest import SECRET, spec
from tests.web.test_action_pages import actions_offered, form_of, mail_to, path_of

# The web stack's US customers, each with a contract of its own.
MODES_CSV = (
    helpers.CUSTOMERS_CSV.replace(
        "window_days,window_unit\n", "window_days,window_unit,authorisation\n"
    )
    .replace("America/New_York,,\n", "America/New_York,,,dora\n")
    .replace("30,calendar\n", "30,calendar,specific\n")
    .replace("America/Chicago,,\n", "America/Chicago,,,general\n")
)


async def test_each_page_follows_its_customers_contract(web_stack):
    customers = helpers.customers(MODES_CSV)
    assert {c.customer_id: str(c.authorisation) for c in customers}["acme"] == "dora"
    await repository.upsert_customers(web_stack.pool, customers)
    notice = spec("web-modes", opt_in=False)  # an ordinary notice
    await web_stack.notice(notice)
    async with web_stack.http() as http:
        # general: silence is deemed acceptance; its opt-in link does nothing.
        initech = path_of(web_stack, web_stack.links("initech", "object")[0])
        page = html.unescape((await http.get(initech)).text)
        assert "What your silence means:" in page and "deemed accepted" in page
        assert actions_offered(page) == {"object"}
        assert web_stack.links("initech", "opt_in") == []  # its mail has no opt-in link
        later = datetime.now(UTC) + timedelta(days=60)
        made = ActionLink(notice.notice_id, "initech", LinkAction.opt_in, later)
        opt = await http.get("/a/" + LinkSigner(SECRET, web_stack.url).token(made))
        assert actions_offered(opt.text) == set() and "does not ask for an opt-in" in opt.text

        # specific: silence is refusal; its opt-in link authorises on an ordinary notice.
        opt_path = path_of(web_stack, web_stack.links("globex", "opt_in")[0])
        page = html.unescape((await http.get(opt_path)).text)
        assert "requires your specific authorisation" in page
        assert "You have not opted in" in page and actions_offered(page) == {"opt_in"}
        posted = await http.post(opt_path, data=form_of(page, "opt_in"))
        assert posted.status_code == 303, posted.text
        assert "Opt-in received" in (await http.get(posted.headers["location"])).text
        assert await web_stack.pool.fetchval(
            "SELECT opted_in FROM recipients WHERE notice_id = $1 AND customer_id = 'globex'",
            notice.notice_id,
        )

        # dora: approve, object or request changes.
        object_path = path_of(web_stack, web_stack.links("acme", "object")[0])
        page = html.unescape((await http.get(object_path)).text)
        assert "Under your contract (DORA)" in page
        assert actions_offered(page) == {"object", "request_changes"}
        form = form_of(page, "request_changes")
        empty = await http.post(object_path, data={**form, "reason": "  "})
        assert empty.status_code == 422  # a request without words is refused, nothing recorded
        posted = await http.post(
            object_path, data={**form, "reason": "Host it in the EU and we agree."}
        )
        assert posted.status_code == 303, posted.text
        receipt = await http.get(posted.headers["location"])
        assert "Request for changes received" in receipt.text and "Accepted" in receipt.text
        case = await web_stack.pool.fetchrow(
            "SELECT status, timely, request FROM objections"
            " WHERE notice_id = $1 AND customer_id = 'acme'",
            notice.notice_id,
        )
        assert dict(case) == {"status": "open", "timely": True, "request": "changes"}
        assert await mail_to(web_stack, "acme", "received your request for changes")
        page = html.unescape((await http.get(object_path)).text)
        assert "You have requested changes" in page
        approve_path = path_of(web_stack, web_stack.links("acme", "opt_in")[0])
        page = html.unescape((await http.get(approve_path)).text)
        assert actions_offered(page) == {"opt_in"} and "Approve OpenAI, LLC" in page

        # A general customer's page never offers a request for changes, even when forged in.
        page = (await http.get(initech)).text
        forged = {**form_of(page, "object"), "action": "request_changes", "reason": "Please"}
        refused = await http.post(initech, data=forged)
        assert refused.status_code == 409 and "does not provide for requests" in refused.text
        assert not await web_stack.pool.fetchval(
            "SELECT count(*) FROM intake WHERE notice_id = $1 AND customer_id = 'initech'",
            notice.notice_id,
        )
