"""`noticeflow codec-server` over real HTTP (uvicorn on a free port): Temporal's remote codec
protocol for the Web UI and the Temporal CLI, with a payload taken from a real dev-server history;
CORS for the UI's origin only, the bearer token and namespace enforced, bad bodies a one-line 4xx,
and logs with counts and key ids only."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import structlog
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import WorkflowHandle

from noticeflow import codec, codec_server, keyring
from noticeflow.binaries import binary
from noticeflow.codec import EncryptionCodec
from noticeflow.config import Settings
from noticeflow.contracts import NoticeInput, workflow_id
from noticeflow.sink import free_port
from tests import helpers
from workflows.notice import NoticeWorkflow

TOKEN = secrets.token_urlsafe(32)
UI = "http://127.0.0.1:8233"
AUTHOR = f"Alice Author {uuid.uuid4().hex[:8]}"


@dataclass
class Served:
    url: str
    namespace: str
    handle: WorkflowHandle[Any, Any]
    address: str
    title: str
    started_input: Payload  # encrypted, as the history keeps it

    def headers(self, **extra: str) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "X-Namespace": self.namespace,
            "Authorization": f"Bearer {TOKEN}",
            **extra,
        }


def body(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


def payloads_of(response: httpx.Response) -> list[Payload]:
    return list(json_format.Parse(response.text, Payloads()).payloads)


@pytest.fixture(scope="module")
async def served(dev_server_env: Any) -> AsyncIterator[Served]:
    """The codec server with a token, and a notice's workflow started (no worker needed: its
    history's first event carries the encrypted input)."""
    client = dev_server_env.client
    mark = uuid.uuid4().hex[:8]
    spec = helpers.notice(
        datetime.now(UTC), notice_id=f"codec-srv-{mark}", title=f"Notification {mark}"
    )
    handle = await client.start_workflow(
        NoticeWorkflow.run,
        NoticeInput(spec=spec, author=AUTHOR),
        id=workflow_id(spec.notice_id),
        task_queue=f"nobody-{mark}",
    )
    history = await handle.fetch_history()
    (started_input,) = history.events[0].workflow_execution_started_event_attributes.input.payloads
    assert started_input.metadata["encoding"] == b"binary/encrypted"
    settings = Settings(
        temporal_namespace=client.namespace, temporal_ui_url=UI, codec_server_token=TOKEN
    )
    stop = asyncio.Event()
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        codec_server.serve(settings, "127.0.0.1", free_port(), stop, token=TOKEN, started=started)
    )
    url = await asyncio.wait_for(started, 30)
    yield Served(
        url, client.namespace, handle, client.service_client.config.target_host, spec.title,
        started_input,
    )  # fmt: skip
    stop.set()
    await task
    await handle.terminate("test over")


async def test_decodes_a_payload_from_a_real_history(served: Served):
    with structlog.testing.capture_logs() as logs:
        async with httpx.AsyncClient(base_url=served.url) as http:
            answer = await http.post(
                "/decode", content=body(served.started_input), headers=served.headers()
            )
            assert answer.status_code == 200, answer.text
            (decoded,) = payloads_of(answer)
            assert decoded.metadata["encoding"] == b"json/plain"
            value = json.loads(decoded.data)
            assert value["author"] == AUTHOR and value["spec"]["title"] == served.title
            # /encode and back: what the UI would send (a signal typed in the UI, say).
            plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"by": "Bob"}')
            encoded = await http.post("/encode", content=body(plain), headers=served.headers())
            (sealed,) = payloads_of(encoded)
            assert sealed.metadata["encoding"] == b"binary/encrypted" and b"Bob" not in sealed.data
            back = await http.post("/decode", content=body(sealed), headers=served.headers())
            assert payloads_of(back) == [plain]
            empty = await http.post("/decode", content="{}", headers=served.headers())
            assert empty.json() == {"payloads": []}
    assert [entry["event"] for entry in logs] == ["codec.decode", "codec.encode"] + [
        "codec.decode"
    ] * 2
    assert logs[0]["payloads"] == 1 and len(logs[0]["key_ids"]) == 1
    assert AUTHOR not in repr(logs) and served.title not in repr(logs)


