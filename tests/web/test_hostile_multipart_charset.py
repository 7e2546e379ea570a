"""A multipart action form is read as UTF-8 whatever its charset label says, as a urlencoded one
is: Starlette decodes each part by the Content-Type's charset (and by Latin-1 a charset it does
not know), so UTF-8 words labelled ``charset=iso-8859-1`` were recorded garbled ("sociÃ©tÃ©").
And a multipart body of unreadable bytes near the size cap is refused as not UTF-8 (422), not
as an unreadable form (400): each such byte re-encodes as three. Real stack, over HTTP."""

from __future__ import annotations

import html

from noticeflow.crypto import Field, load_keys
from tests.web.test_action_pages import customer_actions, form_of, notice_spec, path_of


def multipart(fields: dict[str, str], reason: bytes, label: str = "") -> tuple[bytes, str]:
    boundary = "nf-hostile"
    items = [(name, value.encode()) for name, value in fields.items()] + [("reason", reason)]
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value
        + b"\r\n"
        for name, value in items
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}{label}"


async def test_a_multipart_form_is_utf8_whatever_its_charset_label(web_stack):
    notice = notice_spec("web-multipart-charset")
    await web_stack.notice(notice)
    page_path = path_of(web_stack, web_stack.links("acme", "object")[0])
    key = (await load_keys(web_stack.pool, ["acme"]))["acme"]
    async with web_stack.http() as http:
        for label in ("; charset=iso-8859-1", "; charset=no-such-charset", "; charset=utf-16"):
            page = await http.get(page_path)
            reason = f"Nous refusons le transfert vers la société ({label})."
            body, content_type = multipart(form_of(page.text, "object"), reason.encode(), label)
            posted = await http.post(
                page_path, content=body, headers={"content-type": content_type}
            )
            assert posted.status_code == 303, (label, posted.status_code, posted.text[:500])
            receipt_id = posted.headers["location"].rsplit("/", 1)[1]
            sealed = await web_stack.pool.fetchval(
                "SELECT reason FROM objections WHERE receipt_id = $1", receipt_id
            )
            assert key.unseal(Field.OBJECTION_REASON, sealed) == reason

        recorded = await customer_actions(web_stack, notice.notice_id)
        page = await http.get(page_path)
        body, content_type = multipart(form_of(page.text, "object"), b"\xff" * 900_000)
        refused = await http.post(page_path, content=body, headers={"content-type": content_type})
        assert refused.status_code == 422, refused.text[:500]
        assert "not valid UTF-8, so nothing was recorded" in html.unescape(refused.text)
        assert await customer_actions(web_stack, notice.notice_id) == recorded
