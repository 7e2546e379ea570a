"""The public sub-processor list (issue 14 item 1): the fold's rules on plain events, the baseline
file's validation, and the baseline's import on the real database (idempotent, a different one
refused with its reason), the list read from the real event store at a pinned chain head, and the
CLI."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from noticeflow import eventstore, public_list
from noticeflow.domain.errors import InputError
from noticeflow.domain.public_list import (
    BASELINE_STREAM,
    PublicEvent,
    derive,
    load_baseline_file,
    parse_baseline,
    parse_head,
)
from tests.test_change_kinds import running  # noqa: F401  (the fixture)

T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)
TODAY = date(2026, 1, 5)
SPEC = {
    "notice_id": "n1",
    "kind": "addition",
    "title": "Notice for Acme Corp",  # a title may name anyone: never published
    "subprocessor": "OpenAI, LLC",
    "subprocessor_location": "United States",
    "purpose": "Assistant",
    "data_categories": ["Prompts"],
    "services": ["assistant"],
    "transfer_mechanism": "SCCs 2021",
    "opt_in": False,
    "effective_at": "2026-02-01T00:00:00Z",
    "audience": {"customers": ["acme"]},
    "body": "Dear Acme Corp",
}
BASELINE = """
[[subprocessors]]
subprocessor = "Amazon Web Services EMEA SARL"
subprocessor_location = "Ireland"
purpose = "Hosting"
data_categories = ["Account data", "Content"]
services = ["assistant", "goals"]
transfer_mechanism = "Not applicable (EEA)"
in_use_since = 2021-03-01

