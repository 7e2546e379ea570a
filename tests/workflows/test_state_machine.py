"""Random sequences of actions on one notice, on the time-skipping server with the real worker.

A hypothesis ``RuleBasedStateMachine`` drives one notice per example through the intake of record
(``control.submit``, received "now" on the server's skipped clock, or earlier for a reply mail
classified late): valid, invalid and repeated objections, resolutions, opt-ins and revocations,
exclusions, resends, postponements, a rare cancellation, keyed repeats, erasures, the customers
file imported again, and jumps of days. After every step it checks that nothing wedges (every
receipt judged, no activity retrying, no workflow task failing: rule 14), that no customer is
switched on inside its window or undelivered (rules 4, 6), with an open timely case or an upheld
objection (rules 7, 9), or without its opt-in (rule 8). At the end it pushes the clock past every
deadline, settles what ops can settle, and expects the notice to complete.

The machine runs in a worker thread; each rule hands its coroutine to the test's event loop (where
the Temporal worker and the database pool live) and waits for it. ``test_found_sequences`` replays
the failing sequences it found, minimised, through the same rules and checks.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from temporalio.client import (
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from noticeflow import control, db, intake, repository
from noticeflow.contracts import NoticeStatus, workflow_id
from noticeflow.domain import signals
from noticeflow.domain.errors import InputError
from noticeflow.domain.notice import NoticeSpec
from noticeflow.domain.rules import Phase
from noticeflow.sink import SmtpSink
from tests import helpers
from tests.workflows.test_intake import typed_event_types
from worker.main import build_worker, make_deps

T = TypeVar("T")

SETTINGS = settings(
    max_examples=8,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # Each example takes seconds: shrink the first failure found, not every distinct one.
    report_multiple_bugs=False,
)
STEP_TIMEOUT = 240.0  # seconds of real time one rule may take before the test gives up on it
JUDGED_WITHIN = 30.0  # seconds a submitted receipt may stay pending (invariant a)
COMPLETES_WITHIN = 15.0  # seconds for a notice with nothing left to wait for to complete
MAX_ATTEMPT = 3  # no activity needs more attempts than this here (invariant b)
ANSWER_WITHIN = timedelta(seconds=10)  # for Temporal to answer a describe or a history fetch
RETRY_WATCH = 10.0  # seconds to watch an activity that failed once (its 1 s, 2 s, 4 s backoff)

RECIPIENTS = ("acme", "globex", "initech", "umbrella")  # hooli is EU: not in the audience
UNKNOWN = ("hooli", "nobody", "acmee", "initech2")  # well-formed ids, not recipients
MISTYPED = ("Globex", "acme corp")  # not ids at all
CUSTOMERS = st.sampled_from(RECIPIENTS * 3 + UNKNOWN + MISTYPED)  # mostly recipients
REASONS = st.sampled_from(
    [
        "No AI on our data",
        "No AI on our data",
        "Not without a DPIA",
        "Nein danke — 日本語 ✓\nSecond line",
        "x" * 100_000,  # the longest reason allowed: kept whole
        "No\x00thanks",  # NUL: invalid
        "",  # empty: invalid
        "   ",  # blank: invalid once stripped
        "z" * 100_001,  # one too long: invalid
    ]
)
# Payloads that cannot be valid, whoever sends them: each is a rejection with its reason.
MALFORMED = st.sampled_from(
    [
        ("object", {"customer_id": "ac\x00me", "reason": "No"}),  # NUL in the customer id
        ("object", {"customer_id": "\x00", "reason": "No"}),
        ("object", {"customer_id": "a" * 65, "reason": "No"}),
        ("object", {"customer_id": 42, "reason": "No"}),
        ("object", {"customer_id": None, "reason": "No"}),
        ("object", {}),
        ("object", {"reason": "No"}),
        ("object", {"customer_id": "acme", "reason": "No", "why": "x"}),
        ("object", {"customer_id": "acme", "reason": "No", "by": "a\nb"}),
        ("resolve_objection", {"customer_id": "acme", "outcome": "maybe", "by": "carol"}),
        ("resolve_objection", {"customer_id": "acme", "outcome": "withdrawn"}),
        ("opt_in", {"customer_id": "acme", "by": ""}),
        ("exclude", {"customer_id": "umbrella", "reason": "dead address"}),
        ("resend", {"customer_id": ""}),
        ("postpone", {"effective_at": "next tuesday", "by": "alice"}),
        ("postpone", {"effective_at": "2099-01-01T00:00:00", "by": "alice"}),  # no offset
        ("cancel", {"reason": "", "by": "alice"}),
        ("approve", {}),
    ]
)
OUTCOMES = st.sampled_from(["withdrawn", "excluded", "terminated"])
# A cancelled notice takes no new objection, opt-in or resend; a customer switched on before the
# cancel can still revoke, and ops can still close cases and settle customers.
AFTER_CANCEL = {"revoke_opt_in", "resolve_objection", "exclude"}
# Umbrella given a working address; the file imported again, with or without that fix.
ALL_FIXED = helpers.CUSTOMERS_CSV.replace("nobody@umbrella.invalid", "privacy@umbrella.example")
UMBRELLA_FIXED = "\n".join(
    line for line in ALL_FIXED.splitlines() if line.startswith(("customer_id,", "umbrella,"))
)


def without(csv: str, erased: set[str]) -> str:
    """A customers file without the rows of erased customers."""
    return "\n".join(line for line in csv.splitlines() if line.split(",", 1)[0] not in erased)


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    env: WorkflowEnvironment
    pool: asyncpg.Pool
    task_queue: str
    notices: list[str]
    owner: asyncpg.Pool  # the schema owner's: only to forget earlier examples' erasures


@dataclass(frozen=True)
class Keyed:
    """A submission that carried the sender's own idempotency key, and its first receipt."""

    action: str
    payload: dict[str, Any]
    receipt_id: str


