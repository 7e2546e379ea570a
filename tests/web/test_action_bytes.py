"""The customer action form's body must be UTF-8 (what the page's own form sends): raw bytes that
are not UTF-8, Latin-1 text labelled ``charset=iso-8859-1``, or %-escapes of bytes that are not
UTF-8 are refused with 422 and a clear message on the page, nothing recorded — never an objection
kept with replaced or garbled words. Against the real stack, over HTTP, from a mailed link."""

from __future__ import annotations

import html
from urllib.parse import urlencode

from tests.web.test_action_pages import customer_actions, form_of, notice_spec, path_of

URLENCODED = "application/x-www-form-urlencoded"


async def test_a_form_body_that_is_not_utf8_is_refused_and_nothing_recorded(web_stack):
    notice = notice_spec("web-action-bytes")
    await web_stack.notice(notice)
    page_path = path_of(web_stack, web_stack.links("acme", "object")[0])
    async with web_stack.http() as http:
        page = await http.get(page_path)
        assert page.status_code == 200, page.text
        fields = urlencode(form_of(page.text, "object")).encode()
        for body, content_type in (
            (fields + b"&reason=\xff\xfe We object.", URLENCODED),
            (
                fields + "&reason=Wir widersprechen der Übermittlung.".encode("latin-1"),
                f"{URLENCODED}; charset=iso-8859-1",
            ),
            (fields + b"&reason=We%20object%FF.", URLENCODED),
        ):
            refused = await http.post(
                page_path, content=body, headers={"content-type": content_type}
            )
            assert refused.status_code == 422, (body, refused.status_code, refused.text[:500])
            assert "not valid UTF-8, so nothing was recorded" in html.unescape(refused.text)
            assert "Traceback" not in refused.text
        assert await customer_actions(web_stack, notice.notice_id) == 0

        # The same words in UTF-8, even unescaped as curl -d sends them: recorded.
        reason = "Wir widersprechen der Übermittlung."
        posted = await http.post(
            page_path,
            content=fields + f"&reason={reason}".encode(),
            headers={"content-type": f"{URLENCODED}; charset=iso-8859-1"},
        )
        assert posted.status_code == 303, posted.text[:500]
        assert await customer_actions(web_stack, notice.notice_id) == 1