[[subprocessors]]
subprocessor = "Anthropic, PBC"
subprocessor_location = "United States"
purpose = "Assistant"
data_categories = ["Prompts"]
services = ["assistant"]
transfer_mechanism = "SCCs 2021"
in_use_since = 2024-06-01
"""


class Events:
    """Plain events in global order, hashed as the store would chain them (any bytes will do)."""

    def __init__(self) -> None:
        self.items: list[PublicEvent] = []

    def add(self, stream: str, kind: str, at: datetime, **data: Any) -> None:
        position = len(self.items) + 1
        digest = hashlib.sha256(f"{position}{stream}{kind}".encode()).digest()
        self.items.append(PublicEvent(position, stream, kind, data, at, digest))

    def notice(self, notice_id: str, at: datetime, **spec: Any) -> None:
        self.add(f"notice-{notice_id}", "notice_created", at, spec={**SPEC, **spec})

    def sent(self, notice_id: str, at: datetime, customers: int = 2) -> None:
        self.add(f"notice-{notice_id}", "audience_snapshotted", at, customers=customers)

    def switch(self, notice_id: str, on: bool, customer: str, name: str, at: datetime) -> None:
        kind = "subprocessor_enabled" if on else "subprocessor_disabled"
        self.add(f"notice-{notice_id}", kind, at, customer_id=customer, subprocessor=name)

    def phase(self, notice_id: str, phase: str, at: datetime) -> None:
        self.add(f"notice-{notice_id}", "phase_changed", at, phase=phase)

    def baseline(self, at: datetime, text: str = BASELINE) -> None:
        import tomllib

        entries = parse_baseline(tomllib.loads(text), "baseline", TODAY)
        event = public_list.baseline_event(entries, None)
        self.add(BASELINE_STREAM, "subprocessors_baselined", at, **event.data())


def names(listing: Any) -> dict[str, str]:
    return {entry.name: entry.source for entry in listing.subprocessors}


def test_a_notice_is_public_once_sent_and_the_sub_processor_once_on_for_a_customer():
    events = Events()
    events.notice("n1", T0)
    assert derive(events.items).as_json()["upcoming_changes"] == []  # a draft is not public
    events.sent("n1", T0 + timedelta(hours=1))
    listing = derive(events.items)
    (change,) = listing.upcoming
    assert (change.notice_id, change.status, change.sent_at) == (
        "n1",
        "upcoming",
        T0 + timedelta(hours=1),
    )
    assert listing.subprocessors == []  # announced, not in use
    events.phase("n1", "active", T0 + timedelta(days=27))
    events.switch("n1", True, "acme", "OpenAI, LLC", T0 + timedelta(days=27))
    events.switch("n1", True, "globex", "OpenAI, LLC", T0 + timedelta(days=28))
    listing = derive(events.items)
    (entry,) = listing.subprocessors
    assert (entry.name, entry.since, entry.details.location) == (
        "OpenAI, LLC",
        T0 + timedelta(days=27),
        "United States",
    )
    assert [c.status for c in listing.past] == ["in_effect"]
    # Off for one customer: still in use for the other; off for both: off the list.
    events.switch("n1", False, "acme", "OpenAI, LLC", T0 + timedelta(days=30))
    assert names(derive(events.items)) == {"OpenAI, LLC": "notice"}
    events.switch("n1", False, "globex", "OpenAI, LLC", T0 + timedelta(days=31))
    assert names(derive(events.items)) == {}
    text = json.dumps(derive(events.items).as_json())
    for private in ("acme", "globex", "Acme Corp", "Dear"):
        assert private not in text


def test_postponement_and_cancellation_update_the_change_and_its_feed_entry():
    events = Events()
    events.notice("n1", T0)
    events.sent("n1", T0 + timedelta(hours=1))
    first = derive(events.items).upcoming[0]
    events.add("notice-n1", "notice_postponed", T0 + timedelta(days=2),
               **{"from": "2026-02-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"})  # fmt: skip
    postponed = derive(events.items).upcoming[0]
    assert postponed.atom_id == first.atom_id
    assert postponed.updated_at == T0 + timedelta(days=2) > first.updated_at
    assert postponed.effective_at == datetime(2026, 3, 1, tzinfo=UTC)
    assert postponed.first_effective_at == datetime(2026, 2, 1, tzinfo=UTC)
    events.add("notice-n1", "notice_cancelled", T0 + timedelta(days=3), phase="window_open")
    listing = derive(events.items)
    assert listing.upcoming == []
    (cancelled,) = listing.past
    assert (cancelled.status, cancelled.atom_id, cancelled.updated_at) == (
        "cancelled",
        first.atom_id,
        T0 + timedelta(days=3),
    )


def test_baseline_replacement_removal_and_material_change():
    events = Events()
    events.baseline(T0)
    listing = derive(events.items)
    assert names(listing) == {
        "Amazon Web Services EMEA SARL": "baseline",
        "Anthropic, PBC": "baseline",
    }
    assert listing.subprocessors[1].since == datetime(2024, 6, 1, tzinfo=UTC)
    # A replacement of a baseline entry: the old one stays while a recipient may keep it.
    events.notice("r1", T0, kind="replacement", replaces="Anthropic, PBC", audience={})
    events.sent("r1", T0 + timedelta(hours=1), customers=2)
    events.phase("r1", "active", T0 + timedelta(days=30))
    events.switch("r1", True, "acme", "OpenAI, LLC", T0 + timedelta(days=30))
    events.add("notice-r1", "customer_settled", T0 + timedelta(days=30),
               customer_id="acme", verdict="activate")  # fmt: skip
    assert set(names(derive(events.items))) == {
        "Amazon Web Services EMEA SARL",
        "Anthropic, PBC",
        "OpenAI, LLC",
    }
    events.add("notice-r1", "customer_settled", T0 + timedelta(days=31),
               customer_id="globex", verdict="activate")  # fmt: skip
    assert set(names(derive(events.items))) == {"Amazon Web Services EMEA SARL", "OpenAI, LLC"}
    # A material change switched on: the new terms; a removal taking effect: off the list.
    events.notice("m1", T0, kind="material_change", subprocessor="OpenAI, LLC",
                  subprocessor_location="Ireland",
                  previous={"subprocessor_location": "United States"})  # fmt: skip
    events.sent("m1", T0 + timedelta(days=32))
    events.switch("m1", True, "acme", "OpenAI, LLC", T0 + timedelta(days=60))
    listing = derive(events.items)
    openai = next(e for e in listing.subprocessors if e.name == "OpenAI, LLC")
    assert (openai.details.location, openai.notice_id, openai.since) == (
        "Ireland",
        "m1",
        T0 + timedelta(days=30),
    )
    assert listing.upcoming[0].as_json()["previous"] == {"location": "United States"}
    events.notice("x1", T0, kind="removal", subprocessor="Amazon Web Services EMEA SARL",
                  audience={"regions": [], "services": [], "customers": []})  # fmt: skip
    events.sent("x1", T0 + timedelta(days=61))
    assert "Amazon Web Services EMEA SARL" in names(derive(events.items))
    events.phase("x1", "active", T0 + timedelta(days=90))
    assert set(names(derive(events.items))) == {"OpenAI, LLC"}


def test_a_removal_or_replacement_to_part_of_the_customers_keeps_the_baseline_entry_listed():
    """The baseline is every customer's: a removal sent to the US customers takes effect for them
    only, so the others still use it and the list must still say so; the same for a replacement
    that every one of its (US) recipients accepted. A later removal to everyone retires it."""
    events = Events()
    events.baseline(T0)
    events.notice("x-us", T0, kind="removal", subprocessor="Amazon Web Services EMEA SARL",
                  audience={"regions": ["US"]})  # fmt: skip
    events.sent("x-us", T0 + timedelta(hours=1))
    events.phase("x-us", "active", T0 + timedelta(days=30))
    events.notice("r-us", T0, kind="replacement", replaces="Anthropic, PBC",
                  audience={"regions": ["US"], "services": [], "customers": []})  # fmt: skip
    events.sent("r-us", T0 + timedelta(hours=1), customers=1)
    events.phase("r-us", "active", T0 + timedelta(days=30))
    events.switch("r-us", True, "acme", "OpenAI, LLC", T0 + timedelta(days=30))
    events.switch("r-us", False, "acme", "Anthropic, PBC", T0 + timedelta(days=30))
    events.add("notice-r-us", "customer_settled", T0 + timedelta(days=30),
               customer_id="acme", verdict="activate")  # fmt: skip
    listing = derive(events.items)
    assert names(listing) == {
        "Amazon Web Services EMEA SARL": "baseline",
        "Anthropic, PBC": "baseline",
        "OpenAI, LLC": "notice",
    }
    assert [c.status for c in listing.past] == ["in_effect", "in_effect"]
    events.notice("x-all", T0, kind="removal", subprocessor="Amazon Web Services EMEA SARL",
                  audience={})  # fmt: skip
    events.sent("x-all", T0 + timedelta(days=31))
    events.phase("x-all", "active", T0 + timedelta(days=60))
    assert set(names(derive(events.items))) == {"Anthropic, PBC", "OpenAI, LLC"}


def test_the_chain_head_names_exactly_the_events_read():
    events = Events()
    events.baseline(T0)
    events.notice("n1", T0)
    one = derive(events.items).head
    events.add("notice-n1", "objection_received", T0, customer_id="acme")  # not followed
    assert derive(events.items).head == one
    events.sent("n1", T0)
    two = derive(events.items).head
    assert two.position == 4 and two.digest != one.digest
    assert parse_head(two.token) == two
    with pytest.raises(InputError, match="not a chain head"):
        parse_head("12:md5:abc")


def test_the_baseline_file_lists_every_problem_at_once(tmp_path: Path):
    bad = tmp_path / "baseline.toml"
    bad.write_text(
        'vendor = "x"\n'
        "[[subprocessors]]\n"
        'subprocessor = "Anthropic, PBC"\n'
        'purpose = "Assistant"\n'
        "data_categories = []\n"
        'services = ["assistant"]\n'
        'transfer_mechanism = "SCCs"\n'
        "in_use_since = 2099-01-01\n"
        'colour = "blue"\n'
        "[[subprocessors]]\n"
        'subprocessor = "anthropic,  pbc"\n'
        'subprocessor_location = "US"\n'
        'purpose = "Assistant"\n'
        'data_categories = ["Prompts"]\n'
        'services = ["assistant"]\n'
        'transfer_mechanism = "SCCs"\n'
        "in_use_since = 2024-01-01\n"
        "[[subprocessors]]\n"
        'subprocessor = "Mail Inc."\n'
        'subprocessor_location = "US"\n'
        'purpose = "Mail"\n'
        'data_categories = ["Addresses"]\n'
        'services = ["assistant"]\n'
        'transfer_mechanism = "SCCs"\n'
        "in_use_since = 2030-01-01\n",
        encoding="utf-8",
    )
    with pytest.raises(InputError) as caught:
        load_baseline_file(bad, TODAY)
    text = str(caught.value)
    assert text.startswith(f"{bad} is not a valid baseline (7 problems):"), text
    for expected in (
        "vendor: unknown field",
        # item 1 failed the schema: its copy is still named, at once
        "subprocessors item 2 (anthropic, pbc).subprocessor: the same sub-processor as item 1",
        "subprocessors item 1 (Anthropic, PBC).in_use_since: 2099-01-01 is in the future",
        "subprocessors item 1 (Anthropic, PBC).subprocessor_location: missing",
        "subprocessors item 1 (Anthropic, PBC).data_categories: must list at least one item",
        "subprocessors item 1 (Anthropic, PBC).colour: unknown field",
        "subprocessors item 3 (Mail Inc.).in_use_since: 2030-01-01 is in the future",
    ):
        assert expected in text, text
    # Item 1 valid now: the second spelling is still the one problem left of its kind.
    bad.write_text(bad.read_text().replace("data_categories = []", 'data_categories = ["P"]')
                   .replace("colour = \"blue\"\n", 'subprocessor_location = "US"\n')
                   .replace("2099-01-01", "2020-01-01").replace('vendor = "x"\n', ""))  # fmt: skip
    with pytest.raises(InputError, match=r"the same sub-processor as item 1 \('Anthropic, PBC'\)"):
        load_baseline_file(bad, TODAY)
    for content, words in (
        ("not toml [", "not valid TOML"),
        ("", "subprocessors: missing"),
        ("subprocessors = []", "lists no sub-processor"),
    ):
        bad.write_text(content)
        with pytest.raises(InputError, match=words):
            load_baseline_file(bad, TODAY)
    with pytest.raises(InputError, match="no such file"):
        load_baseline_file(tmp_path / "missing.toml", TODAY)


# --- on the real database -------------------------------------------------------------------------


def entries_of(text: str = BASELINE) -> list[Any]:
    import tomllib

    return parse_baseline(tomllib.loads(text), "baseline", TODAY)


async def test_the_baseline_is_recorded_once_and_a_different_one_needs_replace_before_any_mail(
    pool,
):
    first = await public_list.record_baseline(pool, entries_of(), "alice", T0)
    assert (first.recorded, first.version, first.subprocessors) == (True, 1, 2)
    again = await public_list.record_baseline(pool, list(reversed(entries_of())), "bob", T0)
    assert (again.recorded, again.version) == (False, 1)  # the same list: nothing appended
    assert len(await eventstore.read_stream(pool, BASELINE_STREAM)) == 1
    smaller = BASELINE.split("\n\n[[subprocessors]]")[0]
    with pytest.raises(InputError, match="run again with --replace"):
        await public_list.record_baseline(pool, entries_of(smaller), None, T0)
    fixed = await public_list.record_baseline(pool, entries_of(smaller), None, T0, replace=True)
    assert (fixed.recorded, fixed.version) == (True, 2)
    listing = await public_list.derive_through(pool)
    assert names(listing) == {"Amazon Web Services EMEA SARL": "baseline"}
    assert listing.baseline_names == ("Amazon Web Services EMEA SARL",)
    # Pinned: the head names the list as it was, and a head the store never had is refused.
    assert await public_list.derive_at(pool, listing.head) == listing
    assert (
        await public_list.derive_at(pool, parse_head(f"{listing.head.position}:sha256:" + "0" * 64))
        is None
    )
    cache = public_list.Cache()
    assert await cache.current(pool) == listing
    # Once a notice was mailed, the list is published: any other baseline is refused.
    await pool.execute(
        "INSERT INTO notices (notice_id, spec, notice_text, text_sha256, author, subprocessor,"
        " effective_at) VALUES ('n1', '{}', '', '', 'alice', 'X', now())"
    )
    await pool.execute(
        "INSERT INTO recipients (notice_id, customer_id, name, region, services, timezone,"
        " snapshot_at) VALUES ('n1', 'acme', '', 'US', '{}', 'UTC', now())"
    )
    with pytest.raises(InputError, match="notices have been mailed already"):
        await public_list.record_baseline(pool, entries_of(), None, T0, replace=True)
    same = await public_list.record_baseline(pool, entries_of(smaller), None, T0)
    assert not same.recorded  # the same one is still fine: idempotent


def test_the_cli_imports_a_baseline_and_shows_the_list(database_url, tmp_path, monkeypatch):
    from noticeflow.cli import app
    from tests.web.conftest import SECRET

    monkeypatch.setenv("NOTICEFLOW_DATABASE_URL", database_url)
    monkeypatch.setenv("NOTICEFLOW_SECRET_KEY", SECRET)
    file = tmp_path / "baseline.toml"
    file.write_text(BASELINE, encoding="utf-8")
    runner = CliRunner()
    done = runner.invoke(app, ["subprocessors", "import", str(file), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["recorded"] is True
    again = runner.invoke(app, ["subprocessors", "import", str(file)])
    assert again.exit_code == 0 and "recorded already: nothing changed" in again.output
    shown = runner.invoke(app, ["subprocessors", "show", "--json"])
    assert shown.exit_code == 0, shown.output
    body = json.loads(shown.output)
    assert [e["name"] for e in body["subprocessors"]] == [
        "Amazon Web Services EMEA SARL",
        "Anthropic, PBC",
    ]
    token = f"{body['chain_head']['position']}:{body['chain_head']['digest']}"
    pinned = runner.invoke(app, ["subprocessors", "show", "--head", token, "--json"])
    assert json.loads(pinned.output) == body
    file.write_text(BASELINE.replace("2024-06-01", '"someday"'), encoding="utf-8")
    bad = runner.invoke(app, ["subprocessors", "import", str(file)])
    assert bad.exit_code == 2
    assert "in_use_since" in bad.output and "Traceback" not in bad.output


async def test_an_event_no_stream_head_covers_does_not_change_the_list(pool):
    """A row inserted into ``events`` behind the product's back (its stream's head does not cover
    it) is skipped, as the projector and the outboxes skip it: the list, its head and a cache
    that read past it stay what the product's events say."""
    await public_list.record_baseline(pool, entries_of(), "alice", T0)
    before = await public_list.derive_through(pool)
    cache = public_list.Cache()
    assert await cache.current(pool) == before
    rogue = {
        "subprocessors": [
            {
                "subprocessor": "Rogue Analytics Ltd",
                "subprocessor_location": "Nowhere",
                "purpose": "Tracking",
                "data_categories": ["Everything"],
                "services": ["assistant"],
                "transfer_mechanism": "None",
                "in_use_since": "2020-01-01",
            }
        ],
        "content_sha256": "0" * 64,
        "by": None,
    }
    await pool.execute(
        "INSERT INTO events (stream_id, stream_version, event_id, event_type, data, occurred_at,"
        " prev_hash, hash) VALUES ($1, 2, gen_random_uuid(), 'subprocessors_baselined',"
        " $2::jsonb, now(), '\\x00'::bytea, '\\x01'::bytea)",
        BASELINE_STREAM,
        json.dumps(rogue),
    )
    after = await public_list.derive_through(pool)
    assert "Rogue Analytics Ltd" not in names(after)
    assert after == before  # the same list and the same chain head
    assert await cache.current(pool) == before


