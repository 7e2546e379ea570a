"""Mail to one customer's contacts through the delivery ledger.

The ledger row is written *before* the SMTP conversation (status ``sending``) and finished after it,
so a retried activity never mails a contact twice unless the earlier outcome is unknown; then the
Message-ID is the same and receivers can de-duplicate. The ledger is read and written in bulk, a
batch of customers at a time (see :meth:`Mailer.mail_many`).

Nothing wedges (rule 14): a message that cannot be rendered or built, or an address no server can
take, is a permanent failure of that one contact, recorded with the reason; a contact that only
gets temporary (4xx) replies is retried a few times here, then by the activity's retries, and
recorded as failed once its first attempt is older than ``give_up_after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from noticeflow.cancelling import finish_despite_cancel
from noticeflow.crypto import CustomerKey, Field
from noticeflow.domain.notice import NoticeSpec
from noticeflow.mail import (
    GIVE_UP_AFTER,
    SMTP_TEXT_FIELD,
    CalendarPart,
    MailRenderer,
    SendStatus,
    SmtpReply,
    SmtpResult,
    SmtpSession,
    SmtpTarget,
    SmtpUnavailable,
    TemporarySmtpError,
    build_message,
    message_id,
    scrub,
    stored_reply,
)


@dataclass(frozen=True)
class ContactOutcome:
    position: int
    message_id: str
    status: str
    reply: SmtpReply  # its text in clear, in memory only: stored sealed, never logged
    at: datetime
    text_sha256: str | None = None  # the version of the notice text that message carried


@dataclass(frozen=True)
class Recipient:
    customer_id: str
    name: str
    timezone: str
    contacts: list[tuple[int, str]]  # (position, address) — plaintext, in memory only
    key: CustomerKey  # addresses and replies are stored sealed, ledger rows by blind index
    language: str = "en"  # BCP 47 tag: the language of the customer's mail (domain/language.py)


log = structlog.get_logger(__name__)
# Open SMTP sessions handed back for reuse inside Mailer.reusing_sessions() (None: not reusing).
_IDLE_SESSIONS: contextvars.ContextVar[list[SmtpSession] | None] = contextvars.ContextVar(
    "idle_smtp_sessions", default=None
)


def utcnow() -> datetime:
    return datetime.now(UTC)


class RateLimiter:
    """At most ``rate`` messages a second across every connection of this worker (token bucket)."""

    def __init__(self, rate: float | None, burst: int = 10) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.rate:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)


# Reserve the next `$2` seconds of the relay's time; how long until they begin (0 or more).
# A relay booked more than PACE_HORIZON ahead (a mistaken rate since corrected, a clock step) is
# taken back to it: the row heals by itself instead of holding every worker for years.
PACE_HORIZON = 600  # seconds
RESERVE_PACE = f"""
INSERT INTO relay_pace AS pace (relay, next_at)
VALUES ($1, clock_timestamp() + make_interval(secs => $2::float8))
ON CONFLICT (relay) DO UPDATE
    SET next_at = least(
            greatest(pace.next_at, clock_timestamp()),
            clock_timestamp() + interval '{PACE_HORIZON} seconds'
        ) + make_interval(secs => $2::float8)
