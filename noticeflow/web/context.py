"""What every request handler needs, built once per app: settings, the pool, the Temporal client
(connected lazily: the web serves pages and records receipts while Temporal is down), the link
signer, the templates and the rate limiter."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape
from temporalio.client import Client

from noticeflow import control, intake
from noticeflow.config import Settings
from noticeflow.links import LinkSigner
from noticeflow.waker import Waker
from noticeflow.web import format as fmt
from noticeflow.web.ratelimit import RateLimiter

log = structlog.get_logger(__name__)
security_log = structlog.get_logger("noticeflow.security")


def make_templates() -> Jinja2Templates:
    env = Environment(
        loader=PackageLoader("noticeflow.web", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt.FILTERS)
    return Jinja2Templates(env=env)


@dataclass
class Web:
    settings: Settings
    pool: asyncpg.Pool
    signer: LinkSigner
    templates: Jinja2Templates
    limiter: RateLimiter
    client: Client | None = None
    connect_error: str | None = None
    _connecting: asyncio.Lock = field(default_factory=asyncio.Lock)
    _next_try: float = 0.0
    _waker: Waker | None = None

    async def temporal(self) -> tuple[Client | None, str | None]:
        """The Temporal client, or why there is none (tried again at most every 5 s)."""
        if self.client is not None:
            return self.client, None
        async with self._connecting:
            loop = asyncio.get_running_loop()
            if self.client is None and loop.time() >= self._next_try:
                from noticeflow.temporal import connect

                try:
                    self.client = await asyncio.wait_for(connect(self.settings), timeout=5)
                    self.connect_error = None
                except Exception as error:  # an outage: receipts are kept, the sweeper wakes
                    self.connect_error = f"{self.settings.temporal_address}: {error}"[:300]
                    self._next_try = loop.time() + 5
                    log.warning("temporal not reachable", error=self.connect_error)
        return self.client, self.connect_error

    def render(
        self, request: Request, template: str, /, status_code: int = 200, **context: Any
    ) -> Any:
        from noticeflow.web import csrf

        context.setdefault("csrf_token", csrf.token(request))
        context.setdefault("user", getattr(request.state, "user", None))
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)

    @property
    def waker(self) -> Waker:
        if self._waker is None:
            self._waker = Waker(self.temporal, self.pool, self.settings.task_queue)
        return self._waker

    async def hand_over(
        self, receipt: intake.Receipt, wait_seconds: float = 5.0
    ) -> tuple[intake.Receipt, str | None]:
        """Wake the receipt's notice (coalesced with other receipts of a burst) and wait a
        little for its outcome; as ``control.hand_over``: the receipt, and why it is pending."""
        if not receipt.pending:
            return receipt, None
        problem = await self.waker.wake(receipt.notice_id, receipt.action, receipt.receipt_id)
        if problem:
            return receipt, problem
        return await control.outcome(self.pool, receipt, wait_seconds, poll=0.05)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pool.close()


def get_web(request: Request) -> Web:
    web: Web = request.app.state.web
    return web