async def test_cors_preflight_answers_the_temporal_ui_only(served: Served):
    async with httpx.AsyncClient(base_url=served.url) as http:
        for origin in (UI, "http://localhost:8233"):  # a loopback UI, either name
            answer = await http.options(
                "/decode",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type,x-namespace",
                },
            )
            assert answer.status_code == 204
            assert answer.headers["access-control-allow-origin"] == origin
            assert "POST" in answer.headers["access-control-allow-methods"]
            allowed = answer.headers["access-control-allow-headers"]
            assert "x-namespace" in allowed and "content-type" in allowed
        # The UI's actual request gets the header too, so the browser hands it the answer.
        ok = await http.post(
            "/decode", content=body(served.started_input), headers=served.headers(Origin=UI)
        )
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == UI
        elsewhere = "http://evil.example"
        refused = await http.options(
            "/decode", headers={"Origin": elsewhere, "Access-Control-Request-Method": "POST"}
        )
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers
        assert "NOTICEFLOW_CODEC_CORS_ORIGINS" in refused.text
        # Not only the preflight: a request carrying another origin is refused outright.
        posted = await http.post(
            "/decode",
            content=body(served.started_input),
            headers=served.headers(Origin=elsewhere),
        )
        assert posted.status_code == 403 and AUTHOR not in posted.text


async def test_the_token_and_the_namespace_are_required(served: Served):
    data = body(served.started_input)
    async with httpx.AsyncClient(base_url=served.url) as http:
        for authorization in (None, "Bearer wrong", f"Basic {TOKEN}", TOKEN):
            headers = served.headers()
            if authorization is None:
                del headers["Authorization"]
            else:
                headers["Authorization"] = authorization
            answer = await http.post("/decode", content=data, headers=headers)
            assert answer.status_code == 401, authorization
            assert answer.headers["www-authenticate"] == "Bearer"
            assert "NOTICEFLOW_CODEC_SERVER_TOKEN" in answer.text and AUTHOR not in answer.text
        accepted = await http.post(
            "/decode", content=data, headers=served.headers(Authorization=f"bearer {TOKEN}")
        )
        assert accepted.status_code == 200
        no_namespace = served.headers()
        del no_namespace["X-Namespace"]
        missing = await http.post("/decode", content=data, headers=no_namespace)
        assert missing.status_code == 400 and "X-Namespace" in missing.text
        other = await http.post(
            "/decode", content=data, headers=served.headers(**{"X-Namespace": "other"})
        )
        assert other.status_code == 403 and "namespace" in other.text


async def test_bad_bodies_get_one_line_never_a_traceback(served: Served):
    stranger = await EncryptionCodec([secrets.token_bytes(32)]).encode([served.started_input])
    altered = Payload(
        metadata=served.started_input.metadata, data=served.started_input.data[:-1] + b"\0"
    )
    cases: list[tuple[str | bytes, int, str]] = [
        ("", 400, "not JSON"),
        (b"\xff\xfe", 400, "not JSON"),
        ("[1, 2]", 400, "JSON object"),
        ('{"payloads": 3}', 400, "not Temporal payloads"),
        ('{"payloads": [{"data": 7}]}', 400, "not Temporal payloads"),
        ('{"nothing": []}', 400, "not Temporal payloads"),
        ("[" * 100_000 + "]" * 100_000, 400, "not JSON"),  # too deep to parse
        ('{"payloads": [' + ",".join(["{}"] * 10_001) + "]}", 400, "more than 10000"),
        (body(*stranger), 400, "codec key id"),
        (body(altered), 400, "does not decrypt"),
        (" " * (codec_server.MAX_BODY_BYTES + 1), 413, "body over"),
    ]
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        for data, status, says in cases:
            answer = await http.post("/decode", content=data, headers=served.headers())
            assert answer.status_code == status, (data[:40], answer.text)
            assert says in answer.text and answer.text.count("\n") == 1, answer.text
            assert "Traceback" not in answer.text
        unknown = await http.post("/decode", content=body(*stranger), headers=served.headers())
        stranger_id = stranger[0].metadata["encryption-key-id"].decode()
        assert stranger_id in unknown.text and "NOTICEFLOW_PREVIOUS_CODEC_KEYS" in unknown.text
        form = await http.post(
            "/decode",
            content=body(served.started_input),
            headers=served.headers(**{"Content-Type": "text/plain"}),
        )
        assert form.status_code == 400 and "application/json" in form.text
        assert (await http.get("/decode")).status_code == 405