RETURNING greatest(0, extract(epoch FROM pace.next_at - clock_timestamp())::float8 - $2::float8)
"""
PACE_WARN_AFTER = 30.0  # seconds a worker is told to wait for the relay before it says so


class RelayPace:
    """At most ``rate`` messages a second to one relay, across every worker (the relay's limit,
    NOTICEFLOW_SMTP_RELAY_RATE).

    A worker reserves the next few slots of the relay's time in PostgreSQL (relay_pace, one
    statement): ``chunk`` messages' worth (about its connections), moving the relay's ``next_at``
    on by chunk/rate, and sends them 1/rate apart from the start it was given. Reservations are
    small so that workers interleave: each gets a share of the relay whatever the others do, and
    the total never passes the rate. A slot not used by the time it has passed by a chunk's span
    is dropped (spending it late would crowd the slots reserved after it)."""

    def __init__(self, relay: str, rate: float | None, chunk: int = 4) -> None:
        self.relay = relay
        self.rate = rate
        # At most half a second of the relay's time in one reservation (a slow relay rate).
        self.size = max(1, min(chunk, math.floor(rate / 2))) if rate else 0
        self._slots: deque[float] = deque()  # monotonic instants, one message each
        self._lock = asyncio.Lock()

    async def wait(self, pool: asyncpg.Pool) -> None:
        if not self.rate:
            return
        async with self._lock:
            now = time.monotonic()
            while self._slots and self._slots[0] < now - self.size / self.rate:
                self._slots.popleft()
            if not self._slots:
                delay = float(await pool.fetchval(RESERVE_PACE, self.relay, self.size / self.rate))
                if delay > PACE_WARN_AFTER:  # many workers on a slow relay, or a rate too low
                    log.warning(
                        "waiting for the relay's pace",
                        relay=self.relay,
                        seconds=round(delay),
                        relay_rate=self.rate,
                    )
                start = time.monotonic() + delay
                self._slots.extend(start + i / self.rate for i in range(self.size))
            at = self._slots.popleft()
        pause = at - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)


@dataclass(frozen=True)
class MailJob:
    """One customer to mail, with the template context for that customer."""

    recipient: Recipient
    context: dict[str, Any]


@dataclass(frozen=True)
class _Planned:
    """One contact's message, decided before any mail of the batch is sent."""

    customer_id: str
    position: int
    address: str
    ref: str  # the ledger key: blind index of the address (as the row was first written)
    msg_id: str  # the ledger row's own (a row written earlier keeps the id it was written with)
    content: tuple[str, str, str]  # subject, text, html
    text_sha256: str | None
    problem: SmtpReply | None  # why this message cannot be built (rendering failed): unsent
    first_attempt_at: datetime  # from the ledger: when this contact was first tried
    attempts: int  # the ledger's count, this one included
    deferred_before: bool  # an earlier run got only 4xx replies for it (not merely marked it)
    reply_to: str | None = None  # the customer's reply address for this notice (docs/replies.md)
    calendar: CalendarPart | None = None  # the deadline as an iCalendar event (notice mails)


@dataclass(frozen=True)
class _Finished:
    planned: _Planned
    status: str  # accepted | failed (5xx, unbuildable, gave up) | deferred (4xx: retried later)
    reply: SmtpReply
    at: datetime


SMTP_TRIES = 3  # per message, for 4xx replies and dropped connections, before the activity retries
SMTP_BACKOFF = 0.5  # seconds before the second try; doubles each try ...
SMTP_BACKOFF_MAX = 4.0  # ... up to this
# This many messages in a row deferred (no reply but 4xx in between) means the server defers
# everything, not one address: stop this run (the activity retries) rather than walk the audience.
DEFERRED_IN_A_ROW = 20
# Outcomes are written to the ledger in one statement per FLUSH_EVERY of them, or as soon as the
# oldest unwritten one is FLUSH_AFTER seconds old: a crash leaves at most that much mail in the
# "outcome unknown" state (mailed again, under the same Message-ID), whatever the sending rate.
FLUSH_EVERY = 25
FLUSH_AFTER = 0.25
# Seconds a message already in conversation with the server gets to end when the send is
# cancelled (its outcome decides whether its customer was reached).
IN_FLIGHT_GRACE = 10.0


