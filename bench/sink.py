"""A counting SMTP sink in its own process: records each accepted message's Message-ID.

python bench/sink.py PORT OUT_FILE
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
    port, out = int(sys.argv[1]), Path(sys.argv[2])
    controller = Controller(Counting(out), hostname="127.0.0.1", port=port)
    controller.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    controller.stop()


if __name__ == "__main__":
    main()
