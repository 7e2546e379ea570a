"""Erased means erased, and no personal data goes through Temporal (issue 10, item 6).

A customer objects with its own address and its DPO's name in the reason; its relay refuses one
of its contacts with a reply that echoes the address; ops resolve the case with a note naming the
DPO. Then the customer is erased. After that, none of its addresses, its name, its free text or
unkeyed hashes of them may be found in any table (events included), the notice's Temporal
history (decoded with the codec, and raw), any log line the run wrote, or a new evidence pack —
and no person's name or free text (customers' or ops') is in the Temporal history at all.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from temporalio.api.common.v1 import Payload

from noticeflow import control, repository
from noticeflow.contracts import workflow_id
from noticeflow.evidence import export_pack
from tests import helpers
from tests.web.conftest import WebStack, spec

ADDRESS = "jane.roe@zeta.example"
REFUSED = "jane.roe@zeta.invalid"  # the sink refuses .invalid with a reply echoing the address
NAME = "Zeta Zebrafish Holdings"
DPO = "Jane Roe-Privacyson"
REASON = f"{DPO} objects: write to {ADDRESS} before any AI processing of our tickets"
NOTE = f"Phoned {DPO}; she withdraws once the DPA annex is signed"
AUTHOR = "Quentin Authorsson"
APPROVER = "Rosalind Approverdottir"
CANCEL_WHY = "Legal review by Ottoline Counselworth pending"

ZETA_CSV = (
    "customer_id,name,region,services,contact_emails,timezone,window_days,window_unit\n"
    f"zeta,{NAME},US,assistant,{ADDRESS};{REFUSED},America/New_York,,\n"
)


def unkeyed_hashes(notice_id: str) -> set[str]:
    """What an attacker with a guess list computes without any key: hashes of each datum and the
    old (unkeyed) Message-ID digests."""
    found = set()
    for value in (ADDRESS, REFUSED, NAME, DPO, REASON, NOTE):
        for variant in (value, value.lower()):
            found.add(hashlib.sha256(variant.encode()).hexdigest()[:32])
    for address in (ADDRESS, REFUSED):
        for kind in ("notice", "acknowledgement", "resolution", "cancellation", "postponement"):
            raw = f"{notice_id}\x1fzeta\x1f{address}\x1f{kind}".encode()
            found.add(hashlib.sha256(raw).hexdigest()[:32])
    return found


def customer_traces(notice_id: str) -> set[str]:
    return {ADDRESS, REFUSED, NAME, DPO, "Privacyson", "Zebrafish", REASON, NOTE} | unkeyed_hashes(
        notice_id
    )


def payloads_in(node: Any) -> list[dict[str, Any]]:
    """Every payload ({metadata, data}) in a history's JSON form."""
    found = []
    if isinstance(node, dict):
        if "data" in node and "metadata" in node and isinstance(node["metadata"], dict):
            found.append(node)
        for value in node.values():
            found += payloads_in(value)
    elif isinstance(node, list):
        for value in node:
            found += payloads_in(value)
    return found


async def history_text(stack: WebStack, notice_id: str) -> tuple[str, str]:
    """The notice's whole history (every run) as stored (raw) and with every payload decoded."""
    codec = stack.client.data_converter.payload_codec
    assert codec is not None, "the stack's client must encrypt payloads"
    raw_parts, decoded_parts = [], []
    runs = [
        run.run_id
        async for run in stack.client.list_workflows(f"WorkflowId = '{workflow_id(notice_id)}'")
    ]
    assert runs
    for run_id in runs:
        handle = stack.client.get_workflow_handle(workflow_id(notice_id), run_id=run_id)
        history = (await handle.fetch_history()).to_json_dict()
        raw_parts.append(json.dumps(history))
        for item in payloads_in(history):
            payload = Payload(
                metadata={k: base64.b64decode(v) for k, v in item["metadata"].items()},
                data=base64.b64decode(item.get("data", "")),
            )
            (plain,) = await codec.decode([payload])
            decoded_parts.append(plain.data.decode("utf-8", "replace"))
    return "\n".join(raw_parts), "\n".join(decoded_parts)


