"""The check that the public list always equals what the events say (issue 14), run at the end of
every lifecycle test (tests/test_change_kinds.py, tests/workflows/test_notice_lifecycle.py):
the real web app is served over the test's database, and what ``/subprocessors.json`` answers is
compared with the list derived afresh from the event store at the chain head it names
(``noticeflow.public_list.derive_at``, which shares no code with the web's cached reading but the
fold), with the current derivation, with the HTML page and the Atom feed's heads, and searched for
any customer id; no public answer carries a session cookie.

The fold is checked against sources it does not read (:func:`assert_list_matches_the_records`),
so a wrong rule in it fails here, not only a stale cache: the records the workflow's decisions
are written to (noticeflow/records.py) — the sub-processors in use are exactly those switched on
for at least one customer in ``subprocessor_enablements`` (what ``customers subprocessors`` and
the annex read) plus the baseline's entries no notice to everyone has retired (a removal whose
notice is ``active``, a replacement every recipient of which is settled ``activate``); each
change's status, effective date and existence follow ``notices`` (phase) and ``recipients``."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from noticeflow import public_list
from noticeflow.config import Settings
from noticeflow.domain.public_list import iso, parse_head
from noticeflow.sink import free_port
from noticeflow.web.app import serve
from noticeflow.web.public import HEAD_HEADER

SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "schemas" / "subprocessors.schema.json"


def validate_schema(body: Any) -> None:
    import jsonschema

    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(body)


async def fetch_public(
    pool: asyncpg.Pool,
    data_dir: Path,
    client: Any = None,
    paths: tuple[str, ...] = (),
    cookies: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The three public answers from the real web app served on a free port: JSON body, and
    each answer's chain head header, plus the HTML and Atom text; ``headers`` has every answer's
    headers, for these and for ``paths`` (more pages to fetch, GET)."""
    from tests.web.conftest import SECRET

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        data_dir=data_dir, database_url="postgresql://unused", secret_key=SECRET,
        public_url=url, web_host="127.0.0.1", web_port=port, web_token="t" * 32,
    )  # fmt: skip
    stop, started = asyncio.Event(), asyncio.get_running_loop().create_future()
    web = asyncio.create_task(serve(settings, stop, pool=pool, client=client, started=started))
    try:
        await asyncio.wait_for(started, 30)
        async with httpx.AsyncClient(base_url=url, timeout=30, cookies=cookies) as http:
            answers = {path: await http.get(path) for path in
                       ("/subprocessors.json", "/subprocessors", "/subprocessors.atom")}  # fmt: skip
            more = {path: await http.get(path) for path in paths}
    finally:
        stop.set()
        await web
    for path, answer in answers.items():
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:500])
    return {
        "headers": {path: a.headers for path, a in (*answers.items(), *more.items())},
        "json": answers["/subprocessors.json"].json(),
        "heads": {path: answer.headers[HEAD_HEADER] for path, answer in answers.items()},
        "html": answers["/subprocessors"].text,
        "atom": answers["/subprocessors.atom"].text,
    }


async def assert_public_list_equals_the_events(
    pool: asyncpg.Pool, data_dir: Path, client: Any = None
) -> dict[str, Any]:
    for _attempt in range(3):
        served = await fetch_public(pool, data_dir, client)
        heads = set(served["heads"].values())
        fresh = await public_list.derive_through(pool)
        if len(heads) == 1 and fresh.head.token in heads:
            break
        await asyncio.sleep(0.5)  # an event committed between the answers: ask again
    else:
        raise AssertionError(f"the chain head kept moving: {served['heads']}, {fresh.head.token}")
    body = served["json"]
    for path, headers in served["headers"].items():  # nobody's session on a public answer
        assert "set-cookie" not in headers, (path, headers.get("set-cookie"))
        assert "cookie" not in headers.get("vary", "").lower(), (path, headers["vary"])
    await assert_list_matches_the_records(pool)
    (token,) = heads
    head = parse_head(token)
    assert body["chain_head"] == head.as_json()
    pinned = await public_list.derive_at(pool, head)
    assert pinned is not None, f"the store has no chain head {token}"
    assert body == pinned.as_json(), "the served list is not what the events say at its head"
    assert body == fresh.as_json()
    validate_schema(body)
    assert f'content="{token}"' in served["html"]
    assert f'position="{head.position}"' in served["atom"]
    # Nothing about customers: no customer id is anywhere in what the public sees.
    ids = [row[0] for row in await pool.fetch("SELECT customer_id FROM customers")]
    ids += [row[0] for row in await pool.fetch("SELECT DISTINCT customer_id FROM recipients")]
    for text in (json.dumps(body), served["html"], served["atom"]):
        for customer_id in set(ids):
            assert not re.search(rf"(?<![\w-]){re.escape(customer_id)}(?![\w-])", text), (
                f"customer id {customer_id!r} is on the public list"
            )
    return body


