"""Fixed-window request counters per key (a link token, a client address), in this process.

Enough to stop a script from hammering one link or one page; a deployment with several web
processes behind a balancer gets a limit per process (docs/web.md)."""

from __future__ import annotations

import time
from collections import OrderedDict


class RateLimiter:
    def __init__(self, window_seconds: float = 60.0, max_keys: int = 100_000) -> None:
        self.window = window_seconds
        self.max_keys = max_keys
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def hit(self, key: str, limit: int, now: float | None = None) -> float | None:
        """Count one request; None if within ``limit``, else the seconds until the window ends."""
        now = time.monotonic() if now is None else now
        start, count = self._counts.get(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        count += 1
        self._counts[key] = (start, count)
        self._counts.move_to_end(key)
        while len(self._counts) > self.max_keys:
            self._counts.popitem(last=False)
        if count > limit:
            return max(0.0, self.window - (now - start))
        return None

    def peek(self, key: str, limit: int, now: float | None = None) -> float | None:
        """Whether one more would be refused, without counting it: None if ``key`` has had fewer
        than ``limit`` in its window, else the seconds until the window ends."""
        now = time.monotonic() if now is None else now
        start, count = self._counts.get(key, (now, 0))
        if now - start >= self.window or count < limit:
            return None
        return max(0.0, self.window - (now - start))
