"""Every Temporal payload is encrypted (noticeflow/codec.py): AES-256-GCM under the codec key,
key id in the metadata, rotation through the previous keys, plain payloads passed through (a raw
JSON signal from the Temporal CLI). On the dev server: a notice's history holds no plaintext for a
client without the codec, and reads whole with it."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client
from temporalio.common import RawValue
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from noticeflow import codec, control, keyring, repository
from noticeflow.binaries import binary
from noticeflow.codec import CodecError, EncryptionCodec, UnknownKeyError
from noticeflow.config import Settings
from noticeflow.contracts import UNDECODABLE_ENCODING, NoticeInput, workflow_id
from noticeflow.domain.errors import InputError
from noticeflow.domain.rules import Phase
from noticeflow.temporal import connect
from tests import helpers
from tests.workflows.test_notice_lifecycle import wait_for
from worker.main import build_worker, make_deps
from workflows.notice import (
    REMOVAL_KEEPS_EFFECT,
    SEND_IN_SHARDS,
    TYPED_NOTICE_EVENTS,
    NoticeWorkflow,
)

SECRET = "Jane Roe (jane.roe@initech.example) objects"


def codec_for(*keys: str) -> EncryptionCodec:
    """The codec as a process with these key settings (the first current) builds it."""
    settings = Settings(codec_key=keys[0], previous_codec_keys=list(keys[1:]))
    return EncryptionCodec.from_settings(settings)


def plain(value: Any) -> Payload:
    return pydantic_data_converter.payload_converter.to_payloads([value])[0]


async def test_a_payload_round_trips_sealed_with_a_fresh_nonce():
    key = secrets.token_urlsafe(32)
    sealer = codec_for(key)
    original = plain({"reason": SECRET})
    first, second = await sealer.encode([original, original])
    for sealed in (first, second):
        assert sealed.metadata["encoding"] == b"binary/encrypted"
        assert sealed.metadata["encryption-key-id"] == sealer.key_id.encode()
        assert (
            sealed.metadata["encryption-key-id"]
            == keyring.Keyring.key_id(keyring.derive(key, "codec/payloads")).encode()
        )
        assert b"jane" not in sealed.SerializeToString() and b"json" not in sealed.data
    assert first.data != second.data, "a random nonce per payload"
    assert await sealer.decode([first, second]) == [original, original]
    # The data converter the processes use: values in, ciphertext on the wire, values out.
    converter = codec.data_converter(codec.codec_keys(Settings(codec_key=key)))
    wire = await converter.encode([{"reason": SECRET}])
    assert SECRET.encode() not in wire[0].SerializeToString()
    assert await converter.decode(wire) == [{"reason": SECRET}]


async def test_rotation_old_keys_decrypt_the_current_one_encrypts():
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    before = codec_for(old)
    written_before = await before.encode([plain("before the rotation")])
    after = codec_for(new, old)  # NOTICEFLOW_CODEC_KEY=new, NOTICEFLOW_PREVIOUS_CODEC_KEYS=old
    assert after.key_ids == [after.key_id, before.key_id] and after.key_id != before.key_id
    assert await after.decode(written_before) == [plain("before the rotation")]
    written_after = await after.encode([plain("after")])
    assert written_after[0].metadata["encryption-key-id"] == after.key_id.encode()
    # A process still on the old key only: a clear error naming the id and both settings.
    with pytest.raises(UnknownKeyError) as refused:
        await before.decode(written_after)
    message = str(refused.value)
    assert after.key_id in message
    assert "NOTICEFLOW_CODEC_KEY" in message and "NOTICEFLOW_PREVIOUS_CODEC_KEYS" in message
    assert "\n" not in message


async def test_altered_payloads_and_swapped_key_ids_do_not_open():
    one, two = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    both = codec_for(one, two)
    (sealed,) = await both.encode([plain(SECRET)])
    cut = Payload(metadata=sealed.metadata, data=sealed.data[:-1])
    flipped = Payload(
        metadata=sealed.metadata, data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    )
    other_id = codec_for(two).key_id.encode()
    swapped = Payload(
        metadata={**sealed.metadata, "encryption-key-id": other_id}, data=sealed.data
    )  # the id is bound into the ciphertext
    no_id = Payload(metadata={"encoding": b"binary/encrypted"}, data=sealed.data)
    for bad in (cut, flipped, swapped, no_id):
        with pytest.raises(CodecError) as refused:
            await both.decode([bad])
        assert "\n" not in str(refused.value) and SECRET not in str(refused.value)


async def test_a_plain_json_payload_passes_through():
    """A raw-JSON signal sent with the Temporal CLI (no codec) still reaches the workflow."""
    sealer = codec_for(secrets.token_urlsafe(32))
    raw = Payload(metadata={"encoding": b"json/plain"}, data=b'{"customer_id": "acme"}')
    null = plain(None)
    assert await sealer.decode([raw, null]) == [raw, null]
    converter = codec.data_converter(keyring.installed())
    assert await converter.decode([raw]) == [{"customer_id": "acme"}]


async def test_failure_messages_and_stack_traces_are_encrypted_too():
    converter = codec.data_converter(keyring.installed())
    failure = Failure()
    try:
        raise ApplicationError(f"cannot mail {SECRET}", type="Refused")
    except ApplicationError as error:
        await converter.encode_failure(error, failure)
    assert SECRET.encode() not in failure.SerializeToString()
    assert failure.message == "Encoded failure" and not failure.stack_trace
    assert failure.encoded_attributes.metadata["encoding"] == b"binary/encrypted"
    back = await converter.decode_failure(failure)
    assert SECRET in str(back)


async def test_connect_without_a_codec_key_refuses_in_one_block():
    missing = Settings(codec_key=None, previous_codec_keys=[])
    with pytest.raises(InputError) as refused:
        await connect(missing)
    assert "NOTICEFLOW_CODEC_KEY is not set" in str(refused.value)
    short = Settings(codec_key="short", previous_codec_keys=["", "dev-only-insecure-secret"])
    with pytest.raises(InputError) as refused:
        await connect(short)
    assert "NOTICEFLOW_CODEC_KEY has 5 characters" in str(refused.value)
    assert "NOTICEFLOW_PREVIOUS_CODEC_KEYS" in str(refused.value)


# --- on the dev server ---------------------------------------------------------------------------


def payloads_in(message: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every Payload inside a protobuf message, with the field path that holds it."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        where = f"{path}.{field.name}"
        if field.message_type.GetOptions().map_entry:
            items = [v for v in value.values() if isinstance(v, Message)]
        elif isinstance(value, Message):
            items = [value]
        else:
            items = list(value)
        for item in items:
            if isinstance(item, Payload):
                yield where, item
            else:
                yield from payloads_in(item, where)


# The workflow.patched ids in workflows/.
PATCH_IDS = {TYPED_NOTICE_EVENTS, REMOVAL_KEEPS_EFFECT, SEND_IN_SHARDS}


def patch_marker(where: str, payload: Any) -> bool:
    """A patch marker (workflow.patched): the SDK's core writes its details itself, in clear;
    they hold the patch id and whether it is deprecated, nothing of ours."""
    if not where.startswith("EVENT_TYPE_MARKER_RECORDED"):
        return False
    try:
        details = json.loads(payload.data)
    except ValueError:
        return False
    return isinstance(details, dict) and details.get("id") in PATCH_IDS


async def test_a_notice_history_is_ciphertext_without_the_codec(dev_server_env, pool, smtp_sink):
    """A notice run by a worker with the codec: a client without it finds none of the notice's
    texts or people in any payload (search attributes aside: indexed, and ids, dates and the
    sub-processor's company name only); a client with it reads the history whole. A raw-JSON
    signal sent with the Temporal CLI, no codec, is still judged."""
    client = dev_server_env.client
    mark = uuid.uuid4().hex[:10]
    author, approver = f"Alice Author {mark}", f"Bob Approver {mark}"
    reason = f"Our counsel Jane Roe objects {mark}"
    now = datetime.now(UTC)
    spec = helpers.notice(
        now,
        notice_id=f"codec-{mark}",
        title=f"Sub-Processor Notification {mark}",
        purpose=f"Chatbots for performance management {mark}",
        opt_in=False,
        audience={"customers": ["acme", "globex"]},
        effective_at=(now + timedelta(days=35)).isoformat(),  # past globex's 30-day window
    )
    texts = [spec.title, spec.purpose, author, approver, reason]
    task_queue = f"tq-{mark}"
    await repository.upsert_customers(pool, helpers.customers())
    await repository.create_notice(pool, spec, author, now)
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    async with build_worker(client, deps, task_queue):
        handle = await client.start_workflow(
            NoticeWorkflow.run,
            NoticeInput(spec=spec, author=author),
            id=workflow_id(spec.notice_id),
            task_queue=task_queue,
        )
        approved, _ = await control.submit(
            client, pool, spec.notice_id, "approve", {"by": approver}, task_queue=task_queue
        )
        assert approved.status == "accepted", approved
        await wait_for(handle, lambda s: s.phase is Phase.window_open and s.delivered == 2)
        await handle.signal("object", {"customer_id": "acme", "reason": reason})  # SDK: sealed
        await wait_for(handle, lambda s: s.open_objections == 1 and s.pending_signals == 0)

        # Without the codec: ciphertext and key ids.
        bare = await Client.connect(
            client.service_client.config.target_host,
            namespace=client.namespace,
            data_converter=pydantic_data_converter,
        )
        history = await bare.get_workflow_handle(handle.id).fetch_history()
        found = [
            (where, payload)
            for event in history.events
            for where, payload in payloads_in(event, EventType.Name(event.event_type))
        ]
        assert len(found) > 10
        everything = b"".join(event.SerializeToString() for event in history.events)
        for text in texts:
            assert text.encode() not in everything, text
        clear = {
            where
            for where, payload in found
            if payload.metadata.get("encoding") != b"binary/encrypted"
            and "search_attributes" not in where
            and not patch_marker(where, payload)
        }
        assert not clear, f"payloads in clear: {clear}"
        assert {
            payload.metadata["encryption-key-id"]
            for where, payload in found
            if "search_attributes" not in where and not patch_marker(where, payload)
        } == {codec.EncryptionCodec.from_keyring(keyring.installed()).key_id.encode()}
        started = history.events[0].workflow_execution_started_event_attributes.input.payloads
        with pytest.raises(Exception, match="encoding"):
            await pydantic_data_converter.decode(started, [NoticeInput])

        # With the codec: the history reads whole.
        (decoded,) = await client.data_converter.decode(started, [NoticeInput])
        assert decoded.author == author and decoded.spec.title == spec.title

        # A raw-JSON signal from the Temporal CLI (no codec): passes through, and is judged.
        address = client.service_client.config.target_host
        signal = await asyncio.create_subprocess_exec(
            binary("temporal"), "workflow", "signal", "--address", address,
            "--namespace", client.namespace, "--workflow-id", handle.id, "--name", "object",
            "--input", json.dumps({"customer_id": "globex", "reason": "raw from the CLI"}),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(signal.communicate(), 60)
        assert signal.returncode == 0, err
        judged = await judged_raw(pool, spec.notice_id, "globex")
        assert (judged["action"], judged["customer_id"], judged["status"]) == (
            "object", "globex", "accepted",
        )  # fmt: skip
        status = await wait_for(handle, lambda s: s.open_objections == 2)
        assert status.rejected_signals == 0
        await handle.terminate("test over")


async def judged_raw(
    pool: Any, notice_id: str, customer_id: str, seconds: float = 60
) -> dict[str, Any]:
    """The receipt the workflow wrote for a raw signal about this customer, once judged."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    while True:
        row = await pool.fetchrow(
            "SELECT action, customer_id, status FROM intake"
            " WHERE notice_id = $1 AND customer_id = $2 AND channel = 'temporal'"
            " AND status <> 'pending'",
            notice_id,
            customer_id,
        )
        if row is not None:
            return dict(row)
        assert loop.time() < give_up, "the raw signal was not judged"
        await asyncio.sleep(0.3)


async def test_a_worker_reads_a_payload_it_cannot_decrypt_as_a_marked_empty_one():
    strict = EncryptionCodec([secrets.token_bytes(32)])
    lenient = EncryptionCodec([secrets.token_bytes(32)], lenient=True)
    (sealed,) = await strict.encode([Payload(metadata={"encoding": b"json/plain"}, data=b"{}")])
    with pytest.raises(UnknownKeyError):
        await strict.__class__([secrets.token_bytes(32)]).decode([sealed])
    (marked,) = await lenient.decode([sealed])
    assert marked.metadata["encoding"] == UNDECODABLE_ENCODING and marked.data == b""


async def test_a_signal_nobody_can_decrypt_is_a_recorded_rejection_not_a_wedge(
    dev_server_env, pool, smtp_sink
):
    """Someone with Temporal access but not our key sends a signal that claims to be encrypted
    (or a key was dropped too soon after a rotation): the workflow records it as rejected and
    goes on judging the next action, instead of failing its every task."""
    client = dev_server_env.client
    mark = uuid.uuid4().hex[:10]
    now = datetime.now(UTC)
    spec = helpers.notice(
        now,
        notice_id=f"poison-{mark}",
        opt_in=False,
        effective_at=(now + timedelta(days=35)).isoformat(),  # past globex's 30-day window
    )
    task_queue = f"tq-{mark}"
    await repository.upsert_customers(pool, helpers.customers())
    await repository.create_notice(pool, spec, "alice", now)
    deps = make_deps(pool, smtp_sink.url, "privacy@vendor.example")
    async with build_worker(client, deps, task_queue):
        handle = await helpers.start_notice_workflow(client, spec, task_queue)
        bare = await Client.connect(
            client.service_client.config.target_host,
            namespace=client.namespace,
            data_converter=pydantic_data_converter,
        )
        poison = Payload(
            metadata={"encoding": b"binary/encrypted", "encryption-key-id": b"deadbeefdeadbeef"},
            data=secrets.token_bytes(48),
        )
        await bare.get_workflow_handle(handle.id).signal("object", RawValue(poison))
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 60
        while True:
            row = await pool.fetchrow(
                "SELECT status, reason FROM intake WHERE notice_id = $1 AND channel = 'temporal'",
                spec.notice_id,
            )
            if row is not None and row["status"] != "pending":
                break
            assert loop.time() < give_up, "the undecryptable signal was never judged"
            await asyncio.sleep(0.3)
        assert row["status"] == "rejected" and "could not be decrypted" in row["reason"]
        approved, why = await control.submit(
            client, pool, spec.notice_id, "approve", {"by": "bob"}, task_queue=task_queue,
            wait_seconds=30,
        )  # fmt: skip
        assert approved.status == "accepted", (approved, why)
        await handle.terminate("test over")