def _everyone(audience: Any) -> bool:
    return not isinstance(audience, dict) or not any(audience.values())


async def records_view(pool: asyncpg.Pool) -> dict[str, Any]:
    """What the records (not the events' fold) say the public list must hold."""
    async with pool.acquire() as c, c.transaction(isolation="repeatable_read", readonly=True):
        on = {
            row["subprocessor"]
            for row in await c.fetch(
                "SELECT DISTINCT subprocessor FROM subprocessor_enablements WHERE enabled"
            )
        }
        baseline = await c.fetchval(
            "SELECT e.data FROM events e JOIN event_streams s USING (stream_id)"
            " WHERE e.stream_id = 'subprocessors' AND e.event_type = 'subprocessors_baselined'"
            " AND e.stream_version <= s.version ORDER BY e.stream_version DESC LIMIT 1"
        )
        baseline_names = (
            {str(entry["subprocessor"]) for entry in json.loads(baseline)["subprocessors"]}
            if baseline
            else set()
        )
        notices = await c.fetch(
            "SELECT n.notice_id, n.spec, n.phase, n.effective_at,"
            " count(r.customer_id) AS recipients,"
            " count(r.customer_id) FILTER (WHERE r.settled AND r.verdict = 'activate') AS switched"
            " FROM notices n LEFT JOIN recipients r USING (notice_id) GROUP BY n.notice_id"
        )
    retired = set()
    for notice in notices:
        spec = json.loads(notice["spec"]) if isinstance(notice["spec"], str) else notice["spec"]
        if not isinstance(spec, dict) or not _everyone(spec.get("audience")):
            continue
        if spec.get("kind") == "removal" and notice["phase"] == "active":
            retired.add(str(spec.get("subprocessor")))
        if (
            spec.get("kind") == "replacement"
            and spec.get("replaces")
            and notice["recipients"] > 0
            and notice["switched"] == notice["recipients"]
        ):
            retired.add(str(spec["replaces"]))
    return {
        "in_use": on | (baseline_names - retired),
        "notices": {row["notice_id"]: row for row in notices},
    }


STATUS_OF_PHASE = {"active": "in_effect", "cancelled": "cancelled"}


async def assert_list_matches_the_records(pool: asyncpg.Pool) -> dict[str, Any]:
    """The list the events give against the records: an independent source for every rule of
    the fold (the served list equals this derivation: the caller checks that)."""
    for _attempt in range(5):
        derived = await public_list.derive_through(pool)
        records = await records_view(pool)
        if (await public_list.derive_through(pool)).head == derived.head:
            break
        await asyncio.sleep(0.5)  # an event committed meanwhile: read the records again
    else:
        raise AssertionError("the event store kept moving while the records were read")
    body = derived.as_json()
    listed = {entry["name"] for entry in body["subprocessors"]}
    assert listed == records["in_use"], (
        "the public list's sub-processors in use are not what the records say:"
        f" listed but not in use {sorted(listed - records['in_use'])},"
        f" in use but not listed {sorted(records['in_use'] - listed)}"
    )
    notices = records["notices"]
    changes = [*body["upcoming_changes"], *body["past_changes"]]
    for change in changes:
        row = notices.get(change["notice_id"])
        assert row is not None, f"change {change['notice_id']}: no such notice in the records"
        assert row["phase"] != "draft", f"change {change['notice_id']}: a draft is not public"
        expected = STATUS_OF_PHASE.get(row["phase"], "upcoming")
        assert change["status"] == expected, (
            f"change {change['notice_id']}: status {change['status']!r}, but the notice's"
            f" phase is {row['phase']!r} (expected {expected!r})"
        )
        assert change["effective_at"] == iso(row["effective_at"]), (
            f"change {change['notice_id']}: effective {change['effective_at']}, the records"
            f" say {iso(row['effective_at'])}"
        )
    mailed = {notice_id for notice_id, row in notices.items() if row["recipients"] > 0}
    missing = mailed - {change["notice_id"] for change in changes}
    assert not missing, f"notices mailed to customers but not on the public list: {missing}"
    return body
