"""Rendering many customers' mails at once (mail.BatchRenderer): each customer's mail is exactly
what rendering it alone gives, with the shared parts rendered once per distinct terms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noticeflow.domain.render import mail_context, update_context
from noticeflow.mail import MailRenderer
from tests import helpers

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
SPEC = helpers.notice(NOW, audience={})  # one spec object per batch, as in a send
NAMES = ["Acme <GmbH> & Co", 'O\'Brien "quoted"', "  padded  ", "Zoë {{ x }}", "line\nbreak", ""]


def notice_context(name: str, n: int, timezone: str = "Europe/Berlin", auth: str = "general"):
    links = {"object_url": f"https://n.example/a/o{n}?a=<1>&b", "opt_in_url": f"https://n/p{n}"}
    context = mail_context(SPEC, timezone, NOW + timedelta(days=30), links, auth)
    return {**context, "customer_name": name, "customer_id": f"c{n:06d}"}


def test_the_built_in_templates_are_rendered_once_per_terms_and_filled_exactly():
    renderer = MailRenderer()
    batch = renderer.batch()
    for timezone in ("Europe/Berlin", "America/New_York"):
        for auth in ("general", "specific", "dora"):
            for n, name in enumerate(NAMES * 2):
                context = notice_context(name, n, timezone, auth)
                assert batch.render("notice", context) == renderer.render("notice", context)
    for n, name in enumerate(NAMES):
        context = {**update_context(SPEC, "Postponed", ["a & <b>"]), "customer_name": name,
                   "customer_id": f"c{n}"}  # fmt: skip
        assert batch.render("update", context) == renderer.render("update", context)
    cached = list(batch._cache.values())
    assert len(cached) == 7 and all(parts is not None for parts in cached)  # 6 terms, 1 update


@settings(max_examples=60, deadline=None)
@given(name=st.text(max_size=40), customer_id=st.text(min_size=1, max_size=20))
def test_any_name_comes_out_as_a_rendering_of_its_own_gives(name, customer_id):
    renderer = MailRenderer()
    batch = renderer.batch()
    first = notice_context("First Customer", 1)
    assert batch.render("notice", first) == renderer.render("notice", first)
    context = {**notice_context(name, 2), "customer_id": customer_id}
    assert batch.render("notice", context) == renderer.render("notice", context)


@pytest.mark.parametrize(
    "use",
    [
        "{{ customer_name | upper }}",
        "{% if customer_name|length > 12 %}long{% else %}short{% endif %} {{ customer_name }}",
        "{% set who = customer_name %}{{ who }}",
        "{% set who %}{{ customer_name }}{% endset %}{{ who | length }}",
    ],
)
def test_a_template_that_does_more_than_print_a_customers_value_is_rendered_for_each(
    tmp_path: Path, use: str
):
    (tmp_path / "notice.txt.j2").write_text(f"Dear {use}, {{{{ object_url }}}}\n")
    (tmp_path / "notice.html.j2").write_text("<p>{{ customer_name }}</p>\n")
    renderer = MailRenderer(tmp_path)
    batch = renderer.batch()
    for n, name in enumerate(["Short", "A much longer name", "Mid-length x", "Short"]):
        context = notice_context(name, n)
        assert batch.render("notice", context) == renderer.render("notice", context)
    assert not batch._cache  # never cached: the template is not only printing them