class NoticeMachine(RuleBasedStateMachine):
    keyed = Bundle("keyed")

    def __init__(self, harness: Harness) -> None:
        super().__init__()
        self.h = harness
        self.spec: NoticeSpec | None = None
        self.sent_at: datetime | None = None
        self.erased: set[str] = set()
        self.runs: set[str] = set()
        self.activated_when_cancelled: set[str] | None = None
        self.umbrella_fixed = False
        self.healthy = False  # True once the last step and its checks passed

    # --- plumbing -------------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = STEP_TIMEOUT) -> T:
        self.healthy = False  # until the checks after this step have passed
        return asyncio.run_coroutine_threadsafe(coro, self.h.loop).result(timeout)

    @property
    def notice_id(self) -> str:
        assert self.spec is not None
        return self.spec.notice_id

    def handle(self, run_id: str | None = None) -> WorkflowHandle[Any, Any]:
        return self.h.env.client.get_workflow_handle(workflow_id(self.notice_id), run_id=run_id)

    async def _submit(
        self,
        action: str,
        payload: dict[str, Any],
        received_at: datetime | None = None,
        channel: str = "cli",
    ) -> intake.Receipt:
        env = self.h.env
        receipt, why = await control.submit(
            env.client,
            self.h.pool,
            self.notice_id,
            action,
            payload,
            channel=channel,
            task_queue=self.h.task_queue,
            wait_seconds=JUDGED_WITHIN,
            received_at=received_at or await env.get_current_time(),
        )
        # (a) every receipt is judged within a bounded wait: the notice never wedges.
        assert why is None and not receipt.pending, (
            f"{action} {short(payload)} still {receipt.status} after {JUDGED_WITHIN}s: {why}"
        )
        # (f) a rejection (or a duplicate) always says why.
        if receipt.status in {intake.REJECTED, intake.DUPLICATE}:
            assert receipt.reason and receipt.reason.strip(), f"{receipt} has no reason"
        return receipt

    def submit(
        self,
        action: str,
        payload: dict[str, Any],
        received_at: datetime | None = None,
        channel: str = "cli",
    ) -> intake.Receipt:
        return self.run(self._submit(action, payload, received_at, channel))

    def phase(self) -> Phase:
        return Phase(self.run(self.h.pool.fetchval(
            "SELECT phase FROM notices WHERE notice_id = $1", self.notice_id
        )))  # fmt: skip

    def recipient(self, customer_id: str) -> asyncpg.Record | None:
        return self.run(self.h.pool.fetchrow(
            "SELECT * FROM recipients WHERE notice_id = $1 AND customer_id = $2",
            self.notice_id, customer_id,
        ))  # fmt: skip

    def open_cases(self, customer_id: str) -> int:
        return int(self.run(self.h.pool.fetchval(
            "SELECT count(*) FROM objections WHERE notice_id = $1 AND customer_id = $2"
            " AND status = 'open'",
            self.notice_id, customer_id,
        )))  # fmt: skip

    def expect_refused_up_front(
        self, receipt: intake.Receipt, action: str, payload: dict[str, Any]
    ) -> bool:
        """Checks the outcomes every customer action shares; True when it was refused for one:
        a payload that does not validate, a cancelled notice (but for what ops and a revocation
        can still do), a customer who is not a recipient."""
        _, problem = intake.validate(action, payload)
        if problem is not None:
            assert receipt.status == intake.REJECTED, receipt
            assert str(receipt.reason).startswith(f"invalid {action} payload"), receipt
            return True
        if self.activated_when_cancelled is not None and action not in AFTER_CANCEL:
            # An erased customer's action is refused as erased first (its payload is unreadable).
            erased = payload.get("customer_id") in self.erased and "erased" in str(receipt.reason)
            assert receipt.status == intake.REJECTED, receipt
            assert "cancelled" in str(receipt.reason) or erased, receipt
            return True
        customer_id = payload["customer_id"]
        if customer_id not in RECIPIENTS:
            assert receipt.status == intake.REJECTED, receipt
            assert f"unknown customer {customer_id!r}" in str(receipt.reason), receipt
            return True
        return False

    def keyed_result(self, action: str, payload: dict[str, Any], receipt: intake.Receipt) -> Any:
        """A valid payload with the sender's key, for a repeat later (an invalid one keeps none)."""
        if payload.get("idempotency_key") and intake.validate(action, payload)[1] is None:
            return Keyed(action, payload, receipt.receipt_id)
        return multiple()

    # --- the notice ------------------------------------------------------------------------------

    @initialize(opt_in=st.booleans(), head_start=st.integers(0, 30))
    def start(self, opt_in: bool, head_start: int) -> None:
        """A notice of alice's, approved by bob and sent; then ``head_start`` days pass (so that
        twelve steps reach the effective date, 35 days on, often enough)."""
        self.run(self._start(opt_in))
        if head_start:
            self.run(self.h.env.sleep(timedelta(days=head_start)))

    async def _start(self, opt_in: bool) -> None:
        env, pool = self.h.env, self.h.pool
        now = await env.get_current_time()
        tag = uuid.uuid4().hex[:8]
        # Its own sub-processor name: the enablement records of earlier examples stay apart.
        spec = helpers.notice(
            now,
            notice_id=f"sm-{tag}",
            subprocessor=f"OpenAI, LLC ({tag})",
            opt_in=opt_in,
            effective_at=(now + timedelta(days=35)).isoformat(),  # after globex's 30 days
        )
        self.spec = spec
        self.h.notices.append(spec.notice_id)
        # Each example starts in a world where nobody was erased yet: erasure is for good, so the
        # owner (not the product: its role may only insert erasures) forgets earlier examples'
        # (their sealed data stays unreadable: new keys). Preconditions then depend on this
        # example alone, as hypothesis needs. Umbrella's address bounces again.
        async with self.h.owner.acquire() as owner:
            await owner.execute("DELETE FROM customer_erasures")
        await repository.upsert_customers(pool, helpers.customers())
        await repository.create_notice(pool, spec, "alice", now)
        await helpers.start_notice_workflow(env.client, spec, self.h.task_queue)
        approved = await self._submit("approve", {"by": "bob"})
        assert approved.status == intake.ACCEPTED, approved
        give_up = asyncio.get_running_loop().time() + JUDGED_WITHIN
        while (
            await pool.fetchval("SELECT phase FROM notices WHERE notice_id = $1", spec.notice_id)
            != Phase.window_open.value
        ):
            assert asyncio.get_running_loop().time() < give_up, "the notice was never sent"
            await asyncio.sleep(0.1)
        self.sent_at = await env.get_current_time()

    # --- customer actions ------------------------------------------------------------------------

    @rule(target=keyed, customer=CUSTOMERS, reason=REASONS, key=st.booleans())
    def objection(self, customer: str, reason: str, key: bool) -> Any:
        payload: dict[str, Any] = {"customer_id": customer, "reason": reason}
        if key:
            payload["idempotency_key"] = f"mail-{uuid.uuid4().hex[:12]}"
        before = self.open_cases(customer)
        receipt = self.submit("object", payload)
        if "\x00" in reason:
            assert receipt.status == intake.REJECTED, receipt  # NUL is refused everywhere
        if self.expect_refused_up_front(receipt, "object", payload):
            return self.keyed_result("object", payload, receipt)
        if customer in self.erased:
            assert receipt.status == intake.REJECTED and "erased" in str(receipt.reason), receipt
        elif receipt.status == intake.DUPLICATE:
            assert before > 0 and "already open" in str(receipt.reason), receipt
        else:
            assert receipt.status == intake.ACCEPTED, receipt
            assert self.open_cases(customer) == before + 1
        return self.keyed_result("object", payload, receipt)

    @rule(
        target=keyed,
        customer=st.sampled_from(RECIPIENTS),
        days_back=st.one_of(st.none(), st.integers(1, 20)),
    )
    def reply_objection(self, customer: str, days_back: int | None) -> Any:
        """An objection by reply mail that ops classify later: its receipt time is the mail's
        arrival (``received_at``), ``days_back`` days ago or (None) an hour before the customer's
        deadline if that has passed, never before the notice was sent. Judged by that time
        (rule 7), a timely one holds the customer even if it was switched on meanwhile."""
        assert self.sent_at is not None
        now = self.run(self.h.env.get_current_time())
        row = self.recipient(customer)
        arrived = now - timedelta(days=days_back or 1)
        if days_back is None and row is not None and row["deadline"] is not None:
            arrived = min(row["deadline"] - timedelta(hours=1), now)
        received_at = max(arrived, self.sent_at)
        payload: dict[str, Any] = {
            "customer_id": customer,
            "reason": f"Reply of {received_at:%Y-%m-%d %H:%M}: we object",
            "idempotency_key": f"reply-{uuid.uuid4().hex[:12]}",
        }
        before = self.open_cases(customer)
        receipt = self.submit("object", payload, received_at, channel="reply")
        assert receipt.received_at == received_at, receipt
        if self.expect_refused_up_front(receipt, "object", payload):
            return self.keyed_result("object", payload, receipt)
        if customer in self.erased:
            assert receipt.status == intake.REJECTED and "erased" in str(receipt.reason), receipt
        elif receipt.status == intake.DUPLICATE:  # the same words while their case is open
            assert before > 0 and "already open" in str(receipt.reason), receipt
        else:
            assert receipt.status == intake.ACCEPTED, receipt
            assert self.open_cases(customer) == before + 1
        return self.keyed_result("object", payload, receipt)

    @rule(customer=st.sampled_from([" acme ", "acme\n", "\tglobex"]))
    def object_padded_customer(self, customer: str) -> None:
        """An id with whitespace around it validates (it is stripped): the receipt must be about
        the customer it names once stripped."""
        payload = {"customer_id": customer, "reason": "No"}
        receipt = self.submit("object", payload)
        typed, problem = intake.validate("object", payload)
        if problem is not None:
            assert receipt.status == intake.REJECTED, receipt
            assert str(receipt.reason).startswith("invalid object payload"), receipt
            return
        assert isinstance(typed, signals.Objection)
        assert receipt.customer_id == typed.customer_id, receipt

    @rule(sent=MALFORMED)
    def malformed(self, sent: tuple[str, dict[str, Any]]) -> None:
        action, payload = sent
        _, problem = intake.validate(action, payload)
        assert problem is not None, f"{action} {payload!r} should not validate"
        receipt = self.submit(action, payload)
        assert receipt.status == intake.REJECTED, receipt
        assert str(receipt.reason).startswith(f"invalid {action} payload"), receipt

    @rule(target=keyed, customer=CUSTOMERS, outcome=OUTCOMES, key=st.booleans())
    def resolve(self, customer: str, outcome: str, key: bool) -> Any:
        payload: dict[str, Any] = {"customer_id": customer, "outcome": outcome, "by": "carol"}
        if key:
            payload["idempotency_key"] = f"ops-{uuid.uuid4().hex[:12]}"
        before = self.open_cases(customer) if customer in RECIPIENTS else 0
        receipt = self.submit("resolve_objection", payload)
        if self.expect_refused_up_front(receipt, "resolve_objection", payload):
            return self.keyed_result("resolve_objection", payload, receipt)
        if before == 0:  # an erased customer's cases can still be closed by ops
            assert receipt.status == intake.REJECTED, receipt
            assert "no open case" in str(receipt.reason), receipt
        else:
            assert receipt.status == intake.ACCEPTED, receipt
            assert self.open_cases(customer) == 0
        return self.keyed_result("resolve_objection", payload, receipt)

    @rule(target=keyed, customer=CUSTOMERS, revoke=st.booleans(), key=st.booleans())
    def opt_in(self, customer: str, revoke: bool, key: bool) -> Any:
        action = "revoke_opt_in" if revoke else "opt_in"
        payload: dict[str, Any] = {"customer_id": customer}
        if key:
            payload["idempotency_key"] = f"link-{uuid.uuid4().hex[:12]}"
        row = self.recipient(customer) if customer in RECIPIENTS else None
        receipt = self.submit(action, payload)
        if self.expect_refused_up_front(receipt, action, payload):
            return self.keyed_result(action, payload, receipt)
        assert self.spec is not None and row is not None
        if customer in self.erased:
            assert receipt.status == intake.REJECTED and "erased" in str(receipt.reason), receipt
        elif not self.spec.opt_in:
            assert receipt.status == intake.REJECTED, receipt
            assert "not an opt-in notice" in str(receipt.reason), receipt
        elif row["opted_in"] == (not revoke):
            assert receipt.status == intake.DUPLICATE, receipt
        else:
            assert receipt.status == intake.ACCEPTED, receipt
            after = self.recipient(customer)
            assert after is not None and after["opted_in"] is (not revoke)
            if revoke:
                assert not after["activated"], "a revoked opt-in leaves the sub-processor on"
        return self.keyed_result(action, payload, receipt)

    @rule(target=keyed, customer=CUSTOMERS, key=st.booleans())
    def exclude(self, customer: str, key: bool) -> Any:
        payload: dict[str, Any] = {
            "customer_id": customer,
            "reason": "no valid contact",
            "by": "carol",
        }
        if key:
            payload["idempotency_key"] = f"ops-{uuid.uuid4().hex[:12]}"
        row = self.recipient(customer) if customer in RECIPIENTS else None
        receipt = self.submit("exclude", payload)
        if self.expect_refused_up_front(receipt, "exclude", payload):
            return self.keyed_result("exclude", payload, receipt)
        assert row is not None
        if row["excluded_at"] is not None:
            assert receipt.status == intake.DUPLICATE, receipt
        else:
            assert receipt.status == intake.ACCEPTED, receipt  # an erased customer too
            after = self.recipient(customer)
            assert after is not None and not after["activated"]
        return self.keyed_result("exclude", payload, receipt)

    @rule(customer=CUSTOMERS)
    def resend(self, customer: str) -> None:
        payload = {"customer_id": customer}
        receipt = self.submit("resend", payload)
        if self.expect_refused_up_front(receipt, "resend", payload):
            return
        row = self.recipient(customer)
        assert row is not None
        if customer in self.erased or row["excluded_at"] is not None:
            assert receipt.status == intake.REJECTED, receipt  # nobody to mail, or settled
        else:
            assert receipt.status == intake.ACCEPTED, receipt
            assert str(receipt.reason).startswith("delivery "), receipt

    @precondition(lambda self: not self.umbrella_fixed and "umbrella" not in self.erased)
    @rule()
    def fix_umbrella_contact(self) -> None:
        """Ops give umbrella a working address (a resend then starts its clock, late: rule 6)."""
        self.umbrella_fixed = True
        self.run(repository.upsert_customers(self.h.pool, helpers.customers(UMBRELLA_FIXED)))

    @precondition(lambda self: bool(self.erased))
    @rule()
    def import_customers_again(self) -> None:
        """The customers file is imported again after an erasure (an export that still lists
        the customer): erased is for good, so the whole import is refused, naming the erased id,
        and nothing changes; the file without it imports (rule 14: nothing wedges on it)."""
        csv = ALL_FIXED if self.umbrella_fixed else helpers.CUSTOMERS_CSV
        with pytest.raises(InputError, match="erased"):
            self.run(repository.upsert_customers(self.h.pool, helpers.customers(csv)))
        self.run(
            repository.upsert_customers(self.h.pool, helpers.customers(without(csv, self.erased)))
        )

    @precondition(lambda self: len(self.erased) < 2)
    @rule(customer=st.sampled_from(RECIPIENTS))
    def erase(self, customer: str) -> None:
        erased = self.run(repository.erase_customer(self.h.pool, customer))
        assert erased["already"] == (customer in self.erased), erased  # idempotent
        self.erased.add(customer)

    # --- notice actions ----------------------------------------------------------------------------

    @rule(days=st.integers(1, 20), later=st.booleans())
    def postpone(self, days: int, later: bool) -> None:
        effective_at: datetime = self.run(self.h.pool.fetchval(
            "SELECT effective_at FROM notices WHERE notice_id = $1", self.notice_id
        ))  # fmt: skip
        phase = self.phase()
        now = self.run(self.h.env.get_current_time())
        to = effective_at + timedelta(days=days if later else -days)
        receipt = self.submit("postpone", {"effective_at": to.isoformat(), "by": "alice"}, now)
        # Judged by its receipt time (rule 7): once the effective date has passed it is too late,
        # whether or not the workflow has recorded the phase change yet.
        if (
            later
            and phase in {Phase.window_open, Phase.awaiting_effective_date}
            and (now < effective_at)
        ):
            assert receipt.status == intake.ACCEPTED, receipt
        else:
            assert receipt.status == intake.REJECTED, receipt

    @rule(by=st.sampled_from(["bob", "Bob", "alice", "carol"]))
    def approve_again(self, by: str) -> None:
        receipt = self.submit("approve", {"by": by})
        assert receipt.status != intake.ACCEPTED, receipt

    @rule(roll=st.integers(0, 9))
    def cancel(self, roll: int) -> None:
        """Rarely: one roll in ten cancels (the rest of the sequence then meets a closed notice)."""
        if roll != 9:
            return
        phase = self.phase()
        activated = self.activated()
        receipt = self.submit("cancel", {"reason": "vendor contract ended", "by": "alice"})
        if phase is Phase.cancelled:
            assert receipt.status == intake.DUPLICATE, receipt
        else:
            assert receipt.status == intake.ACCEPTED, receipt
            self.activated_when_cancelled = activated

    @rule(sent=keyed)
    def repeat_with_same_key(self, sent: Keyed) -> None:
        """(f) the same key again is the first receipt, whatever happened in between."""
        receipt = self.submit(sent.action, sent.payload)
        assert receipt.repeat and receipt.receipt_id == sent.receipt_id, (sent, receipt)

    @rule(days=st.integers(1, 15))
    def time_passes(self, days: int) -> None:
        self.run(self.h.env.sleep(timedelta(days=days)))

    @rule(days=st.integers(1, 15))
    def more_time_passes(self, days: int) -> None:
        """The same as ``time_passes``: a second rule doubles the odds of a jump at each step."""
        self.run(self.h.env.sleep(timedelta(days=days)))

    # --- invariants --------------------------------------------------------------------------------

    def activated(self) -> set[str]:
        rows = self.run(self.h.pool.fetch(
            "SELECT customer_id FROM recipients WHERE notice_id = $1 AND activated",
            self.notice_id,
        ))  # fmt: skip
        return {row["customer_id"] for row in rows}

    @invariant()
    def records_keep_the_rules(self) -> None:
        if self.spec is None:
            return
        problems = self.run(self._record_problems())
        assert not problems, "\n".join(problems)
        self.run(self._check_histories())
        self.healthy = True

    async def _record_problems(self) -> list[str]:
        assert self.spec is not None
        spec, problems = self.spec, []
        async with (
            self.h.pool.acquire() as db,
            db.transaction(isolation="repeatable_read", readonly=True),
        ):
            notice = await db.fetchrow(
                "SELECT phase, effective_at FROM notices WHERE notice_id = $1", spec.notice_id
            )
            pending = await db.fetch(
                "SELECT receipt_id, action FROM intake WHERE notice_id = $1 AND status = 'pending'",
                spec.notice_id,
            )
            if pending:
                problems.append(f"(a) receipts still pending: {[dict(r) for r in pending]}")
            # (c) rule 6: never inside a window, never undelivered, never before the date.
            for row in await db.fetch(
                "SELECT customer_id, delivery, deadline, activated_at FROM recipients"
                " WHERE notice_id = $1 AND activated AND (delivery <> 'delivered'"
                "   OR deadline IS NULL OR activated_at IS NULL OR activated_at < deadline"
                "   OR activated_at < $2)",
                spec.notice_id,
                notice["effective_at"],
            ):
                problems.append(f"(c) activated inside its window or undelivered: {dict(row)}")
            # (d) rules 7/9: no activated customer with an open timely case.
            for row in await db.fetch(
                "SELECT r.customer_id, r.activated_at, o.received_at, o.receipt_id"
                " FROM recipients r JOIN objections o USING (notice_id, customer_id)"
                " WHERE r.notice_id = $1 AND r.activated AND o.status = 'open' AND o.timely",
                spec.notice_id,
            ):
                problems.append(f"(d) activated with an open timely objection: {dict(row)}")
            # (d) an upheld objection, a terminated service or an ops exclusion: off for good.
            for row in await db.fetch(
                "SELECT r.customer_id, r.activated, e.enabled, r.excluded_at IS NOT NULL AS by_ops,"
                " (SELECT array_agg(o.status) FROM objections o WHERE o.notice_id = r.notice_id"
                "   AND o.customer_id = r.customer_id) AS cases"
                " FROM recipients r LEFT JOIN subprocessor_enablements e"
                "   ON e.customer_id = r.customer_id AND e.subprocessor = $2"
                " WHERE r.notice_id = $1 AND (r.activated OR coalesce(e.enabled, false))"
                " AND (r.excluded_at IS NOT NULL OR EXISTS (SELECT 1 FROM objections o"
                "   WHERE o.notice_id = r.notice_id AND o.customer_id = r.customer_id"
                "   AND o.status IN ('excluded', 'terminated')))",
                spec.notice_id,
                spec.subprocessor,
            ):
                problems.append(f"(d) on although excluded or terminated: {dict(row)}")
            # The enablement record and the recipient's flag agree.
            for row in await db.fetch(
                "SELECT r.customer_id, r.activated, e.enabled FROM recipients r"
                " LEFT JOIN subprocessor_enablements e"
                "   ON e.customer_id = r.customer_id AND e.subprocessor = $2"
                " WHERE r.notice_id = $1 AND r.activated IS DISTINCT FROM coalesce(e.enabled, false)",
                spec.notice_id,
                spec.subprocessor,
            ):
                problems.append(f"enablement record disagrees with the recipient: {dict(row)}")
            # (e) rule 8: on an opt-in notice only customers who opted in are on.
            if spec.opt_in:
                for row in await db.fetch(
                    "SELECT customer_id FROM recipients WHERE notice_id = $1 AND activated"
                    " AND NOT opted_in",
                    spec.notice_id,
                ):
                    problems.append(f"(e) activated without an opt-in: {dict(row)}")
            # Rule 10: nothing is activated after a cancellation.
            if self.activated_when_cancelled is not None:
                now_on = {
                    r["customer_id"]
                    for r in await db.fetch(
                        "SELECT customer_id FROM recipients WHERE notice_id = $1 AND activated",
                        spec.notice_id,
                    )
                }
                if now_on - self.activated_when_cancelled:
                    problems.append(
                        f"activated after the cancel: {now_on - self.activated_when_cancelled}"
                    )
                if notice["phase"] != Phase.cancelled.value:
                    problems.append(f"phase {notice['phase']} after an accepted cancel")
        return problems

    async def _check_histories(self) -> None:
        """(b) no activity retries past a bound, no workflow task fails, in any run so far. An
        activity that failed once gets a few seconds (its backoff) to succeed or to show a loop:
        nothing transient goes wrong here, so a retry means a fault that will fail again."""
        give_up = asyncio.get_running_loop().time() + RETRY_WATCH
        while True:
            description = await self._describe()
            retrying = [p for p in description.raw_description.pending_activities if p.attempt > 1]
            for pending in retrying:
                failure = pending.last_failure
                assert pending.attempt <= MAX_ATTEMPT, (
                    f"(b) activity {pending.activity_type.name} at attempt {pending.attempt}:"
                    f" {failure.application_failure_info.type or 'failure'}: {failure.message!r}"
                )
            if not retrying or asyncio.get_running_loop().time() > give_up:
                break
            await asyncio.sleep(0.5)
        self.runs.add(description.run_id)
        assert description.status is not None and description.status.name not in {
            "FAILED",
            "TIMED_OUT",
        }, description.status
        for run_id in sorted(self.runs):
            history = await self.handle(run_id).fetch_history(rpc_timeout=ANSWER_WITHIN)
            for event in history.events:
                if event.HasField("activity_task_started_event_attributes"):
                    attempt = event.activity_task_started_event_attributes.attempt
                    assert attempt <= MAX_ATTEMPT, (
                        f"run {run_id}: an activity took {attempt} attempts"
                    )
                assert not event.HasField("workflow_task_failed_event_attributes"), (
                    f"run {run_id}: workflow task failed: "
                    f"{event.workflow_task_failed_event_attributes.failure.message}"
                )
                assert not event.HasField("workflow_execution_failed_event_attributes"), (
                    f"run {run_id}: workflow failed: "
                    f"{event.workflow_execution_failed_event_attributes.failure.message}"
                )

    async def _describe(self) -> WorkflowExecutionDescription:
        try:
            return await self.handle().describe(rpc_timeout=ANSWER_WITHIN)
        except RPCError as error:
            raise AssertionError(
                f"(b) Temporal did not answer within {ANSWER_WITHIN}: {error} (an activity"
                " retrying in a hot loop keeps the test server busy?)"
            ) from error

    # --- the end: the notice must be able to finish --------------------------------------------

    def teardown(self) -> None:
        try:
            if self.spec is not None and self.healthy:
                self.run(self._finish())
        finally:
            if self.spec is not None:
                self.run(terminate(self.h.env, self.notice_id), timeout=60)

    async def _finish(self) -> None:
        """Past every deadline, with every case resolved and every undelivered or erased customer
        excluded by ops, the notice completes (rules 4, 14: it never stays open forever)."""
        env, pool = self.h.env, self.h.pool
        if self.activated_when_cancelled is None:
            latest = await pool.fetchval(
                "SELECT greatest(n.effective_at, max(r.deadline)) FROM notices n"
                " JOIN recipients r USING (notice_id) WHERE n.notice_id = $1 GROUP BY n.effective_at",
                self.notice_id,
            )
            now = await env.get_current_time()
            if latest is not None and latest + timedelta(days=2) > now:
                await env.sleep(latest + timedelta(days=2) - now)
            for row in await pool.fetch(
                "SELECT customer_id, delivery, EXISTS (SELECT 1 FROM objections o"
                "   WHERE o.notice_id = r.notice_id AND o.customer_id = r.customer_id"
                "   AND o.status = 'open') AS open_case"
                " FROM recipients r WHERE notice_id = $1 AND NOT settled ORDER BY customer_id",
                self.notice_id,
            ):
                customer = row["customer_id"]
                if row["open_case"]:  # an erased customer's too: ops can still close its cases
                    resolved = await self._submit(
                        "resolve_objection",
                        {"customer_id": customer, "outcome": "withdrawn", "by": "carol"},
                    )
                    assert resolved.status == intake.ACCEPTED, resolved
                # An erased customer can no longer act; ops settle it with `notice exclude`, as
                # they do an undelivered one (rule 4).
                if row["delivery"] != "delivered" or customer in self.erased:
                    await self._submit(
                        "exclude", {"customer_id": customer, "reason": "no contact", "by": "carol"}
                    )
        give_up = asyncio.get_running_loop().time() + COMPLETES_WITHIN
        while (await self._describe()).status != WorkflowExecutionStatus.COMPLETED:
            if asyncio.get_running_loop().time() > give_up:
                table = await repository.customer_table(pool, self.notice_id)
                raise AssertionError(
                    "the notice did not complete past every deadline with every case resolved"
                    f" and every undelivered or erased customer excluded; unsettled: "
                    f"{[r for r in table if not r['settled']]}"
                )
            await asyncio.sleep(0.2)
        final = await self.handle().query("status", result_type=NoticeStatus)
        assert final.unsettled == 0 or final.phase is Phase.cancelled, final
        problems = await self._record_problems()
        assert not problems, "\n".join(problems)
        await self._check_histories()
        # Every event the example stored is one of the typed events (noticeflow/domain/events.py).
        await typed_event_types(
            pool, [f"notice-{self.notice_id}", *(f"customer-{c}" for c in sorted(self.erased))]
        )


