"""Connecting to Temporal with the encrypting data converter (noticeflow/codec.py: pydantic JSON,
then AES-GCM under the codec key, so Temporal keeps no personal data in clear) and the worker's
metrics runtime. What the Temporal Web UI shows about a notice is noticeflow/domain/summaries.py
(pure: the workflow uses it too)."""

from __future__ import annotations

from typing import Any

import temporalio.converter
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from noticeflow import codec, tracing
from noticeflow.config import Settings, reveal
from noticeflow.domain.errors import InputError


async def connect(
    settings: Settings, runtime: Runtime | None = None, payloads: bool = True
) -> Client:
    """A client whose payloads are encrypted with the settings' codec keys; without a usable
    NOTICEFLOW_CODEC_KEY, the keyring's InputError (every problem, one block) before connecting.
    ``payloads=False``: a client for administration only (namespaces, search attributes), which
    sends and reads no payloads and so needs no codec key."""
    converter = (
        codec.data_converter(codec.codec_keys(settings))
        if payloads
        else temporalio.converter.DataConverter.default
    )
    tls: bool | TLSConfig = False
    server_ca = settings.temporal_tls_server_ca
    if settings.temporal_tls_cert and settings.temporal_tls_key:
        tls = TLSConfig(
            client_cert=settings.temporal_tls_cert.read_bytes(),
            client_private_key=settings.temporal_tls_key.read_bytes(),
            server_root_ca_cert=server_ca.read_bytes() if server_ca else None,
            domain=settings.temporal_tls_server_name,
        )
    elif settings.temporal_api_key or server_ca or settings.temporal_tls_server_name:
        tls = TLSConfig(
            server_root_ca_cert=server_ca.read_bytes() if server_ca else None,
            domain=settings.temporal_tls_server_name,
        )
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=reveal(settings.temporal_api_key),
        tls=tls,
        data_converter=converter,
        runtime=runtime,
        # Tracing (off unless NOTICEFLOW_OTLP_ENDPOINT): a worker built on this client traces too.
        interceptors=tracing.interceptors(settings.otlp_endpoint),
    )


def metrics_runtime(bind_address: str) -> Runtime:
    """A Temporal runtime that serves the SDK's metrics (workflow and activity task latencies,
    poll results, sticky cache, RPC errors...) for Prometheus at http://<bind_address>/metrics."""
    try:
        return Runtime(
            telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind_address))
        )
    except Exception as error:  # e.g. the port is taken: say which setting to change
        raise InputError(
            f"cannot serve the worker's metrics on {bind_address} ({error});"
            " change or unset NOTICEFLOW_WORKER_METRICS_ADDRESS"
        ) from None


# --- the Temporal Web UI: what a notice's workflow says about itself --------------------------
# Counts, ids, dates and the sub-processor's legal name only: never a contact, a person's name
# or free text (the workflow's own summaries and details are in workflows/notice.py).


