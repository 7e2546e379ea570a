"""A real browser: Debian's chromium driven by Playwright (``executable_path``; Playwright never
downloads a browser here). Ops sign in and open a notice; a customer follows the action link from
a mail in the SMTP sink and objects; the case appears on the open dashboard without a reload.
Screenshots of the pages go to docs/screenshots/ (referenced from the README) when
NOTICEFLOW_SCREENSHOTS=1, else to the test's temporary directory.

Skips, saying why, where chromium or Playwright is missing — except under `.ci/run`, which installs
both and sets NOTICEFLOW_REQUIRE_BROWSER=1, so there a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import PASSWORDS, spec

CHROMIUM = os.environ.get("NOTICEFLOW_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]  # fmt: skip


def _missing() -> str | None:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no chromium at {CHROMIUM} (apt-get install chromium, or set NOTICEFLOW_CHROMIUM)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    problem = _missing()
    if problem:
        if os.environ.get("NOTICEFLOW_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser test must run here: {problem}")
        pytest.skip(problem)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def test_ops_watch_a_customer_object_live(web_stack, browser, tmp_path: Path):
    notice = spec("browser-notice", opt_in=False)
    await web_stack.notice(notice)
    shots = SCREENSHOTS if os.environ.get("NOTICEFLOW_SCREENSHOTS") == "1" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)

    # Ops: sign in through the form, open the notice from the list.
    ops = await browser.new_page(viewport={"width": 1280, "height": 900})
    await ops.goto(f"{web_stack.url}/")
    assert "/login" in ops.url
    await ops.fill("input[name=name]", "bob")
    await ops.fill("input[name=password]", PASSWORDS["bob"])
    await ops.click("button[type=submit]")
    await ops.wait_for_url(f"{web_stack.url}/")
    await ops.get_by_role("link", name=notice.notice_id).first.click()
    await ops.wait_for_url(f"{web_stack.url}/notices/{notice.notice_id}*")
    acme_row = ops.locator("tr", has_text="acme")
    await acme_row.first.wait_for()
    assert "open" not in (await acme_row.first.inner_text()).lower()
    await ops.screenshot(path=str(shots / "notice.png"), full_page=True)

    # The customer: the link from the mail in the sink, no JavaScript needed.
    [link] = web_stack.links("acme", "object")
    customer = await browser.new_page(
        viewport={"width": 1000, "height": 900}, java_script_enabled=False
    )
    await customer.goto(link)
    assert "Your deadline" in await customer.content()
    await customer.screenshot(path=str(shots / "action-page.png"), full_page=True)
    await customer.fill("textarea[name=reason]", "We do not allow AI on our data.")
    await customer.get_by_role("button", name="Object to").click()
    await customer.wait_for_url("**/receipts/**")
    receipt = await customer.content()
    assert "r-" in receipt and ("received" in receipt or "recorded" in receipt)

    # Back on the dashboard: the case shows up without a reload (server-sent events).
    await ops.wait_for_function(
        "() => [...document.querySelectorAll('tr')].some("
        "r => r.innerText.includes('acme') && r.innerText.toLowerCase().includes('open'))",
        timeout=20_000,
    )
    await ops.screenshot(path=str(shots / "notice-live.png"), full_page=True)
    await ops.goto(f"{web_stack.url}/")
    await ops.screenshot(path=str(shots / "dashboard.png"), full_page=True)