def short(payload: dict[str, Any]) -> str:
    text = repr(payload)
    return text if len(text) < 200 else text[:200] + "…"


@pytest.fixture
async def harness(
    time_skipping_env: WorkflowEnvironment, pool, owner_database_url: str, smtp_sink: SmtpSink
):
    task_queue = f"tq-{uuid.uuid4().hex[:8]}"
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    notices: list[str] = []
    owner = await db.create_pool(owner_database_url, max_size=1)
    try:
        async with build_worker(time_skipping_env.client, deps, task_queue):
            yield Harness(
                asyncio.get_running_loop(), time_skipping_env, pool, task_queue, notices, owner
            )
            # A workflow left waiting without its worker would stop the shared server skipping
            # time.
            for notice_id in notices:
                await terminate(time_skipping_env, notice_id)
    finally:
        await owner.close()


async def terminate(env: WorkflowEnvironment, notice_id: str) -> None:
    """Terminate a notice's workflow, insisting: an activity retrying in a hot loop (time skips
    its backoff) can keep the shared test server too busy to answer at once, and left running it
    would slow every later test of the session."""
    handle = env.client.get_workflow_handle(workflow_id(notice_id))
    for _ in range(20):
        try:
            await handle.terminate(reason="example over", rpc_timeout=timedelta(seconds=5))
            return
        except RPCError as error:
            if error.status in {RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION}:
                return  # gone, or completed already
            await asyncio.sleep(0.5)


