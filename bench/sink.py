"""A counting SMTP sink in its own process: records each accepted message's Message-ID.

python bench/sink.py PORT OUT_FILE [PORT OUT_FILE ...]

Each port writes the Message-IDs it accepts to its own file (one a line); all ports are served by
this one process, so several ports cost no more sink capacity than one (bench/notify.py gives each
worker its own port to see which worker sent what).
"""

from __future__ import annotations

import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.MULTILINE | re.IGNORECASE)


class Counting:
    def __init__(self, out: Path) -> None:
        self.out = out.open("ab", buffering=0)
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        found = MESSAGE_ID.search(envelope.original_content or b"")
        with self.lock:
            self.out.write((found.group(1) if found else b"-") + b"\n")
        return "250 OK"


def main() -> None:
    pairs = sys.argv[1:]
    if not pairs or len(pairs) % 2:
        sys.exit("usage: sink.py PORT OUT_FILE [PORT OUT_FILE ...]")
    controllers = [
        Controller(Counting(Path(out)), hostname="127.0.0.1", port=int(port))
        for port, out in zip(pairs[::2], pairs[1::2], strict=True)
    ]
    for controller in controllers:
        controller.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    for controller in controllers:
        controller.stop()


if __name__ == "__main__":
    main()