class Mailer:
    def __init__(
        self,
        target: SmtpTarget,
        mail_from: str,
        renderer: MailRenderer,
        concurrency: int = 4,
        rate: float | None = None,
        give_up_after: timedelta = GIVE_UP_AFTER,
        relay_rate: float | None = None,
        reply_to: Callable[[str, str], str] | None = None,
        pipelining: bool = True,  # NOTICEFLOW_SMTP_PIPELINING
    ) -> None:
        self.target = target
        self.pipelining = pipelining
        # (notice id, customer id) -> the Reply-To address (one HMAC); None: no Reply-To.
        self.reply_to = reply_to
        self.mail_from = mail_from
        self.renderer = renderer
        self.concurrency = concurrency
        self.limiter = RateLimiter(rate)  # this worker's own ceiling
        # The relay's limit, every worker's: reservations of one slot per connection.
        self.pace = RelayPace(f"{target.hostname}:{target.port}", relay_rate, concurrency)
        self.give_up_after = give_up_after

    def session(self) -> SmtpSession:
        return SmtpSession(self.target, self.pipelining)

    @contextlib.asynccontextmanager
    async def reusing_sessions(self) -> AsyncIterator[None]:
        """Within this block, mail calls (also from tasks started inside it) hand their SMTP
        connections back for the next call instead of closing them; all are closed at its end.
        Many small mailings (a round's confirmations) then cost no connection each."""
        idle: list[SmtpSession] = []
        token = _IDLE_SESSIONS.set(idle)
        try:
            yield
        finally:
            _IDLE_SESSIONS.reset(token)
            for session in idle:
                with contextlib.suppress(Exception):
                    await session.__aexit__(None, None, None)

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[SmtpSession]:
        idle = _IDLE_SESSIONS.get()
        if idle is None:
            async with self.session() as session:
                yield session
            return
        session = idle.pop() if idle else self.session()
        try:
            yield session
        except BaseException:
            session._drop()  # in an unknown state: not for the next call
            raise
        idle.append(session)

    async def mail_customer(
        self,
        pool: asyncpg.Pool,
        notice_id: str,
        recipient: Recipient,
        kind: str,
        template: str,
        context: dict[str, Any],
    ) -> list[ContactOutcome]:
        """Mail every contact of one customer; a 5xx for one contact does not stop the others.
        Raises MailingDeferred (after the others) while a contact still gets 4xx replies."""
        outcomes = await self.mail_many(
            pool, notice_id, kind, template, [MailJob(recipient, context)]
        )
        return outcomes.get(recipient.customer_id, [])

    async def mail_many(
        self,
        pool: asyncpg.Pool,
        notice_id: str,
        kind: str,
        template: str,
        jobs: Sequence[MailJob],
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, list[ContactOutcome]]:
        """Mail every contact of many customers through the ledger, over a few SMTP connections.

        The ledger is read once and every contact still to mail is marked ``sending`` in one
        statement *before* the first message goes out; outcomes are written back in groups
        (FLUSH_EVERY, FLUSH_AFTER). A contact whose row says accepted or failed is never mailed
        again; one left at ``sending`` (the outcome is unknown: a crash came between the server's
        reply and the ledger write) is mailed again with the same Message-ID. Returns outcomes
        per customer, in contact order.

        A message that cannot be rendered or built fails for good (its contact only). A contact
        that keeps getting 4xx replies is ``deferred``: once everything else was tried and
        written, MailingDeferred (a TemporarySmtpError) names those customers; a later call
        tries them again, and records a contact as failed once its first attempt is older than
        ``give_up_after``. When the server cannot be reached, or defers everything, this raises
        TemporarySmtpError part-way: whatever was not tried stays ``sending`` for the retry.
        """
        now = utcnow()
        ledger = await _read_ledger(
            pool, notice_id, kind, [job.recipient.customer_id for job in jobs]
        )
        outcomes, planned = self._plan(notice_id, kind, template, jobs, ledger, now)
        keys = {job.recipient.customer_id: job.recipient.key for job in jobs}
        await _mark_sending(pool, notice_id, kind, planned, keys, now)
        finished: list[_Finished] = []
        try:
            await self._send(pool, notice_id, kind, planned, keys, progress, finished)
        except asyncio.CancelledError:
            raise MailingInterrupted(_by_customer(outcomes, finished)) from None
        deferred = {
            item.planned.customer_id: item.reply.summary
            for item in finished
            if item.status == "deferred"
        }
        if deferred:
            raise MailingDeferred(_by_customer(outcomes, finished), deferred)
        return _by_customer(outcomes, finished)

    def _plan(
        self,
        notice_id: str,
        kind: str,
        template: str,
        jobs: Sequence[MailJob],
        ledger: dict[tuple[str, str], asyncpg.Record],
        now: datetime,
    ) -> tuple[dict[str, dict[int, ContactOutcome]], list[_Planned]]:
        """Render each customer's mail once; split its contacts into those the ledger already
        finished (their outcomes) and those to mail now. A customer whose mail cannot be
        rendered has its contacts planned with the reason (they fail without being sent)."""
        outcomes: dict[str, dict[int, ContactOutcome]] = {}
        planned: list[_Planned] = []
        hashes: dict[int, str | None] = {}  # one hash per spec object, not per customer
        in_ledger = {customer_id for customer_id, _ref in ledger}  # (most have no row yet)
        render = self.renderer.batch().render  # once per distinct terms, not per customer
        for job in jobs:
            recipient = job.recipient
            context = {
                **job.context,
                "customer_name": recipient.name,
                "customer_id": recipient.customer_id,
            }
            text_sha256 = _text_sha256(job.context, hashes)
            content: tuple[str, str, str] = ("", "", "")
            problem = None
            try:
                content = render(template, context)
            except Exception as error:  # a template or its data: fails the same way every time
                problem = _not_built(error)
                log.warning(
                    "mail not rendered",
                    customer_id=recipient.customer_id,
                    error=type(error).__name__,
                )
            seen: set[str] = set()
            key = recipient.key
            reply_to = self.reply_to(notice_id, recipient.customer_id) if self.reply_to else None
            # Built once per deadline of the batch (noticeflow/calendar.py); the UID is its own.
            shared_calendar = job.context.get("calendar")
            calendar = (
                shared_calendar.for_customer(notice_id, recipient.key)
                if shared_calendar is not None
                else None
            )
            for position, address in recipient.contacts:
                ref = key.index(address)
                if ref in seen:  # the same mailbox listed twice: one ledger row, one mail
                    continue
                seen.add(ref)
                done = ledger.get((recipient.customer_id, ref))
                if done is None and recipient.customer_id in in_ledger:  # a row written before
                    # the per-customer subkeys: that row
                    done = ledger.get((recipient.customer_id, key.legacy_index(address)))
                if done is not None:  # one ledger row, one Message-ID: the one it was written with
                    ref, msg_id = done["contact_ref"], done["message_id"]
                else:
                    msg_id = message_id(key, notice_id, address, kind, self.mail_from)
                if done is not None and done["status"] in FINAL:
                    outcomes.setdefault(recipient.customer_id, {})[position] = ContactOutcome(
                        position, msg_id, done["status"], stored_reply(done, key),
                        done["finished_at"], done["text_sha256"],
                    )  # fmt: skip
                    continue
                planned.append(_Planned(
                    recipient.customer_id, position, address, ref, msg_id, content, text_sha256,
                    problem,
                    done["first_attempt_at"] if done is not None else now,
                    done["attempts"] + 1 if done is not None else 1,
                    done is not None and done["status"] == "deferred", reply_to, calendar,
                ))  # fmt: skip
        return outcomes, planned

    async def _send(
        self,
        pool: asyncpg.Pool,
        notice_id: str,
        kind: str,
        planned: list[_Planned],
        keys: dict[str, CustomerKey],
        progress: Callable[[int], None] | None,
        finished: list[_Finished],
    ) -> None:
        """Send everything planned; ``finished`` collects the outcomes (the caller keeps them,
        so that a cancelled send still knows what went out)."""
        if not planned:
            return
        queue = deque(planned)
        writer = _OutcomeWriter(pool, notice_id, kind, keys)
        halt = asyncio.Event()  # one connection found the server unusable: the others stop too
        in_a_row = 0

        def done(outcome: _Finished) -> None:
            finished.append(outcome)
            writer.add(outcome)

        async def connection_worker() -> None:
            nonlocal in_a_row
            try:
                async with self._session() as session:
                    while queue and not halt.is_set():
                        item = queue.popleft()
                        outcome = await self._send_one(session, item, pool, done)
                        done(outcome)
                        if progress is not None:
                            progress(len(finished))
                        if writer.due():
                            await writer.flush()
                        in_a_row = in_a_row + 1 if outcome.status == "deferred" else 0
                        if in_a_row >= DEFERRED_IN_A_ROW:
                            raise TemporarySmtpError(
                                f"the mail server deferred {in_a_row} messages in a row, the last"
                                f" with {outcome.reply.summary}"
                            )
            except BaseException:
                halt.set()
                raise

        connections = min(self.concurrency, len(planned))
        try:
            errors = await asyncio.gather(
                *(connection_worker() for _ in range(connections)), return_exceptions=True
            )
        finally:  # cancelled too (worker shutdown): what is known must reach the ledger
            await writer.flush()
        for error in errors:
            if isinstance(error, BaseException):
                raise error

    async def _send_one(
        self,
        session: SmtpSession,
        item: _Planned,
        pool: asyncpg.Pool,
        done: Callable[[_Finished], None],
    ) -> _Finished:
        """One message, with a few tries (bounded backoff) for 4xx replies and dropped
        connections. Raises SmtpUnavailable when the server stays unreachable.

        A cancel (a cancelled notice, a worker shutting down) stops the waits and backoffs at
        once, but not a message in conversation with the server: it may be accepted all the
        same, and its customer must then count as reached (a cancellation mail must find it).
        It gets up to IN_FLIGHT_GRACE to end; its outcome is ``done`` (kept, and written to the
        ledger), then the cancel goes on."""
        if item.problem is not None:
            return _Finished(item, SendStatus.failed.value, item.problem, utcnow())
        subject, text, html = item.content
        try:
            mail = build_message(
                mail_from=self.mail_from,
                to=item.address,
                subject=subject,
                text=text,
                html=html,
                msg_id=item.msg_id,
                date=utcnow(),
                reply_to=item.reply_to,
                calendar=item.calendar,
            )
        except Exception as error:  # e.g. a line break in a header: fails the same way every time
            log.warning(
                "mail not built",
                customer_id=item.customer_id,
                contact=item.position,
                error=type(error).__name__,
            )
            return _Finished(item, SendStatus.failed.value, _not_built(error, item), utcnow())
        delay = SMTP_BACKOFF
        for attempt in range(1, SMTP_TRIES + 1):
            await self.limiter.wait()
            await self.pace.wait(pool)
            try:
                result = await finish_despite_cancel(
                    session.send(mail),
                    IN_FLIGHT_GRACE,
                    then=lambda result: done(self._outcome(item, result)),
                )
            except TemporarySmtpError as error:
                reply = (error.reply or SmtpReply(None, None, str(error))).scrubbed(
                    item.address, item.msg_id
                )
                # Ids, codes and counts only: a reply's text may echo the address or a name, even
                # scrubbed; it goes to the ledger, sealed, never to a log (rule 13).
                log.warning(
                    "mail deferred",
                    customer_id=item.customer_id,
                    contact=item.position,
                    attempt=attempt,
                    smtp_code=reply.code,
                    smtp_status=reply.status,
                )
                unavailable = isinstance(error, SmtpUnavailable)
                if not unavailable and self._given_up(item):
                    return _Finished(
                        item, SendStatus.failed.value, self._gave_up(item, reply), utcnow()
                    )
                if attempt == SMTP_TRIES:
                    if unavailable:
                        raise
                    return _Finished(item, "deferred", reply, utcnow())
                await asyncio.sleep(delay)
                delay = min(delay * 2, SMTP_BACKOFF_MAX)
                continue
            return self._outcome(item, result)
        raise AssertionError("unreachable")

    def _outcome(self, item: _Planned, result: SmtpResult) -> _Finished:
        """A reply to a whole conversation: accepted, or refused for good."""
        reply = result.reply.scrubbed(item.address, item.msg_id)
        if result.status is not SendStatus.accepted:
            log.info(
                "mail refused",
                customer_id=item.customer_id,
                contact=item.position,
                smtp_code=reply.code,
                smtp_status=reply.status,
            )
        return _Finished(item, result.status.value, reply, utcnow())

    def _given_up(self, item: _Planned) -> bool:
        """Only temporary replies for longer than ``give_up_after`` since the first attempt, and
        in more than one run: a contact whose earlier runs never reached the server (it was
        unreachable: SmtpUnavailable) is not given up on its first real reply."""
        return item.deferred_before and utcnow() - item.first_attempt_at >= self.give_up_after

    def _gave_up(self, item: _Planned, reply: SmtpReply) -> SmtpReply:
        """Failed for good: the last reply's code and status, and the text says why."""
        log.warning(
            "mail given up: only temporary replies",
            customer_id=item.customer_id,
            contact=item.position,
            attempts=item.attempts,
            smtp_code=reply.code,
            smtp_status=reply.status,
        )
        span = _span(utcnow() - item.first_attempt_at)
        text = f"gave up after {item.attempts} attempts over {span}: last reply {reply.readable()}"
        return SmtpReply(reply.code, reply.status, text)


