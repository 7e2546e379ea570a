"""Customer keys: subkeys per job, sealing bound to customer and place, legacy values, keys stored
wrapped by the key-encryption key (rotation, rewrap, clear rows wrapped on load)."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import sys

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from noticeflow import crypto, keyring
from noticeflow.crypto import (
    ERASED,
    CustomerKey,
    Field,
    KeyUnavailable,
    LocalKeyWrapper,
    ensure_keys,
    load_keys,
    rewrap_keys,
)


def kek() -> bytes:
    return keyring.derive(secrets.token_urlsafe(32), "kek/wrap")


def test_each_job_has_its_own_subkey() -> None:
    root = os.urandom(32)
    key = CustomerKey("acme", root)
    subkeys = [key._enc, key._nonce, key._index, key._ids]
    assert len({root, *subkeys}) == 5
    assert CustomerKey("acme", root).seal("x.y", "hi") == key.seal("x.y", "hi")  # deterministic


def test_a_sealed_value_opens_only_for_its_customer_and_place() -> None:
    root = os.urandom(32)
    acme = CustomerKey("acme", root)
    sealed = acme.seal(Field.OBJECTION_REASON, "Jane Roe objects")
    assert acme.unseal(Field.OBJECTION_REASON, sealed) == "Jane Roe objects"
    assert acme.unseal(Field.event("objection_received", "reason"), sealed) == ERASED
    assert acme.unseal(Field.RESOLUTION_NOTE, sealed) == ERASED
    assert CustomerKey("globex", root).unseal(Field.OBJECTION_REASON, sealed) == ERASED
    assert CustomerKey("acme", os.urandom(32)).unseal(Field.OBJECTION_REASON, sealed) == ERASED
    assert crypto.open_sealed(None, Field.OBJECTION_REASON, sealed) == ERASED
    assert crypto.open_sealed(None, Field.OBJECTION_REASON, "plain") == "plain"
    # Ids and indexes are keyed: another customer (or no key) cannot recompute them.
    assert acme.index("a@acme.example") != CustomerKey("acme", os.urandom(32)).index(
        "a@acme.example"
    )
    assert acme.ident("message-id", "n1") != acme.index("message-id")


def test_values_sealed_before_subkeys_still_open() -> None:
    root = os.urandom(32)
    nonce = os.urandom(12)
    legacy = (
        "enc1:"
        + base64.b64encode(
            nonce + AESGCM(root).encrypt(nonce, b"dpo@initech.example", b"initech")
        ).decode()
    )
    key = CustomerKey("initech", root)
    assert key.unseal(Field.CONTACT_EMAIL, legacy) == "dpo@initech.example"
    assert CustomerKey("initech", os.urandom(32)).unseal(Field.CONTACT_EMAIL, legacy) == ERASED


def test_wrap_and_unwrap() -> None:
    old, new = kek(), kek()
    wrapper = LocalKeyWrapper((old,))
    root = os.urandom(32)
    kek_id, blob = wrapper.wrap("acme", root)
    assert kek_id == keyring.Keyring.key_id(old) and root not in blob
    assert wrapper.unwrap("acme", kek_id, blob) == root
    assert LocalKeyWrapper((new, old)).unwrap("acme", kek_id, blob) == root  # previous unwraps
    with pytest.raises(KeyUnavailable, match="another customer"):
        wrapper.unwrap("globex", kek_id, blob)  # the customer id is the associated data
    with pytest.raises(KeyUnavailable) as unknown:
        LocalKeyWrapper((new,)).unwrap("acme", kek_id, blob)
    message = str(unknown.value)
    assert "\n" not in message and "NOTICEFLOW_KEY_ENCRYPTION_KEY" in message
    assert "NOTICEFLOW_PREVIOUS_KEY_ENCRYPTION_KEYS" in message and kek_id in message


async def test_keys_are_stored_wrapped_only(pool) -> None:
    keys = await ensure_keys(pool, ["acme", "globex"])
    rows = await pool.fetch("SELECT * FROM customer_keys ORDER BY customer_id")
    assert [r["customer_id"] for r in rows] == ["acme", "globex"]
    current = crypto.default_wrapper().current_kek_id
    for row in rows:
        assert row["key"] is None and row["kek_id"] == current
        blob = bytes(row["wrapped"])
        # The stored blob is not the key: nothing in it opens what the key sealed.
        sealed = keys[row["customer_id"]].seal(Field.CUSTOMER_NAME, "Acme Corp")
        for start in range(len(blob) - 31):
            guess = CustomerKey(row["customer_id"], blob[start : start + 32])
            assert guess.unseal(Field.CUSTOMER_NAME, sealed) == ERASED
    again = await load_keys(pool, ["acme"])
    assert again["acme"].seal("x", "y") == keys["acme"].seal("x", "y")
    with pytest.raises(KeyUnavailable, match="NOTICEFLOW_KEY_ENCRYPTION_KEY"):
        await load_keys(pool, ["acme"], LocalKeyWrapper((kek(),)))


async def test_keys_stored_in_clear_are_wrapped_when_loaded(pool) -> None:
    root = os.urandom(32)
    await pool.execute("INSERT INTO customer_keys (customer_id, key) VALUES ('acme', $1)", root)
    sealed = CustomerKey("acme", root).seal(Field.CUSTOMER_NAME, "Acme Corp")
    keys = await load_keys(pool, ["acme"])
    assert keys["acme"].unseal(Field.CUSTOMER_NAME, sealed) == "Acme Corp"
    row = await pool.fetchrow("SELECT * FROM customer_keys WHERE customer_id = 'acme'")
    assert row["key"] is None and row["wrapped"] is not None
    assert row["kek_id"] == crypto.default_wrapper().current_kek_id
    reloaded = await load_keys(pool, ["acme"])
    assert reloaded["acme"].unseal(Field.CUSTOMER_NAME, sealed) == "Acme Corp"


async def test_rotation_and_rewrap(pool) -> None:
    old, new = kek(), kek()
    before = LocalKeyWrapper((old,))
    keys = await ensure_keys(pool, ["acme", "globex"], before)
    sealed = keys["acme"].seal(Field.CUSTOMER_NAME, "Acme Corp")
    legacy_root = os.urandom(32)
    await pool.execute(
        "INSERT INTO customer_keys (customer_id, key) VALUES ('initech', $1)", legacy_root
    )
    rotated = LocalKeyWrapper((new, old))  # the new KEK current, the old one still unwraps
    assert await rewrap_keys(pool, rotated) == {
        "wrapped": 1,
        "rewrapped": 2,
        "current": 0,
        "unavailable": 0,
    }
    assert await rewrap_keys(pool, rotated) == {
        "wrapped": 0,
        "rewrapped": 0,
        "current": 3,
        "unavailable": 0,
    }
    only_new = LocalKeyWrapper((new,))  # the old KEK can now be retired
    keys = await load_keys(pool, ["acme", "globex", "initech"], only_new)
    assert keys["acme"].unseal(Field.CUSTOMER_NAME, sealed) == "Acme Corp"
    assert keys["initech"].seal("x", "y") == CustomerKey("initech", legacy_root).seal("x", "y")
    with pytest.raises(KeyUnavailable):
        await load_keys(pool, ["acme"], before)
    # A KEK this process does not have: counted and left alone, never an InvalidTag.
    assert (await rewrap_keys(pool, LocalKeyWrapper((kek(),))))["unavailable"] == 3


async def test_no_key_is_ever_made_for_an_erased_customer(pool) -> None:
    await pool.execute("INSERT INTO customer_erasures (customer_id) VALUES ('initech')")
    keys = await ensure_keys(pool, ["acme", "initech"])
    assert set(keys) == {"acme"}
    assert await pool.fetchval("SELECT count(*) FROM customer_keys") == 1


async def test_keys_under_a_kek_this_process_lacks_are_named(pool) -> None:
    stranger, other = kek(), kek()
    await ensure_keys(pool, ["acme"])  # under the installed KEK: fine
    await ensure_keys(pool, ["globex", "initech"], LocalKeyWrapper((stranger,)))
    await ensure_keys(pool, ["umbrella"], LocalKeyWrapper((other,)))
    await pool.execute(
        "INSERT INTO customer_keys (customer_id, key) VALUES ('hooli', $1)", b"k" * 32
    )
    stranger_id, other_id = keyring.Keyring.key_id(stranger), keyring.Keyring.key_id(other)
    assert await crypto.unavailable_keks(pool) == {stranger_id: 2, other_id: 1}
    # A process that also has the stranger (a previous KEK) lacks only the other one.
    both = LocalKeyWrapper((*crypto.default_wrapper().keks, stranger))
    assert await crypto.unavailable_keks(pool, both) == {other_id: 1}
    with pytest.raises(KeyUnavailable) as refused:
        await crypto.require_keks(pool)
    message = str(refused.value)
    assert "\n" not in message and "3 customer keys" in message
    assert (
        f"{stranger_id} (2 customer keys)" in message and f"{other_id} (1 customer key)" in message
    )
    assert "NOTICEFLOW_KEY_ENCRYPTION_KEY" in message
    assert "NOTICEFLOW_PREVIOUS_KEY_ENCRYPTION_KEYS" in message
    await pool.execute("DELETE FROM customer_keys WHERE customer_id = 'umbrella'")
    await crypto.require_keks(pool, both)  # every stored key unwraps: starts


async def test_the_worker_refuses_to_start_without_a_kek_it_needs(
    pool, database_url, tmp_path
) -> None:
    stranger = kek()
    await ensure_keys(pool, ["globex"], LocalKeyWrapper((stranger,)))
    env = {
        **os.environ,
        "NOTICEFLOW_DATABASE_URL": database_url,
        "NOTICEFLOW_DATA_DIR": str(tmp_path / "data"),
        "NOTICEFLOW_TEMPORAL_ADDRESS": "127.0.0.1:9",  # never reached: refused before
        "NOTICEFLOW_SMTP_URL": "smtp://127.0.0.1:9",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noticeflow.cli", "worker",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    _out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2, err.decode()
    text = err.decode()
    assert "Traceback" not in text and keyring.Keyring.key_id(stranger) in text
    assert "1 customer key is wrapped" in text and "NOTICEFLOW_KEY_ENCRYPTION_KEY" in text


async def test_rewrap_names_the_key_encryption_keys_it_lacks(pool, database_url, tmp_path) -> None:
    stranger = kek()
    await ensure_keys(pool, ["globex"], LocalKeyWrapper((stranger,)))
    env = {
        **os.environ,
        "NOTICEFLOW_DATABASE_URL": database_url,
        "NOTICEFLOW_DATA_DIR": str(tmp_path / "data"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noticeflow.cli", "keys", "rewrap",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    _out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1, err.decode()
    assert f"({keyring.Keyring.key_id(stranger)} (1))" in err.decode()


def test_the_subkeys_are_hkdf_byte_for_byte():
    """CustomerKey extracts once and expands per job (RFC 5869): the same keys as HKDF-SHA256."""
    import os

    from noticeflow.crypto import _subkey, _subkeys

    for root in (bytes(32), b"\xff" * 32, os.urandom(32), os.urandom(32)):
        jobs = ("enc", "nonce", "index", "ids", "ü-other")
        assert _subkeys(root, *jobs) == [_subkey(root, job) for job in jobs]