@pytest.fixture
def stack(running: Any) -> Any:  # noqa: F811  (the real stack of tests/test_change_kinds.py)
    return running


async def test_a_regional_removal_of_a_baseline_entry_on_the_real_workflow(stack, pool, tmp_path):
    """End to end (time-skipping Temporal, PostgreSQL, SMTP): a baseline, then a removal of one
    of its entries sent to the US customers only, run until it takes effect. The others still use
    it, so it stays listed; the public check compares the list with the records (enablements,
    the baseline, the notices' phases), which a fold retiring it for everyone would fail."""
    from noticeflow.domain.notice import parse_notice
    from noticeflow.domain.rules import Phase
    from tests.public_check import assert_public_list_equals_the_events
    from tests.test_change_kinds import spec_of, start

    env, task_queue = stack
    now = await env.get_current_time()
    await public_list.record_baseline(pool, entries_of(), "alice", now)
    data = spec_of(now, "anthropic-us-removal", "Anthropic, PBC").model_dump(
        mode="json", exclude={"objection_window", "kind", "replaces", "previous", "reminder_before"}
    )
    assert data["audience"]["regions"] == ["US"]
    spec = parse_notice({**data, "kind": "removal", "effective_at": now + timedelta(days=10)})
    handle = await start(env, pool, task_queue, spec)
    await env.sleep(timedelta(days=11))
    assert (await handle.result()).phase is Phase.active
    body = await assert_public_list_equals_the_events(pool, tmp_path / "public-list")
    assert [e["name"] for e in body["subprocessors"]] == [
        "Amazon Web Services EMEA SARL",
        "Anthropic, PBC",
    ]
    assert [(c["notice_id"], c["status"]) for c in body["past_changes"]] == [
        ("anthropic-us-removal", "in_effect")
    ]