FINAL = {SendStatus.accepted.value, SendStatus.failed.value}


class _OutcomeWriter:
    """Collects outcomes and writes them to the ledger in groups (see FLUSH_EVERY)."""

    def __init__(
        self, pool: asyncpg.Pool, notice_id: str, kind: str, keys: dict[str, CustomerKey]
    ) -> None:
        self.pool, self.notice_id, self.kind, self.keys = pool, notice_id, kind, keys
        self._unwritten: list[_Finished] = []
        self._oldest = 0.0

    def add(self, outcome: _Finished) -> None:
        if not self._unwritten:
            self._oldest = time.monotonic()
        self._unwritten.append(outcome)

    def due(self) -> bool:
        return len(self._unwritten) >= FLUSH_EVERY or (
            bool(self._unwritten) and time.monotonic() - self._oldest >= FLUSH_AFTER
        )

    async def flush(self) -> None:
        group, self._unwritten = self._unwritten, []  # taken before the await: no double write
        await _write_outcomes(self.pool, self.notice_id, self.kind, group, self.keys)


class MailingDeferred(TemporarySmtpError):
    """Some contacts only got temporary (4xx) replies; everything else was tried and written.

    ``outcomes`` holds every known outcome (a deferred contact has none yet); ``deferred`` maps
    each customer with a deferred contact to the last reply's code and status (no text: this
    travels to logs and Temporal). Those customers are not settled: the caller keeps them
    pending and tries again later (until the contacts are given up).
    """

    def __init__(self, outcomes: dict[str, list[ContactOutcome]], deferred: dict[str, str]) -> None:
        last = next(reversed(deferred.values()))
        super().__init__(f"{len(deferred)} customer(s) deferred, the last with {last}")
        self.outcomes = outcomes
        self.deferred = deferred


