"""A real stack for the web tests: the Temporal dev server, embedded PostgreSQL, aiosmtpd, a worker
(with the projector and the intake sweeper) and `noticeflow web` served by uvicorn on a free port.
Tests talk to it over HTTP with httpx, and (tests/web/test_browser.py) with Debian's chromium."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.client import Client

from noticeflow import control, repository, users
from noticeflow.config import Settings
from noticeflow.contracts import workflow_id
from noticeflow.control import sweep_intake
from noticeflow.domain.notice import NoticeSpec
from noticeflow.projections import run_projections
from noticeflow.sink import SmtpSink, free_port
from noticeflow.users import Role
from noticeflow.web.app import serve
from tests import helpers
from worker.main import build_worker, make_deps

WEB_TOKEN = "test-bearer-token-0123456789"
SECRET = "S3lEERg_yT4DFivGkqvUSK1SumeKEM7YCej5L-2rwT4"  # a link key as keys must be
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "vera": "vera-password-333"}


@dataclass
class WebStack:
    url: str
    settings: Settings
    pool: asyncpg.Pool
    client: Client
    sink: SmtpSink
    task_queue: str

    def http(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30, **kwargs)

    def api(self) -> httpx.AsyncClient:
        return self.http(headers={"Authorization": f"Bearer {WEB_TOKEN}"})

    async def signed_in(self, name: str) -> httpx.AsyncClient:
        """An httpx client with a session of ``name`` (see PASSWORDS), signed in through the form."""
        http = self.http()
        page = await http.get("/login")
        token = csrf_of(page.text)
        answer = await http.post(
            "/login", data={"name": name, "password": PASSWORDS[name], "csrf_token": token}
        )
        assert answer.status_code == 303, answer.text
        return http

    async def notice(
        self, spec: NoticeSpec, *, approve: bool = True, author: str = "alice"
    ) -> None:
        """Create the notice (as ``author``), approve it as someone else and wait for its window."""
        await control.start_notice(self.client, self.pool, spec, author, self.task_queue)
        if approve:
            receipt, _ = await control.submit(
                self.client, self.pool, spec.notice_id, "approve", {"by": "bob"},
                task_queue=self.task_queue,
            )  # fmt: skip
            assert receipt.status == "accepted", receipt
            await self.wait_phase(spec.notice_id, "window_open")

    async def wait_phase(self, notice_id: str, phase: str, seconds: float = 60) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + seconds
        while loop.time() < give_up:
            found = await self.pool.fetchval(
                "SELECT phase FROM rm_notices WHERE notice_id = $1", notice_id
            )
            if found == phase:
                return
            await asyncio.sleep(0.3)
        raise AssertionError(f"{notice_id} did not reach {phase} in {seconds}s (is {found})")

    def links(self, customer_id: str | None = None, action: str | None = None) -> list[str]:
        """Every action link in the mails the sink holds, of one customer / action if given."""
        from noticeflow.links import LinkSigner

        signer = LinkSigner(SECRET, self.url)
        found = []
        for message in self.sink.messages():
            body = "\n".join(
                part.get_content() for part in message.walk()  # type: ignore[attr-defined]
                if part.get_content_type() in ("text/plain", "text/html")
            )  # fmt: skip
            for url in re.findall(re.escape(self.url) + r"/a/[A-Za-z0-9_.\-]+", body):
                link = signer.verify(url.rsplit("/", 1)[1], datetime.now(UTC))
                if customer_id in (None, link.customer_id) and action in (None, link.action.value):
                    found.append(url)
        return list(dict.fromkeys(found))


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


@pytest.fixture
async def web_stack(
    dev_server_env, database_url, pool, smtp_sink, tmp_path: Path
) -> AsyncIterator[WebStack]:
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        data_dir=tmp_path / "data",
        temporal_address=dev_server_env.client.service_client.config.target_host,
        database_url=database_url,
        smtp_url=smtp_sink.url,
        task_queue=task_queue,
        secret_key=SECRET,
        public_url=url,
        web_host="127.0.0.1",
        web_port=port,
        web_token=WEB_TOKEN,
        temporal_ui_url="http://127.0.0.1:8233",
        # A posted form waits for its judgement up to this long (it returns the moment it is
        # judged): the tests read "Accepted" on the receipt, which a loaded 2-core machine may
        # take longer than the default 5 s to reach (one such failure seen under load).
        link_wait_seconds=30.0,
    )
    await repository.upsert_customers(pool, helpers.customers())
    for name, role in (("alice", Role.operator), ("bob", Role.approver), ("vera", Role.viewer)):
        await users.add_user(pool, name, role, PASSWORDS[name])
    deps = make_deps(
        pool, smtp_sink.url, "privacy@vendor.example", secret_key=SECRET, public_url=url
    )
    stop = asyncio.Event()
    background = [
        asyncio.create_task(run_projections(pool, stop, poll_seconds=0.5)),
        asyncio.create_task(sweep_intake(dev_server_env.client, pool, stop, task_queue, every=1)),
    ]
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    web = asyncio.create_task(
        serve(settings, stop, pool=pool, client=dev_server_env.client, started=started)
    )
    await asyncio.wait_for(started, 30)
    stack = WebStack(url, settings, pool, dev_server_env.client, smtp_sink, task_queue)
    try:
        async with build_worker(dev_server_env.client, deps, task_queue):
            yield stack
            # Leave nothing running on the shared dev server.
            for notice_id in await pool.fetch("SELECT notice_id FROM notices"):
                handle = dev_server_env.client.get_workflow_handle(workflow_id(notice_id[0]))
                with contextlib.suppress(Exception):
                    await handle.terminate("test over")
    finally:
        stop.set()
        await asyncio.gather(web, *background, return_exceptions=True)


def spec(notice_id: str = "web-notice", **overrides: Any) -> NoticeSpec:
    """A notice to the US customers; effective 35 days out, past globex's 30-day contract window
    on any weekday (Art. 3(4) rolls a last day on a weekend forward)."""
    now = datetime.now(UTC)
    overrides.setdefault("effective_at", (now + timedelta(days=35)).isoformat())
    return helpers.notice(now, notice_id=notice_id, **overrides)