def bound_to(harness: Harness) -> type[NoticeMachine]:
    """The machine for this test's worker and database (hypothesis builds it with no argument)."""

    class Bound(NoticeMachine):
        def __init__(self) -> None:
            super().__init__(harness)

    return Bound


async def test_random_action_sequences_keep_the_rules(harness: Harness) -> None:
    await asyncio.to_thread(run_state_machine_as_test, bound_to(harness), settings=SETTINGS)


KEYED = "<the first keyed submission>"  # in a replayed step: what an earlier step put in `keyed`

# Failing sequences the machine found, minimised, replayed as they were printed (each step, then
# the invariant; the teardown's completion check at the end).
FOUND = [
    pytest.param(False, 0, [("object_padded_customer", (" acme ",))], id="padded-customer-id"),
    pytest.param(
        False,
        30,
        [("time_passes", (10,)), ("reply_objection", ("initech", None))],
        id="timely-reply-classified-after-activation",
    ),
    pytest.param(
        False,
        0,
        [
            ("objection", ("globex", "No AI on our data", True)),
            ("erase", ("globex",)),
            ("repeat_with_same_key", (KEYED,)),
        ],
        id="keyed-repeat-after-erasure",
    ),
    pytest.param(
        False,
        0,
        [
            ("objection", ("globex", "No AI on our data", False)),
            ("erase", ("globex",)),
            ("import_customers_again", ()),
            ("resolve", ("globex", "withdrawn", False)),
        ],
        id="import-again-after-erasure",
    ),
    pytest.param(
        False,
        0,
        [("objection", ("acme", "No", False)), ("erase", ("acme",))],
        id="erased-open-case",
    ),
]


@pytest.mark.parametrize(("opt_in", "head_start", "steps"), FOUND)
async def test_found_sequences(
    harness: Harness, opt_in: bool, head_start: int, steps: list[tuple[str, tuple[Any, ...]]]
) -> None:
    def replay() -> None:
        machine = NoticeMachine(harness)
        keyed: list[Keyed] = []
        try:
            machine.start(opt_in=opt_in, head_start=head_start)
            machine.records_keep_the_rules()
            for name, args in steps:
                result = getattr(machine, name)(*(keyed[0] if a == KEYED else a for a in args))
                if isinstance(result, Keyed):
                    keyed.append(result)
                machine.records_keep_the_rules()
        finally:
            machine.teardown()

    await asyncio.to_thread(replay)