class MailingInterrupted(asyncio.CancelledError):
    """Mailing was cancelled part-way (the notice was cancelled, the worker is stopping).

    ``outcomes`` holds every outcome known when it stopped (all of them already in the ledger),
    so the caller can record the customers who were reached before it lets the cancel through.
    """

    def __init__(self, outcomes: dict[str, list[ContactOutcome]]) -> None:
        super().__init__("mailing interrupted")
        self.outcomes = outcomes


def _by_customer(
    known: dict[str, dict[int, ContactOutcome]], finished: list[_Finished]
) -> dict[str, list[ContactOutcome]]:
    """Outcomes per customer in contact order: those the ledger already had, then this run's
    (a deferred contact has no outcome yet)."""
    merged = {customer_id: dict(by_position) for customer_id, by_position in known.items()}
    for item in finished:
        if item.status == "deferred":
            continue
        planned = item.planned
        merged.setdefault(planned.customer_id, {})[planned.position] = ContactOutcome(
            planned.position, planned.msg_id, item.status, item.reply, item.at,
            planned.text_sha256,
        )  # fmt: skip
    return {
        customer_id: [by_position[p] for p in sorted(by_position)]
        for customer_id, by_position in merged.items()
    }


async def _read_ledger(
    pool: asyncpg.Pool, notice_id: str, kind: str, customer_ids: list[str]
) -> dict[tuple[str, str], asyncpg.Record]:
    rows = await pool.fetch(
        "SELECT customer_id, contact_ref, message_id, status, smtp_code, smtp_status, smtp_text,"
        " smtp_reply, finished_at, attempts, first_attempt_at, text_sha256 FROM deliveries"
        " WHERE notice_id = $1 AND kind = $2 AND customer_id = ANY($3::text[])",
        notice_id,
        kind,
        customer_ids,
    )
    return {(row["customer_id"], row["contact_ref"]): row for row in rows}