async def everything_in_the_database(stack: WebStack) -> str:
    tables = [
        row["table_name"]
        for row in await stack.pool.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            " AND table_type = 'BASE TABLE'"
        )
    ]
    dump = []
    for table in tables:
        rows = await stack.pool.fetch(f'SELECT t::text AS row FROM "{table}" t')
        dump += [f"{table}: {row['row']}" for row in rows]
    return "\n".join(dump)


def found_in(text: str, needles: set[str]) -> set[str]:
    lowered = text.lower()
    return {needle for needle in needles if needle.lower() in lowered}


async def test_an_erased_customer_leaves_no_readable_trace_and_temporal_holds_no_names(
    web_stack: WebStack, tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    with capture_logs() as structured:  # structlog's own capture: whatever an earlier test set up
        await _the_whole_story(web_stack, tmp_path, capfd, caplog, structured)


async def _the_whole_story(
    web_stack: WebStack,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: Any,
    structured: list[MutableMapping[str, Any]],
) -> None:
    stack = web_stack
    await repository.upsert_customers(stack.pool, helpers.customers(ZETA_CSV))
    notice = spec("privacy-everywhere")
    await control.start_notice(stack.client, stack.pool, notice, AUTHOR, stack.task_queue)

    async def act(action: str, payload: dict[str, Any]) -> Any:
        receipt, why = await control.submit(
            stack.client, stack.pool, notice.notice_id, action, payload,
            task_queue=stack.task_queue, wait_seconds=30,
        )  # fmt: skip
        assert why is None, why
        return receipt

    assert (await act("approve", {"by": AUTHOR})).status == "rejected"  # four eyes
    assert (await act("approve", {"by": APPROVER})).status == "accepted"
    await stack.wait_phase(notice.notice_id, "window_open")
    objected = await act("object", {"customer_id": "zeta", "reason": REASON, "by": DPO})
    assert objected.status == "accepted", objected
    resolved = await act(
        "resolve_objection",
        {"customer_id": "zeta", "outcome": "withdrawn", "by": APPROVER, "note": NOTE},
    )
    assert resolved.status == "accepted", resolved
    refused = await stack.pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE customer_id = 'zeta' AND status = 'failed'"
    )
    assert refused >= 1, "the relay must have refused one of zeta's contacts"

    # Before erasure the data is there (sealed), so the scan below can fail.
    stored_before = await everything_in_the_database(stack)
    assert "zeta" in stored_before

    await repository.erase_customer(stack.pool, "zeta")
    after = await act("object", {"customer_id": "zeta", "reason": REASON, "by": DPO})
    assert after.status == "rejected" and "erased" in str(after.reason)
    assert (await act("cancel", {"by": APPROVER, "reason": CANCEL_WHY})).status == "accepted"
    await stack.wait_phase(notice.notice_id, "cancelled")

    traces = customer_traces(notice.notice_id)
    stored = await everything_in_the_database(stack)
    assert not found_in(stored, traces), "readable traces of an erased customer in the database"

    raw, decoded = await history_text(stack, notice.notice_id)
    people = traces | {AUTHOR, APPROVER, CANCEL_WHY, "Authorsson", "Approverdottir"}
    assert not found_in(raw, people), "personal data in clear in the Temporal history"
    assert not found_in(decoded, people), "personal data inside the Temporal history's payloads"
    assert decoded and notice.notice_id in decoded  # the decoding worked: ids are there

    pack = tmp_path / "pack"
    await export_pack(stack.pool, notice.notice_id, pack)
    files = "\n".join(
        path.read_text(errors="replace") for path in sorted(pack.rglob("*")) if path.is_file()
    )
    assert not found_in(files, traces), "an erased customer in a new evidence pack"

    out, err = capfd.readouterr()
    logs = "\n".join(
        [out, err, *(record.getMessage() for record in caplog.records)]
        + [json.dumps(line, default=str) for line in structured]
    )
    assert notice.notice_id in logs or "zeta" in logs, "the capture worked"
    assert not found_in(logs, traces | {AUTHOR, APPROVER, CANCEL_WHY}), "personal data in logs"
