"""The keys of a bench run (noticeflow/keyring.py): made once per run unless the environment has
them, put in the environment so that the worker processes a bench starts share them, and installed
in this process (sealing, signed heads, the Temporal payload codec)."""

from __future__ import annotations

import os
import secrets

from noticeflow import codec, keyring
from noticeflow.config import Settings

for _setting in ("secret_key", "codec_key", "key_encryption_key", "signing_key"):
    os.environ.setdefault(f"NOTICEFLOW_{_setting.upper()}", secrets.token_urlsafe(32))

KEYS = keyring.install(keyring.from_settings(Settings()))
CONVERTER = codec.data_converter(KEYS)  # payloads encrypted as in production