async def _mark_sending(
    pool: asyncpg.Pool,
    notice_id: str,
    kind: str,
    planned: list[_Planned],
    keys: dict[str, CustomerKey],
    now: datetime,
) -> None:
    """Every contact about to be mailed gets its ledger row (or another attempt) first, with the
    hash of the notice text this attempt carries. A row that exists keeps its Message-ID."""
    if not planned:
        return
    await pool.execute(
        "INSERT INTO deliveries (notice_id, customer_id, contact_ref, kind, message_id, status,"
        " first_attempt_at, email, text_sha256)"
        " SELECT $1, u.customer_id, u.ref, $2, u.message_id, 'sending', $3, u.email, u.text_sha256"
        " FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[])"
        "   AS u(customer_id, ref, message_id, email, text_sha256)"
        " ON CONFLICT (notice_id, customer_id, contact_ref, kind)"
        " DO UPDATE SET attempts = deliveries.attempts + 1, status = 'sending',"
        "   text_sha256 = EXCLUDED.text_sha256",
        notice_id,
        kind,
        now,
        [item.customer_id for item in planned],
        [item.ref for item in planned],
        [item.msg_id for item in planned],
        [keys[item.customer_id].seal(Field.DELIVERY_EMAIL, item.address) for item in planned],
        [item.text_sha256 for item in planned],
    )


