"""`noticeflow temporal setup` against a real Temporal dev server: a missing namespace is
registered with its retention and the contract's search attributes; a second run changes nothing
and says so; --no-create refuses a missing namespace in one line; nothing but ids is printed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client

from noticeflow import search_attributes


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noticeflow.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_setup_registers_a_namespace_and_its_search_attributes_once(
    dev_server_env, tmp_path: Path
):
    address = dev_server_env.client.service_client.config.target_host
    env = {
        **os.environ,
        "NOTICEFLOW_TEMPORAL_ADDRESS": address,
        "NOTICEFLOW_DATA_DIR": str(tmp_path / "data"),
    }
    namespace = f"nf-setup-{uuid.uuid4().hex[:8]}"
    code, out, err = await _cli(
        env, "temporal", "setup", "--namespace", namespace, "--retention-days", "45", "--json"
    )
    assert code == 0, err
    done = json.loads(out)
    names = sorted(key.name for key in search_attributes.ALL)
    assert done == {
        "namespace": namespace,
        "address": address,
        "namespace_created": True,
        "retention_days": 45,
        "search_attributes_added": names,
        "search_attributes": names,
    }
    client = await Client.connect(address, namespace=namespace)
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=namespace)
    )
    assert described.config.workflow_execution_retention_ttl.ToTimedelta().days == 45
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    assert set(names) <= set(listed.custom_attributes)

    # Again: nothing to do, and it says so. Without any of noticeflow's keys: the platform team
    # may prepare Temporal before it has them (setup sends no payloads, so needs no codec key).
    keyless = {k: v for k, v in env.items() if not k.startswith("NOTICEFLOW_") or "KEY" not in k}
    assert "NOTICEFLOW_CODEC_KEY" not in keyless
    code, out, err = await _cli(keyless, "temporal", "setup", "--namespace", namespace)
    assert code == 0, err
    assert out.splitlines() == [
        f"namespace {namespace} at {address}: exists (completed histories kept 45 days)",
        "search attributes already there: " + ", ".join(names),
    ]

    # A missing namespace without --create: refused in one line, nothing registered.
    missing = f"nf-missing-{uuid.uuid4().hex[:8]}"
    code, out, err = await _cli(env, "temporal", "setup", "--namespace", missing, "--no-create")
    assert code == 2 and out == ""
    assert err.strip() == (
        f"error: Temporal namespace {missing!r} does not exist; create it (run this without"
        " --no-create, or in Temporal Cloud's console) and run this again"
    )


async def test_setup_against_nothing_says_so_in_one_line(tmp_path: Path):
    from noticeflow.sink import free_port

    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NOTICEFLOW_")},
        "NOTICEFLOW_TEMPORAL_ADDRESS": address,
        "NOTICEFLOW_DATA_DIR": str(tmp_path / "data"),
    }
    code, out, err = await _cli(env, "temporal", "setup")
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: cannot reach Temporal at {address}: ") and "refused" in line
