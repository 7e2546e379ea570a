"""HEAD wherever a customer's GET works (RFC 9110 9.3.2): link checkers and mail scanners send
it before a person clicks. The action page, the receipt page, its signed JWS and the receipt
keys answer HEAD with GET's status and headers and no body, and a HEAD records nothing. Against
the real stack, over HTTP, from a mailed link."""

from __future__ import annotations

from urllib.parse import urlencode

from noticeflow import receipts
from tests.web.test_action_pages import customer_actions, form_of, notice_spec, path_of

SAME = ("content-type", "cache-control", "content-security-policy", "x-frame-options")


async def test_head_answers_as_get_does_and_records_nothing(web_stack):
    notice = notice_spec("web-action-head")
    await web_stack.notice(notice)
    page_path = path_of(web_stack, web_stack.links("acme", "object")[0])
    async with web_stack.http() as http:
        head = await http.head(page_path)
        page = await http.get(page_path)
        assert head.status_code == page.status_code == 200, (head.status_code, head.text)
        assert head.content == b""
        for name in SAME:
            assert head.headers.get(name) == page.headers.get(name), name
        assert await customer_actions(web_stack, notice.notice_id) == 0

        # A forged link: the same refusal as GET, no body.
        forged = page_path[:-3] + ("aaa" if not page_path.endswith("aaa") else "bbb")
        refused = await http.get(forged)
        refused_head = await http.head(forged)
        assert refused_head.status_code == refused.status_code >= 400
        assert refused_head.content == b""

        fields = form_of(page.text, "object") | {"reason": "We object."}
        posted = await http.post(
            page_path,
            content=urlencode(fields).encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert posted.status_code == 303, posted.text[:500]
        receipt_path = posted.headers["location"]
        for path in (receipt_path, receipt_path + ".jws", receipts.JWKS_PATH):
            got = await http.get(path)
            head = await http.head(path)
            assert got.status_code == head.status_code == 200, (path, head.status_code)
            assert head.content == b"" and got.content
            assert head.headers["content-type"] == got.headers["content-type"], path
        assert await customer_actions(web_stack, notice.notice_id) == 1