async def _write_outcomes(
    pool: asyncpg.Pool,
    notice_id: str,
    kind: str,
    finished: list[_Finished],
    keys: dict[str, CustomerKey],
) -> None:
    """The replies as code, enhanced status and the text sealed with the customer's key; the
    unsealed ``smtp_reply`` of rows written before (migration 014) is cleared as they are."""
    if not finished:
        return
    await pool.execute(
        "UPDATE deliveries d SET status = u.status, smtp_code = u.code, smtp_status = u.smtp_status,"
        " smtp_text = u.text, smtp_reply = NULL,"
        " finished_at = CASE WHEN u.status = 'deferred' THEN NULL ELSE u.at END"
        " FROM unnest($3::text[], $4::text[], $5::text[], $6::int[], $7::text[], $8::text[],"
        "   $9::timestamptz[]) AS u(customer_id, ref, status, code, smtp_status, text, at)"
        " WHERE d.notice_id = $1 AND d.kind = $2 AND d.customer_id = u.customer_id"
        "   AND d.contact_ref = u.ref"
        # The rows by key: a new notice's ledger is not in the planner's statistics yet, and
        # without this it hashed the whole ledger of the notice for every 25 outcomes (24 ms
        # per flush at 20,000 customers, 1 ms with it).
        "   AND d.customer_id = ANY($3::text[])",
        notice_id,
        kind,
        [item.planned.customer_id for item in finished],
        [item.planned.ref for item in finished],
        [item.status for item in finished],
        [item.reply.code for item in finished],
        [item.reply.status for item in finished],
        [
            keys[item.planned.customer_id].seal(SMTP_TEXT_FIELD, item.reply.text)
            for item in finished
        ],
        [item.at for item in finished],
    )


def accepted_at(outcomes: list[ContactOutcome]) -> datetime | None:
    """When the first contact's server accepted the message: the customer's clock starts here."""
    times = [o.at for o in outcomes if o.status == SendStatus.accepted.value]
    return min(times) if times else None


def text_version(outcomes: list[ContactOutcome]) -> str | None:
    """The notice text version a customer received: that of the first accepted message (else of
    the last one tried) — a postponement changes the text, so resends may carry another."""
    accepted = [o for o in outcomes if o.status == SendStatus.accepted.value and o.text_sha256]
    if accepted:
        return min(accepted, key=lambda o: o.at).text_sha256
    tried = [o.text_sha256 for o in outcomes if o.text_sha256]
    return tried[-1] if tried else None


def _text_sha256(context: dict[str, Any], cache: dict[int, str | None]) -> str | None:
    """The hash of the notice text behind a mail: the one its context shows, else that of the
    spec it was rendered from (update mails)."""
    shown = context.get("text_sha256")
    if isinstance(shown, str):
        return shown
    spec = context.get("spec")
    if not isinstance(spec, NoticeSpec):
        return None
    if id(spec) not in cache:
        cache[id(spec)] = spec.text_sha256()
    return cache[id(spec)]


def _not_built(error: Exception, item: _Planned | None = None) -> SmtpReply:
    detail = scrub(f"{type(error).__name__}: {error}", item.address if item else "", limit=300)
    return SmtpReply(None, None, f"not sent: could not build the message: {detail}")


def _span(elapsed: timedelta) -> str:
    seconds = elapsed.total_seconds()
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    if seconds >= 120:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} seconds"
