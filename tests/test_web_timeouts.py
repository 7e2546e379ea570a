"""The web's database work is bounded (docs/web.md, "A database that does not answer").

A database that hangs (its postmaster stopped with SIGSTOP: connections are accepted by the
kernel and never answered) must not hang the web: a page or an API answer that needs the database
is a 503 within ``NOTICEFLOW_WEB_DB_TIMEOUT`` (plus a little), with ``Retry-After`` and a short
text, never a hang or a traceback; once the database answers again, so does the web.

Real parts: `noticeflow web` served by uvicorn (its own pool, as `noticeflow web` and `up` make
it), the real PostgreSQL behind a TCP relay in this test that, on a flag, stops forwarding in both
directions while keeping every socket open (a hung server, not a refusing one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from noticeflow.config import Settings
from noticeflow.sink import free_port
from noticeflow.web.app import serve

SECRET = "S3lEERg_yT4DFivGkqvUSK1SumeKEM7YCej5L-2rwT4"
TOKEN = "test-bearer-token-0123456789"
BOUND = 2.0  # NOTICEFLOW_WEB_DB_TIMEOUT in this test
SLACK = 3.0  # what an answer may take beyond the bound (connection set-up, a slow machine)


class Relay:
    """A TCP relay to ``host:port``; :meth:`hang` stops forwarding (both ways, every connection,
    new ones too) without closing anything, :meth:`resume` forwards what was held and goes on."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Relay:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        self.flowing.set()
        for writer in self.writers:
            writer.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def hang(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        await self.flowing.wait()
        up_reader, up_writer = await connect_to(self.database_url)
        self.writers.append(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                await self.flowing.wait()
                data = await source.read(65536)
                if not data:
                    break
                await self.flowing.wait()  # what came in while hung is held, not lost
                sink.write(data)
                await sink.drain()
        sink.close()


async def connect_to(database_url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the server a URL names: over its Unix socket (``?host=/dir``, as the
    embedded server's URLs are) or TCP."""
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    port = int((query.get("port") or [str(parts.port or 5432)])[0])
    host = (query.get("host") or [parts.hostname or "127.0.0.1"])[0]
    if host.startswith("/"):
        return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
    return await asyncio.open_connection(host, port)


def through(database_url: str, relay: Relay) -> str:
    """The same database and role, over TCP to the relay."""
    parts = urlsplit(database_url)
    userinfo = parts.netloc.rpartition("@")[0]
    return parts._replace(netloc=f"{userinfo}@127.0.0.1:{relay.port}", query="").geturl()


@contextlib.asynccontextmanager
async def web_through(relay: Relay, database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        temporal_address=f"127.0.0.1:{free_port()}",  # none: pages work without Temporal
        database_url=through(database_url, relay),
        secret_key=SECRET,
        public_url=f"http://127.0.0.1:{port}",
        web_host="127.0.0.1",
        web_port=port,
        web_token=TOKEN,
        web_db_timeout=BOUND,
    )
    stop = asyncio.Event()
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop, started=started))
    try:
        yield await asyncio.wait_for(started, 60)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def timed(call: Any) -> tuple[httpx.Response, float]:
    loop = asyncio.get_running_loop()
    began = loop.time()
    response = await call
    return response, loop.time() - began


async def test_a_hung_database_is_a_503_within_the_bound_and_the_web_recovers(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with (
        Relay(database_url) as relay,
        web_through(relay, database_url, tmp_path) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as http,
    ):
        assert (await http.get("/subprocessors.json")).status_code == 200
        relay.hang()
        json_answer, took = await timed(http.get("/subprocessors.json"))
        assert json_answer.status_code == 503, json_answer.text
        assert took < BOUND + SLACK, took
        assert "database" in json_answer.json()["error"]
        assert int(json_answer.headers["retry-after"]) > 0
        # Many at once (more than the pool holds): each is answered within the bound.
        api = {"Authorization": f"Bearer {TOKEN}"}
        calls = [http.get("/subprocessors") for _ in range(12)]
        calls += [http.get("/", headers=api), http.get("/api/notices", headers=api)]
        calls += [
            http.post("/subprocessors/subscribe", data={"email": "x@example.com"}),
            http.get("/subprocessors.json"),
        ]
        answers = await asyncio.gather(*(timed(call) for call in calls))
        for answer, took in answers:
            assert took < BOUND + SLACK, (answer.request.url, took)
            assert answer.status_code in (400, 403, 503), (answer.request.url, answer.text)
        pages = [a for a, _ in answers if a.request.url.path == "/subprocessors"]
        assert all(a.status_code == 503 for a in pages)
        assert "database is not answering" in pages[0].text and "Retry-After" in pages[0].headers
        assert (await http.get("/healthz")).status_code == 503
        relay.resume()
        deadline = asyncio.get_running_loop().time() + 30
        while (again := await http.get("/subprocessors.json")).status_code != 200:
            assert asyncio.get_running_loop().time() < deadline, again.text
            await asyncio.sleep(0.5)
        assert again.json() is not None
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Traceback" not in text
