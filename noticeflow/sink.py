"""The local SMTP sink used by `noticeflow up` and the tests: a real aiosmtpd server.

It keeps every accepted message as an .eml file in ``mail_dir``. Recipients at the reserved
``.invalid`` top-level domain are refused with a permanent 550, so undelivered customers can be
demonstrated and tested without a real bounce; a recipient whose local part is ``greylist-N`` is
refused with a temporary 451 its first N times, like a greylisting server, and one whose local part
starts with ``tempfail-`` always gets a 451 (a contact that never gets the mail, never bounces).
Like a modern server it accepts internationalised (non-ASCII) addresses (SMTPUTF8) unless told not to.
Mail holds personal data: the mail dir is 0700 and every .eml file 0600.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
from collections import Counter
from collections.abc import Collection
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

# aiosmtpd logs every command line it reads (RCPT TO:<address>, the headers) at INFO and DEBUG:
# the sink stands in for a relay inside the product, and its log must not carry addresses.
logging.getLogger("mail.log").setLevel(logging.WARNING)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_ports(count: int, avoid: Collection[int] = ()) -> list[int]:
    """``count`` distinct free ports, none in ``avoid``, all held at once while chosen.

    For the Temporal dev server: left to itself it picks its HTTP API and metrics ports at random
    before it binds its gRPC port, and now and then picks the gRPC port we chose for it (a fault
    run's dev server once died of exactly that: "bind: address already in use")."""
    probes: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            probe = socket.socket()
            probes.append(probe)
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
            if port not in avoid:
                ports.append(port)
        return ports
    finally:
        for probe in probes:
            probe.close()


def dev_server_ports() -> tuple[int, list[str]]:
    """For ``WorkflowEnvironment.start_local``: a gRPC port, and the dev server arguments that
    give its HTTP API and metrics ports, all distinct (see :func:`free_ports`)."""
    port, http_port, metrics_port = free_ports(3)
    return port, ["--http-port", str(http_port), "--metrics-port", str(metrics_port)]


GREYLIST = re.compile(r"^<?greylist-(\d+)@", re.IGNORECASE)
TEMPFAIL = re.compile(r"^<?tempfail-[^@]*@", re.IGNORECASE)


class MailDirHandler:
    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir
        self.mail_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.mail_dir.stat().st_mode & 0o077:
            self.mail_dir.chmod(0o700)
        self._lock = threading.Lock()
        self._count = len(list(self.mail_dir.glob("*.eml")))
        self._greylisted: Counter[str] = Counter()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.lower().rstrip(">").endswith(".invalid"):
            # As real relays do, the reply repeats the address: it must never be kept in clear.
            return f"550 5.1.1 <{address}>: Recipient address rejected: mailbox unavailable"
        if TEMPFAIL.match(address):
            return "451 4.3.0 temporary failure, please try again later"
        greylist = GREYLIST.match(address)
        if greylist and self._greylisted[address.lower()] < int(greylist.group(1)):
            self._greylisted[address.lower()] += 1
            return "451 4.7.1 greylisted, please try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        digest = hashlib.sha256(content).hexdigest()[:16]
        with self._lock:
            self._count += 1
            number = self._count
        path = self.mail_dir / f"{number:07d}-{digest}.eml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        return f"250 2.0.0 Ok: queued as {digest}"


class PipeliningHandler(MailDirHandler):
    """The same, advertising PIPELINING (RFC 2920) as most relays do (aiosmtpd reads pipelined
    commands in order, but does not say so by itself)."""

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


class SmtpSink:
    def __init__(
        self,
        mail_dir: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        smtputf8: bool = True,
        pipelining: bool | None = None,
    ) -> None:
        """``pipelining``: advertise PIPELINING (None: when NOTICEFLOW_SINK_PIPELINING=1, so a
        test run can take the mailer's pipelined path throughout)."""
        self.mail_dir = mail_dir
        self.host = host
        self.port = port or free_port()
        if pipelining is None:
            pipelining = os.environ.get("NOTICEFLOW_SINK_PIPELINING") == "1"
        self._controller = Controller(
            (PipeliningHandler if pipelining else MailDirHandler)(mail_dir),
            hostname=host,
            port=self.port,
            enable_SMTPUTF8=smtputf8,  # off: a server that refuses non-ASCII addresses
        )

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def messages(self) -> list[Message]:
        return [
            message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in sorted(self.mail_dir.glob("*.eml"))
        ]

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
