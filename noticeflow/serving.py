"""Serving an ASGI app with uvicorn inside our own event loop: the web and the codec server.

uvicorn's server is used without its own signal handlers (the caller owns SIGINT/SIGTERM and says
when to stop), and a port it cannot bind becomes an ``OSError`` instead of uvicorn's process exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any


def quiet_server(config: Any) -> Any:
    """A uvicorn server that installs no signal handlers."""
    import uvicorn

    class Quiet(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:  # our caller owns SIGINT/SIGTERM
            yield

    return Quiet(config)


async def serve_until(
    config: Any,
    stop: asyncio.Event,
    started: asyncio.Future[str] | None,
    what: str,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve ``config`` until ``stop``. ``started`` gets ``http://host:port`` once it listens, or
    the reason it could not (``what`` names the server in that reason); ``on_listening`` is called
    then too."""
    server = quiet_server(config)

    async def watch() -> None:
        await stop.wait()
        server.should_exit = True

    async def serve_or_raise() -> None:
        try:
            await server.serve()
        except SystemExit as exit_:  # uvicorn exits the process when it cannot bind
            cause = exit_.__context__  # the OSError from create_server
            raise OSError(str(cause) if cause else f"the {what} did not start") from None

    watcher = asyncio.create_task(watch())
    serving = asyncio.create_task(serve_or_raise())
    try:
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if started is not None and not started.done():
            if server.started:
                bound = server.servers[0].sockets[0].getsockname()[1]
                host = str(config.host)
                started.set_result(f"http://{f'[{host}]' if ':' in host else host}:{bound}")
            else:
                failed = serving.exception() if serving.done() and not serving.cancelled() else None
                started.set_exception(failed or OSError(f"the {what} did not start"))
        if server.started and on_listening is not None:
            on_listening()
        await serving
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
