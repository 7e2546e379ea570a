"""Configuration: NOTICEFLOW_ environment variables, falling back to <data dir>/stack.json.

`noticeflow up` writes stack.json naming every part it started; any other command run with the same
data dir uses those addresses where the matching NOTICEFLOW_ variable is unset.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from noticeflow.domain.errors import InputError, describe_validation_error
from noticeflow.mail import GIVE_UP_AFTER

STACK_FILE = "stack.json"
SECRET_FILE = "secret_key"  # written by `noticeflow up`: the data dir's own link-signing key
# stack.json key -> settings field it provides
STACK_KEYS = {
    "temporal_address": "temporal_address",
    "database_url": "database_url",
    "smtp_url": "smtp_url",
    "web_url": "public_url",
    "temporal_ui_url": "temporal_ui_url",
}


def default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "noticeflow"


DEV_SECRET_KEY = "dev-only-insecure-secret"  # fine under `noticeflow up`; the worker warns


def _seconds_or_duration(value: Any) -> Any:
    """A bare number is seconds ("259200"); anything else is read as a duration (ISO 8601 such as
    "PT72H" or "P3D", or "72:00:00")."""
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+(\.[0-9]+)?\s*", value):
        return float(value)
    return value


Seconds = Annotated[timedelta, BeforeValidator(_seconds_or_duration)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTICEFLOW_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_api_key: str | None = None
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    task_queue: str = "noticeflow"
    database_url: str | None = None
    smtp_url: str | None = None
    mail_from: str = "privacy@noticeflow.localhost"
    secret_key: str = DEV_SECRET_KEY
    public_url: str = "http://127.0.0.1:8080"
    web_token: str | None = None  # bearer token for every ops route (scripts)
    # Link-signing keys still accepted after a rotation (comma-separated; the current one signs).
    previous_secret_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8080, ge=0, le=65535)
    temporal_ui_url: str | None = None  # links from the dashboard to the workflow
    # OpenID Connect sign-in, on when an issuer is set (discovery at <issuer>/.well-known/...).
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_role_claim: str = "noticeflow_role"  # a claim naming the role; absent: oidc_default_role
    oidc_default_role: str = "viewer"
    # Customer action pages: requests per minute per link and per client address.
    # How long a customer's POST waits for its receipt to be judged before the receipt page
    # shows it pending (the page then refreshes itself).
    link_wait_seconds: float = Field(default=5.0, ge=0, le=30)
    link_rate_per_token: int = Field(default=30, ge=1)
    link_rate_per_client: int = Field(default=120, ge=1)
    template_dir: Path | None = None
    send_batch_size: int = Field(default=200, ge=1, le=5000)
    smtp_concurrency: int = Field(default=4, ge=1, le=64)  # SMTP connections per sending activity
    smtp_rate: float | None = Field(
        default=None, gt=0
    )  # messages per second per worker; None: no limit
    # A contact that still gets only 4xx replies this long after its first attempt is recorded as
    # failed for good (its customer becomes `undelivered` unless another contact got the mail).
    smtp_give_up_after: Seconds = Field(default=GIVE_UP_AFTER, gt=timedelta(0))
    # host:port where the worker serves the Temporal SDK's Prometheus metrics; unset: not served.
    worker_metrics_address: str | None = None
    # --- keys (noticeflow/keyring.py checks them; `noticeflow up` makes its own) ---------------
    # Encrypts every Temporal payload (noticeflow/codec.py); the previous ones still decrypt.
    codec_key: str | None = None
    previous_codec_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Wraps each customer's key in PostgreSQL (a KMS-shaped interface, local implementation).
    key_encryption_key: str | None = None
    previous_key_encryption_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Signs event-stream heads and evidence-pack manifests: a key the database never sees.
    signing_key: str | None = None
    previous_signing_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The role that owns the schema and runs migrations; `database_url` is the runtime role,
    # which may only INSERT and SELECT on the event store. Unset: migrations use database_url.
    owner_database_url: str | None = None

    @field_validator(
        "previous_secret_keys",
        "previous_codec_keys",
        "previous_key_encryption_keys",
        "previous_signing_keys",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("worker_metrics_address")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        host, _, port = value.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port (e.g. 127.0.0.1:9464), not {value!r}")
        return value.strip()

    @property
    def verification_keys(self) -> list[str]:
        """The current link-signing key first, then the ones it replaced."""
        return [self.secret_key, *(k for k in self.previous_secret_keys if k != self.secret_key)]

    @property
    def stack_file(self) -> Path:
        return self.data_dir / STACK_FILE

    def require_database_url(self) -> str:
        if not self.database_url:
            raise InputError(
                "no database: set NOTICEFLOW_DATABASE_URL, or run `noticeflow up` with the same "
                f"data dir ({self.data_dir})"
            )
        return self.database_url

    def require_smtp_url(self) -> str:
        if not self.smtp_url:
            raise InputError("no mail server: set NOTICEFLOW_SMTP_URL (smtp://host:port)")
        return self.smtp_url


def ensure_secret_key(data_dir: Path) -> str:
    """The data dir's link-signing key, made on first use (random, readable by its owner only),
    so that links mailed by `noticeflow up` are neither signed with a public key nor invalidated
    by a restart."""
    path = data_dir / SECRET_FILE
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def read_stack(data_dir: Path) -> dict[str, Any]:
    path = data_dir / STACK_FILE
    if not path.exists():
        return {}
    try:
        loaded = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON: {error}") from None
    return loaded if isinstance(loaded, dict) else {}


def load_settings(data_dir: Path | None = None, **overrides: Any) -> Settings:
    """Environment first; stack.json fills whatever the environment leaves unset."""
    try:
        base = Settings(data_dir=data_dir) if data_dir else Settings()
        stack = read_stack(base.data_dir)
        filled: dict[str, Any] = {}
        for stack_key, field in STACK_KEYS.items():
            env_name = f"NOTICEFLOW_{field.upper()}"
            if stack.get(stack_key) and env_name not in os.environ:
                filled[field] = stack[stack_key]
        if stack.get("smtp_host") and "NOTICEFLOW_SMTP_URL" not in os.environ:
            filled["smtp_url"] = f"smtp://{stack['smtp_host']}:{stack['smtp_port']}"
        secret = base.data_dir / SECRET_FILE
        if "NOTICEFLOW_SECRET_KEY" not in os.environ and secret.exists():
            filled["secret_key"] = secret.read_text().strip()
        return base.model_copy(update={**filled, **overrides})
    except ValidationError as error:
        raise InputError(describe_validation_error(error, "configuration")) from None
