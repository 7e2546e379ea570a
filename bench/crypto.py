"""What the personal-data protections cost per operation (issue 10), on this machine.

    python bench/crypto.py [--rounds N]

Prints microseconds per operation for: the Temporal payload codec (encrypt and decrypt a 1 KiB
and a 64 KiB payload), sealing and opening a value with a customer's key, deriving a customer's
subkeys (once per customer per activity), the keyed Message-ID, unwrapping a customer key with the
key-encryption key, and signing and checking a stream head (Ed25519, once per append).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ siblings
from benchkeys import KEYS
from temporalio.api.common.v1 import Payload

from noticeflow import eventstore
from noticeflow.codec import EncryptionCodec
from noticeflow.crypto import CustomerKey, LocalKeyWrapper


def per_op(label: str, rounds: int, run: Callable[[], object]) -> None:
    run()  # warm
    start = time.perf_counter()
    for _ in range(rounds):
        run()
    micros = (time.perf_counter() - start) / rounds * 1e6
    print(f"{label:<58} {micros:9.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    rounds = parser.parse_args().rounds
    codec = EncryptionCodec(KEYS.material("codec", "payloads"))
    for size in (1024, 64 * 1024):
        payload = Payload(metadata={"encoding": b"json/plain"}, data=os.urandom(size))
        (sealed,) = asyncio.run(codec.encode([payload]))
        n = rounds if size == 1024 else rounds // 10
        per_op(
            f"codec: encrypt one {size // 1024} KiB payload", n, lambda p=payload: codec.encrypt(p)
        )
        per_op(
            f"codec: decrypt one {size // 1024} KiB payload", n, lambda s=sealed: codec.decrypt(s)
        )
    root = os.urandom(32)
    key = CustomerKey("acme", root)
    sealed_value = key.seal("customer_contacts.email", "privacy@acme.example")
    per_op(
        "customer key: derive the four subkeys (HKDF)", rounds, lambda: CustomerKey("acme", root)
    )
    per_op("customer key: seal an address", rounds, lambda: key.seal("deliveries.email", "x@y.z"))
    per_op(
        "customer key: open an address",
        rounds,
        lambda: key.unseal("customer_contacts.email", sealed_value),
    )
    per_op(
        "customer key: keyed Message-ID",
        rounds,
        lambda: key.ident("message-id", "n-1", "privacy@acme.example", "notice"),
    )
    wrapper = LocalKeyWrapper.from_keyring(KEYS)
    kek_id, blob = wrapper.wrap("acme", root)
    per_op(
        "key-encryption key: unwrap a customer key",
        rounds,
        lambda: wrapper.unwrap("acme", kek_id, blob),
    )
    head = secrets.token_bytes(32)
    signature, key_id = eventstore.sign_head("notice-n-1", 42, head)
    assert signature is not None
    public = eventstore.signing_public_keys()[str(key_id)]
    message = eventstore.head_message("notice-n-1", 42, head)
    per_op(
        "stream head: sign (Ed25519, once per append)",
        rounds // 4,
        lambda: eventstore.sign_head("notice-n-1", 42, head),
    )
    per_op(
        "stream head: check the head an append builds on",
        rounds // 4,
        lambda: eventstore.verify_signature(public, signature, message),
    )


if __name__ == "__main__":
    main()