async def test_the_temporal_cli_shows_decoded_history_through_it(served: Served):
    async def show(*extra: str) -> str:
        process = await asyncio.create_subprocess_exec(
            binary("temporal"), "workflow", "show", "--workflow-id", served.handle.id,
            "--address", served.address, "--namespace", served.namespace, "--output", "json",
            *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        return out.decode()

    def texts(shown: str) -> str:
        """The output with every payload's data base64-decoded (as the CLI prints it)."""
        decoded = []
        for data in re.findall(r'"data":\s*"([A-Za-z0-9+/=]+)"', shown):
            decoded.append(base64.b64decode(data).decode("utf-8", "replace"))
        return shown + "\n".join(decoded)

    bare = texts(await show())
    assert AUTHOR not in bare and served.title not in bare
    through = texts(await show("--codec-endpoint", served.url, "--codec-auth", f"Bearer {TOKEN}"))
    assert AUTHOR in through and served.title in through


async def test_it_refuses_to_start_without_a_token_off_loopback_or_without_keys():
    settings = Settings(temporal_ui_url=UI, codec_cors_origins=["not an origin"])
    _, problems = codec_server.check(settings, "0.0.0.0", None)
    assert any("NOTICEFLOW_CODEC_SERVER_TOKEN is not set" in p for p in problems)
    assert any("NOTICEFLOW_CODEC_CORS_ORIGINS" in p for p in problems)
    _, loopback = codec_server.check(Settings(), "127.0.0.1", None)
    assert loopback == []
    _, weak = codec_server.check(Settings(), "0.0.0.0", "letmein")
    assert any("NOTICEFLOW_CODEC_SERVER_TOKEN has 7 characters" in p for p in weak)
    # The command: every problem at once, one line, exit 2.
    env = {
        **os.environ,
        "NOTICEFLOW_CODEC_KEY": "short",
        "NOTICEFLOW_CODEC_SERVER_TOKEN": "",
        "NOTICEFLOW_DATA_DIR": "/nonexistent/noticeflow-codec-test",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noticeflow.cli", "codec-server", "--host", "0.0.0.0",
        "--port", str(free_port()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    text = err.decode()
    assert process.returncode == 2, text
    assert text.count("\n") == 1 and "Traceback" not in text
    assert "NOTICEFLOW_CODEC_KEY has 5 characters" in text
    assert "NOTICEFLOW_CODEC_SERVER_TOKEN is not set" in text


async def test_a_signal_sent_with_the_temporal_cli_through_it_is_encrypted(served: Served):
    """`temporal workflow signal --codec-endpoint`: the CLI encodes the input through /encode, so
    even a hand-typed signal reaches the history as ciphertext (without it: the raw-JSON exception,
    tests/test_codec.py)."""
    reason = f"typed by {AUTHOR}"
    process = await asyncio.create_subprocess_exec(
        binary("temporal"), "workflow", "signal", "--workflow-id", served.handle.id,
        "--address", served.address, "--namespace", served.namespace, "--name", "object",
        "--input", json.dumps({"customer_id": "acme", "reason": reason}),
        "--codec-endpoint", served.url, "--codec-auth", f"Bearer {TOKEN}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    history = await served.handle.fetch_history()
    signalled = [
        event.workflow_execution_signaled_event_attributes
        for event in history.events
        if event.HasField("workflow_execution_signaled_event_attributes")
    ]
    (payload,) = signalled[-1].input.payloads
    assert payload.metadata["encoding"] == b"binary/encrypted"
    assert reason.encode() not in b"".join(event.SerializeToString() for event in history.events)
    (value,) = await codec.data_converter(keyring.installed()).decode([payload])
    assert value == {"customer_id": "acme", "reason": reason}