async def register_search_attributes(client: Client) -> list[str]:
    """Register the contract's search attributes (idempotent: existing ones are left alone).
    Returns the names it added."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    from noticeflow.search_attributes import ALL

    kinds = {
        "KEYWORD": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "DATETIME": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
        "INT": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    }
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        existing = set(listed.custom_attributes)
    except RPCError as error:  # the time-skipping test server cannot list, only add
        if error.status is not RPCStatusCode.UNIMPLEMENTED:
            raise
        existing = set()
    missing = {
        key.name: kinds[key.indexed_value_type.name.removeprefix("INDEXED_VALUE_TYPE_")]
        for key in ALL
        if key.name not in existing
    }
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
            )
        except RPCError as error:
            if error.status is not RPCStatusCode.ALREADY_EXISTS:
                raise
    return sorted(missing)


# --- `noticeflow temporal setup` ------------------------------------------------------------------


def _attribute_words() -> str:
    from noticeflow.search_attributes import ALL

    kinds = {"KEYWORD": "Keyword", "DATETIME": "Datetime", "INT": "Int"}
    return ", ".join(
        f"{key.name} ({kinds[key.indexed_value_type.name.removeprefix('INDEXED_VALUE_TYPE_')]})"
        for key in ALL
    )


async def setup_namespace(
    settings: Settings, namespace: str, retention_days: int, create: bool
) -> dict[str, Any]:
    """Make ``namespace`` ready for noticeflow: registered (with ``retention_days`` of closed
    histories) when missing and ``create``, and the contract's search attributes added.
    Idempotent: a second run changes nothing and says so. Temporal Cloud creates namespaces and
    search attributes in its own console or API: a refusal says what to create there."""
    from google.protobuf.duration_pb2 import Duration
    from temporalio.api.workflowservice.v1 import (
        DescribeNamespaceRequest,
        RegisterNamespaceRequest,
    )

    try:
        client = await connect(
            settings.model_copy(update={"temporal_namespace": namespace}), payloads=False
        )
    except RuntimeError as error:  # refused, unresolvable, TLS handshake: one line, no trace
        reason = str(error).removeprefix("Failed client connect: ")
        raise InputError(
            f"cannot reach Temporal at {settings.temporal_address}: {reason}"
        ) from None
    created = False

    async def kept_days() -> int:
        """The namespace's retention, waiting out a frontend that is not serving yet (a cluster
        just started answers UNAVAILABLE for a while): at most a minute."""
        import asyncio

        for attempt in range(60):
            try:
                described = await client.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace=namespace)
                )
                return int(described.config.workflow_execution_retention_ttl.ToTimedelta().days)
            except RPCError as error:
                if error.status is not RPCStatusCode.UNAVAILABLE or attempt == 59:
                    raise
                await asyncio.sleep(1)
        raise AssertionError("unreachable")

    try:
        retention = await kept_days()
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
        if not create:
            raise InputError(
                f"Temporal namespace {namespace!r} does not exist; create it (run this without"
                " --no-create, or in Temporal Cloud's console) and run this again"
            ) from None
        try:
            await client.workflow_service.register_namespace(
                RegisterNamespaceRequest(
                    namespace=namespace,
                    workflow_execution_retention_period=Duration(seconds=retention_days * 86400),
                    description="noticeflow: one workflow per sub-processor notice",
                )
            )
        except RPCError as refused:
            if refused.status is RPCStatusCode.ALREADY_EXISTS:
                pass  # created meanwhile by someone else: fine (its retention read below)
            elif refused.status in (
                RPCStatusCode.PERMISSION_DENIED,
                RPCStatusCode.UNIMPLEMENTED,
                RPCStatusCode.UNAUTHENTICATED,
            ):
                raise InputError(
                    f"Temporal namespace {namespace!r} does not exist and this server does not"
                    f" let noticeflow create it ({refused.message}); on Temporal Cloud create it"
                    " in the console (or with tcld) and run this again"
                ) from None
            else:
                raise
        else:
            created = True
        retention = retention_days if created else await kept_days()
    added = await _add_attributes_when_ready(client, created)
    from noticeflow.search_attributes import ALL

    return {
        "namespace": namespace,
        "address": settings.temporal_address,
        "namespace_created": created,
        "retention_days": retention,
        "search_attributes_added": added,
        "search_attributes": sorted(key.name for key in ALL),
    }


async def _add_attributes_when_ready(client: Client, just_created: bool) -> list[str]:
    """A namespace registered a moment ago is not served everywhere at once: retry briefly."""
    import asyncio

    for attempt in range(30 if just_created else 1):
        try:
            return await register_search_attributes(client)
        except RPCError as error:
            if error.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
                raise InputError(
                    f"this server does not let noticeflow add search attributes to namespace"
                    f" {client.namespace!r} ({error.message}); add them (on Temporal Cloud: in"
                    f" the namespace's settings): {_attribute_words()}"
                ) from None
            if error.status is not RPCStatusCode.NOT_FOUND or attempt == 29 or not just_created:
                raise
            await asyncio.sleep(1)
    raise AssertionError("unreachable")
