"""Coalesced wake-ups (noticeflow/waker.py), with control.wake replaced by a recorder: a burst
costs a few signals, and every caller returns only after a signal that began after its call."""

from __future__ import annotations

import asyncio
from typing import Any

from noticeflow import waker as waker_module
from noticeflow.waker import Waker


async def test_a_burst_shares_signals_and_every_call_is_covered(monkeypatch):
    loop = asyncio.get_running_loop()
    sent: list[tuple[float, float]] = []  # (start, end) of each signal

    async def fake_wake(client: Any, pool: Any, notice_id: str, *args: Any) -> None:
        start = loop.time()
        await asyncio.sleep(0.05)
        sent.append((start, loop.time()))

    monkeypatch.setattr(waker_module.control, "wake", fake_wake)

    async def client() -> tuple[Any, None]:
        return object(), None

    w = Waker(client, pool=None)

    async def one(delay: float) -> tuple[float, str | None]:
        await asyncio.sleep(delay)
        called = loop.time()
        return called, await w.wake("n1", "opt_in", "r-1")

    results = await asyncio.gather(*(one(i * 0.002) for i in range(100)))
    assert all(problem is None for _, problem in results)
    assert len(sent) <= 6, sent  # 100 calls over 0.2 s, 0.05 s per signal
    for called, _ in results:  # some signal started at or after each call
        assert any(start >= called for start, _ in sent), called


async def test_a_failing_signal_is_reported_and_the_next_call_tries_again(monkeypatch):
    calls = 0

    async def failing(*args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("connection reset")

    monkeypatch.setattr(waker_module.control, "wake", failing)

    async def client() -> tuple[Any, None]:
        return object(), None

    w = Waker(client, pool=None)
    assert "connection reset" in (await w.wake("n1", "object", "r-1") or "")
    assert await w.wake("n1", "object", "r-2") is None


async def test_no_client_says_why():
    async def client() -> tuple[None, str]:
        return None, "127.0.0.1:1: connection refused"

    w = Waker(client, pool=None)
    assert "not reachable" in (await w.wake("n1", "object", "r-1") or "")
