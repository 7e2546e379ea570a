"""The customer action form's body must be UTF-8 (what the page's own form sends): raw bytes that
are not UTF-8, Latin-1 text labelled ``charset=iso-8859-1``, or %-escapes of bytes that are not
UTF-8 are refused with 422 and a clear message on the page, nothing recorded — never an objection
kept with replaced or garbled words. Against the real stack, over HTTP, from a mailed link."""

from __future__ import annotations

import html
from urllib.parse import urlencode

from noticeflow import repository
from noticeflow.crypto import Field, load_keys
from noticeflow.domain.customers import parse_customers_csv
from tests.web.test_action_pages import customer_actions, form_of, notice_spec, path_of
from tests.web.test_language_pages import GERMAN

URLENCODED = "application/x-www-form-urlencoded"


async def test_a_form_body_that_is_not_utf8_is_refused_and_nothing_recorded(web_stack):
    notice = notice_spec("web-action-bytes")
    await web_stack.notice(notice)
    page_path = path_of(web_stack, web_stack.links("acme", "object")[0])
    async with web_stack.http() as http:
        page = await http.get(page_path)
        assert page.status_code == 200, page.text
        fields = urlencode(form_of(page.text, "object")).encode()
        latin1 = "Wir widersprechen der \ufffdbermittlung."  # as the page shows it again
        for body, content_type, shown_reason in (
            (fields + b"&reason=\xff\xfe We object.", URLENCODED, "\ufffd\ufffd We object."),
            (
                fields + "&reason=Wir widersprechen der Übermittlung.".encode("latin-1"),
                f"{URLENCODED}; charset=iso-8859-1",
                latin1,
            ),
            (fields + b"&reason=We%20object%FF.", URLENCODED, "We object\ufffd."),
            # curl -F: Starlette alone reads a part that is not UTF-8 as Latin-1 ("Ü" kept)
            (
                *multipart(form_of(page.text, "object"), "Wir widersprechen der \xdcbermittlung."),
                latin1,
            ),
        ):
            refused = await http.post(
                page_path, content=body, headers={"content-type": content_type}
            )
            assert refused.status_code == 422, (body, refused.status_code, refused.text[:500])
            shown = html.unescape(refused.text)
            assert "not valid UTF-8, so nothing was recorded" in shown
            # The reason shown again with U+FFFD for the unreadable bytes, not read as Latin-1.
            assert shown_reason in shown and "Übermittlung" not in shown, shown
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


def multipart(fields: dict[str, str], latin1_reason: str) -> tuple[bytes, str]:
    """A multipart/form-data body of ``fields`` (UTF-8) and a reason in Latin-1 bytes."""
    boundary = "nf-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value.encode()
        + b"\r\n"
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="reason"\r\n\r\n'.encode()
        + latin1_reason.encode("latin-1")
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def test_a_german_customer_is_told_in_german_and_a_utf8_multipart_form_is_recorded(
    web_stack,
):
    await repository.upsert_customers(web_stack.pool, parse_customers_csv(GERMAN))
    notice = notice_spec("web-action-bytes-de")
    await web_stack.notice(notice)
    page_path = path_of(web_stack, web_stack.links("stark", "object")[0])
    async with web_stack.http() as http:
        page = await http.get(page_path)
        assert page.status_code == 200 and '<html lang="de">' in page.text
        fields = form_of(page.text, "object")
        body, content_type = multipart(fields, "Wir widersprechen der \xdcbermittlung.")
        refused = await http.post(page_path, content=body, headers={"content-type": content_type})
        assert refused.status_code == 422, refused.text[:500]
        shown = html.unescape(refused.text)
        assert "Der Text des Formulars war kein gültiges UTF-8; es wurde nichts erfasst." in shown
        assert "not valid UTF-8" not in shown
        assert await customer_actions(web_stack, notice.notice_id) == 0

        # The same form with the reason in UTF-8, as multipart: recorded, the words intact.
        boundary = "nf-test-boundary"
        good = body.replace(
            "Wir widersprechen der \xdcbermittlung.".encode("latin-1"),
            "Wir widersprechen der Übermittlung.".encode(),
        )
        posted = await http.post(page_path, content=good, headers={"content-type": content_type})
        assert boundary in content_type and posted.status_code == 303, posted.text[:500]
        receipt = await http.get(posted.headers["location"])
        assert receipt.status_code == 200
        assert await customer_actions(web_stack, notice.notice_id) == 1
        sealed = await web_stack.pool.fetchval(
            "SELECT reason FROM objections WHERE customer_id = 'stark'"
        )
        key = (await load_keys(web_stack.pool, ["stark"]))["stark"]
        assert key.unseal(Field.OBJECTION_REASON, sealed) == "Wir widersprechen der Übermittlung."