def test_a_pinned_head_out_of_range_or_not_ascii_is_refused_in_words(database_url, monkeypatch):
    """A position no event can have (past a bigint) or written in other digits is refused up
    front, saying so — not shown as an outage from the database."""
    from noticeflow.cli import app
    from tests.web.conftest import SECRET

    digest = "ab" * 32
    with pytest.raises(InputError, match=r"position 99999999999999999999999 is beyond any event"):
        parse_head(f"99999999999999999999999:sha256:{digest}")
    with pytest.raises(InputError, match="beyond any event"):
        parse_head(f"9223372036854775808:sha256:{digest}")
    assert parse_head(f"9223372036854775807:sha256:{digest}").position == 2**63 - 1
    for bad in (
        f"\uff11\uff12:sha256:{digest}",
        f"12:sha256:{digest[:-2]} f",
        f"12:sha256:{digest[:-1]}g",
    ):
        with pytest.raises(InputError, match="not a chain head"):
            parse_head(bad)
    monkeypatch.setenv("NOTICEFLOW_DATABASE_URL", database_url)
    monkeypatch.setenv("NOTICEFLOW_SECRET_KEY", SECRET)
    runner = CliRunner()
    for token in (f"99999999999999999999999:sha256:{digest}", f"\uff11\uff12:sha256:{digest}"):
        shown = runner.invoke(app, ["subprocessors", "show", "--head", token])
        assert shown.exit_code != 0
        text = shown.output + (str(shown.exception) if shown.exception else "")
        assert "cannot reach" not in text and "int64" not in text, text
        assert "not a chain head" in text, text


