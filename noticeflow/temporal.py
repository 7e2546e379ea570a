"""Connecting to Temporal with the encrypting data converter (noticeflow/codec.py: pydantic JSON,
then AES-GCM under the codec key, so Temporal keeps no personal data in clear) and the worker's
metrics runtime. What the Temporal Web UI shows about a notice is noticeflow/domain/summaries.py
(pure: the workflow uses it too)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from noticeflow import codec
from noticeflow.config import Settings, reveal
from noticeflow.domain.errors import InputError


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A client whose payloads are encrypted with the settings' codec keys; without a usable
    NOTICEFLOW_CODEC_KEY, the keyring's InputError (every problem, one block) before connecting."""
    converter = codec.data_converter(codec.codec_keys(settings))
    tls: bool | TLSConfig = False
    if settings.temporal_tls_cert and settings.temporal_tls_key:
        tls = TLSConfig(
            client_cert=settings.temporal_tls_cert.read_bytes(),
            client_private_key=settings.temporal_tls_key.read_bytes(),
        )
    elif settings.temporal_api_key:
        tls = True
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=reveal(settings.temporal_api_key),
        tls=tls,
        data_converter=converter,
        runtime=runtime,
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


async def register_search_attributes(client: Client) -> None:
    """Register the contract's search attributes (idempotent: existing ones are left alone)."""
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
