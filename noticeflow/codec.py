"""Every Temporal payload encrypted: what Temporal keeps (histories, the Web UI, the CLI's output)
is ciphertext plus a key id, never a name, an address or a customer's words.

:class:`EncryptionCodec` is a Temporal ``PayloadCodec``: the whole serialized payload (its metadata
and data) is sealed with AES-256-GCM under the codec key (``NOTICEFLOW_CODEC_KEY``, derived by
noticeflow/keyring.py) and a random 12-byte nonce, and replaced by a payload whose metadata says
``encoding: binary/encrypted`` and names the key (``encryption-key-id``, a public id that reveals
nothing of the key). The codec runs in the client and the worker, outside the workflow sandbox, and
the history keeps the encoded bytes, so a random nonce costs replay nothing.

Rotation: the current key encrypts; it and every key in ``NOTICEFLOW_PREVIOUS_CODEC_KEYS`` decrypt.
A payload without ``binary/encrypted`` passes through decode unchanged: a raw-JSON signal sent with
the Temporal CLI (without our codec server) still reaches the workflow, which records it as any
other action (the documented exception: that one signal's JSON stays in the history as sent).

:func:`data_converter` is the pydantic data converter with this codec and a failure converter that
moves failure messages and stack traces into an encoded attribute, so they are encrypted too.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from noticeflow import keyring
from noticeflow.contracts import UNDECODABLE_ENCODING
from noticeflow.keyring import Keyring

_log = structlog.get_logger(__name__)

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
PURPOSE, USE = "codec", "payloads"
# Bound into every ciphertext: a payload sealed for something else, or whose key id was swapped,
# does not open.
_AAD = b"noticeflow/codec/v1\x1f"


class CodecError(ValueError):
    """A payload this process cannot decrypt; the message says why in one line."""


class UnknownKeyError(CodecError):
    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(
            f"a Temporal payload is encrypted with codec key id {key_id!r}, which is none of this"
            f" process's codec keys: set NOTICEFLOW_CODEC_KEY to that key, or add it to"
            f" NOTICEFLOW_PREVIOUS_CODEC_KEYS (comma-separated) after a rotation"
        )


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole payloads; ``keys`` are 32-byte keys, the current (encrypting) first."""

    def __init__(self, keys: Sequence[bytes], lenient: bool = False) -> None:
        """``lenient``: a payload that does not decrypt (unknown key id, altered) decodes to an
        empty payload marked :data:`UNDECODABLE_ENCODING` instead of raising, with one log line.
        A worker's converter is lenient, so that a signal nobody can read (sent by someone
        without our key, or under a key dropped too soon) is recorded as rejected by the
        workflow instead of failing its every task; anything else the workflow cannot read
        still fails its task (the converter refuses the marker). The codec server is strict."""
        super().__init__()
        self.lenient = lenient
        if not keys:
            raise ValueError("EncryptionCodec needs at least one key")
        if any(len(key) != 32 for key in keys):
            raise ValueError("EncryptionCodec keys are 32 bytes (AES-256)")
        self._ciphers = {Keyring.key_id(key): AESGCM(key) for key in keys}
        self.key_id = Keyring.key_id(keys[0])  # the one that encrypts

    @classmethod
    def from_keyring(cls, keys: Keyring) -> EncryptionCodec:
        return cls(keys.material(PURPOSE, USE))

    @classmethod
    def from_settings(cls, settings: Any) -> EncryptionCodec:
        """The codec for these settings, or the keyring's InputError (one readable block)."""
        return cls.from_keyring(codec_keys(settings))

    @property
    def key_ids(self) -> list[str]:
        """Every key id this codec decrypts, the current first."""
        return list(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if not self.lenient:
            return [self.decrypt(payload) for payload in payloads]
        return [self._decrypt_or_mark(payload) for payload in payloads]

    def _decrypt_or_mark(self, payload: Payload) -> Payload:
        try:
            return self.decrypt(payload)
        except CodecError as error:  # its text names a key id at most, never a payload
            _log.error("a Temporal payload does not decrypt", reason=str(error)[:300])
            return Payload(metadata={"encoding": UNDECODABLE_ENCODING}, data=b"")

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.key_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(
            nonce, payload.SerializeToString(deterministic=True), _AAD + key_id.encode()
        )
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: key_id.encode()}, data=nonce + sealed
        )

    def decrypt(self, payload: Payload) -> Payload:
        """The payload as it was before :meth:`encrypt`; one not encrypted passes unchanged."""
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID, b"").decode("ascii", "replace")
        if not key_id:
            raise CodecError(
                f"a Temporal payload marked {ENCODING.decode()} has no {KEY_ID}: it was not"
                " written by noticeflow's codec"
            )
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownKeyError(key_id[:64])
        data = payload.data
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], _AAD + key_id.encode())
        except InvalidTag:
            raise CodecError(
                f"a Temporal payload encrypted with codec key id {key_id!r} does not decrypt:"
                " it was altered or cut"
            ) from None
        try:
            return Payload.FromString(plain)
        except Exception:  # authenticated, so only a different writer gets here
            raise CodecError(
                f"a Temporal payload encrypted with codec key id {key_id!r} is not a payload"
            ) from None


def data_converter(keys: Keyring) -> DataConverter:
    """The pydantic data converter with payloads, failure messages and stack traces encrypted."""
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keys.material(PURPOSE, USE), lenient=True),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def codec_keys(settings: Any) -> Keyring:
    """The codec's keyring from settings, or the keyring's InputError naming every problem."""
    return keyring.from_settings(settings, [PURPOSE])


__all__ = [
    "ENCODING",
    "KEY_ID",
    "CodecError",
    "EncryptionCodec",
    "UnknownKeyError",
    "codec_keys",
    "data_converter",
]