def test_the_baseline_file_refuses_blank_and_repeated_list_entries_and_huge_files(tmp_path):
    bad = tmp_path / "baseline.toml"
    bad.write_text(
        BASELINE.replace(
            'services = ["assistant", "goals"]',
            'services = ["nosuchservice", "", "assistant", " Assistant"]',
        ).replace('data_categories = ["Prompts"]', 'data_categories = ["Prompts", "prompts "]')
    )
    with pytest.raises(InputError) as caught:
        load_baseline_file(bad, TODAY)
    text = str(caught.value)
    for expected in (
        "item 1 (Amazon Web Services EMEA SARL).services item 2: must not be empty",
        "item 1 (Amazon Web Services EMEA SARL).services item 4: 'Assistant' is listed already",
        "item 2 (Anthropic, PBC).data_categories item 2: 'prompts' is listed already",
    ):
        assert expected in text, text
    # Too large: refused before reading (a regular file) or after cap + 1 bytes (anything else).
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * 1_000_001)
    with pytest.raises(InputError, match="larger than 1,000,000 bytes"):
        load_baseline_file(big, TODAY)
    with pytest.raises(InputError, match="is a device, not a baseline file"):
        load_baseline_file(Path("/dev/zero"), TODAY)


async def test_the_import_refuses_a_service_no_customer_has(pool):
    from noticeflow import repository
    from tests import helpers

    await repository.upsert_customers(pool, helpers.customers())
    wrong = BASELINE.replace('services = ["assistant"]', 'services = ["assistant", "asistant"]')
    with pytest.raises(InputError, match=r"Anthropic, PBC: services: 'asistant' is no customer"):
        await public_list.record_baseline(pool, entries_of(wrong), None, T0)
    assert await eventstore.read_stream(pool, BASELINE_STREAM) == []


def test_the_cli_escapes_invisible_characters_it_echoes(database_url, tmp_path, monkeypatch):
    """A right-to-left override (or NUL, ESC) in a file's value is shown escaped in the error,
    so it cannot reorder or hide what the terminal shows."""
    from noticeflow.cli import app
    from tests.web.conftest import SECRET

    monkeypatch.setenv("NOTICEFLOW_DATABASE_URL", database_url)
    monkeypatch.setenv("NOTICEFLOW_SECRET_KEY", SECRET)
    file = tmp_path / "baseline.toml"
    file.write_text(
        BASELINE.replace('"Anthropic, PBC"', '"Anthropic\\u202e, PBC\\u0000\\u001b[2J"'),
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["subprocessors", "import", str(file)])
    assert result.exit_code == 2
    assert "\u202e" not in result.output and "\x00" not in result.output, result.output
    assert "\x1b" not in result.output
    assert "Anthropic\\u202e, PBC" in result.output, result.output
