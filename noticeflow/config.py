"""Configuration: NOTICEFLOW_ environment variables, falling back to <data dir>/stack.json.

`noticeflow up` writes stack.json naming every part it started (never a URL the environment gave
it: those may carry passwords) and keeps its own keys in ``<data dir>/keys/`` (0600, written
atomically); any other command run with the same data dir uses those where the matching
NOTICEFLOW_ variable is unset.

Secrets are ``pydantic.SecretStr`` (they print as ``**********``): read one with :func:`reveal`.
URLs are shown through :func:`redact_url`, and error and log text through :func:`scrub`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from noticeflow import keyring
from noticeflow.domain.errors import InputError, describe_validation_error
from noticeflow.mail import GIVE_UP_AFTER

STACK_FILE = "stack.json"
KEYS_DIR = "keys"  # `noticeflow up`'s own keys, one file per setting, 0600
SECRET_FILE = "secret_key"  # where `up` kept its link key before keys/ (read, then moved)
# The settings that hold the process's keys (noticeflow/keyring.py), each a file under keys/.
KEY_SETTINGS = tuple(current for current, _ in keyring.SETTINGS.values())
# stack.json key -> settings field it provides
STACK_KEYS = {
    "temporal_address": "temporal_address",
    "database_url": "database_url",
    "smtp_url": "smtp_url",
    "web_url": "public_url",
    "temporal_ui_url": "temporal_ui_url",
    # A worker started in a second terminal sets the same Reply-To as up's.
    "reply_address": "reply_address",
}


def default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "noticeflow"


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
    temporal_api_key: SecretStr | None = None
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    # A private CA that signed the cluster's certificate (PEM), and the name to check it against
    # when it is not the address's host; unset: the system's CAs and the address's host.
    temporal_tls_server_ca: Path | None = None
    temporal_tls_server_name: str | None = None
    task_queue: str = "noticeflow"
    # database_url, owner_database_url and smtp_url may carry passwords (user:password@host). They
    # stay plain str (the drivers take them so); wherever one is shown (banner, errors, logs) it
    # goes through redact_url (the password as ***), scrub() takes their passwords out of any
    # error text (remember_secrets), and one given by the environment never goes to stack.json.
    database_url: str | None = None
    smtp_url: str | None = None
    mail_from: str = "privacy@noticeflow.localhost"
    # Signs customers' action links and web sessions. No default: the worker, the web and the CLI
    # refuse to start without a real one (`noticeflow up` makes its own, in its data dir).
    secret_key: SecretStr | None = None
    public_url: str = "http://127.0.0.1:8080"
    web_token: SecretStr | None = None  # bearer token for every ops route (scripts)
    # Link-signing keys still accepted after a rotation (comma-separated; the current one signs).
    previous_secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8080, ge=0, le=65535)
    # The reverse proxies (addresses or networks, comma-separated; "*": any) whose
    # X-Forwarded-For and X-Forwarded-Proto `noticeflow web` believes: the client address the rate
    # limits count by is then the visitor's, not the proxy's. Empty: the headers are ignored.
    web_forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(default_factory=list)
    temporal_ui_url: str | None = None  # links from the dashboard to the workflow
    # OpenID Connect sign-in, on when an issuer is set (discovery at <issuer>/.well-known/...).
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_role_claim: str = "noticeflow_role"  # a claim naming the role; absent: oidc_default_role
    oidc_default_role: str = "viewer"
    # Customer action pages: requests per minute per link and per client address.
    # How long a customer's POST waits for its receipt to be judged before the receipt page
    # shows it pending (the page then refreshes itself).
    link_wait_seconds: float = Field(default=5.0, ge=0, le=30)
    # Seconds the web's database work may take (connecting, waiting for a pooled connection, each
    # statement): a database that does not answer is a 503, not a hung page. The worker has none.
    web_db_timeout: float = Field(default=10.0, gt=0, le=300)
    link_rate_per_token: int = Field(default=30, ge=1)
    link_rate_per_client: int = Field(default=120, ge=1)
    template_dir: Path | None = None
    send_batch_size: int = Field(default=200, ge=1, le=5000)
    smtp_concurrency: int = Field(default=4, ge=1, le=64)  # SMTP connections per sending activity
    smtp_rate: float | None = Field(
        default=None, ge=0.1, le=100_000, allow_inf_nan=False
    )  # messages per second per worker; None: no limit
    # Messages per second for the relay, shared by every worker (paced in PostgreSQL); None: none.
    # (At least one message every ten seconds: a rate like 1e-9, a typo, would push the relay's
    # next slot years ahead for every worker.)
    smtp_relay_rate: float | None = Field(default=None, ge=0.1, le=100_000, allow_inf_nan=False)
    # SMTP pipelining (RFC 2920) where the relay advertises PIPELINING; false: one command at a
    # time, for a relay that advertises it but handles it badly.
    smtp_pipelining: bool = True
    # Sending shards (contracts.send_shards) one worker runs at once; the rest wait for any worker.
    send_slots: int = Field(default=2, ge=1, le=64)
    # A contact that still gets only 4xx replies this long after its first attempt is recorded as
    # failed for good (its customer becomes `undelivered` unless another contact got the mail).
    smtp_give_up_after: Seconds = Field(default=GIVE_UP_AFTER, gt=timedelta(0))
    # host:port where the worker serves the Temporal SDK's Prometheus metrics; unset: not served.
    worker_metrics_address: str | None = None
    # OpenTelemetry tracing (noticeflow/tracing.py), off unless an OTLP/HTTP collector is named,
    # e.g. http://otel-collector:4318 (spans go to <endpoint>/v1/traces).
    otlp_endpoint: str | None = None
    # --- keys (noticeflow/keyring.py checks them; `noticeflow up` makes its own) ---------------
    # Encrypts every Temporal payload (noticeflow/codec.py); the previous ones still decrypt.
    codec_key: SecretStr | None = None
    previous_codec_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Wraps each customer's key in PostgreSQL (a KMS-shaped interface, local implementation).
    key_encryption_key: SecretStr | None = None
    previous_key_encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Signs event-stream heads and evidence-pack manifests: a key the database never sees.
    signing_key: SecretStr | None = None
    previous_signing_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # `noticeflow codec-server` (noticeflow/codec_server.py): the bearer token its clients send
    # (required unless it listens on loopback only), and browser origins besides the Temporal UI's
    # (temporal_ui_url) that may call it (comma-separated).
    codec_server_token: SecretStr | None = None
    codec_cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Webhooks (docs/webhooks.md): targets on loopback, private, link-local or reserved addresses
    # are refused unless this is true (local use and tests); a delivery still failing this long
    # after its first attempt is recorded as failed and the next one proceeds.
    webhooks_allow_private: bool = False
    webhooks_give_up_after: Seconds = Field(default=timedelta(hours=24), gt=timedelta(0))
    # Replies (docs/replies.md): each customer's mails carry Reply-To <local>+<token>@<domain> of
    # this address (unset: no Reply-To, no inbound endpoint; `up --demo` sets one). The inbound
    # SMTP endpoint (`noticeflow inbound`, and `up`) listens on inbound_host:inbound_port and
    # refuses mails over inbound_max_bytes. reply_auto_act: an exact "opt in" / "object" from one
    # of the customer's listed contacts acts at once (off: every reply waits for ops).
    reply_address: str | None = None
    reply_auto_act: bool = False
    inbound_host: str = "127.0.0.1"
    inbound_port: int = Field(default=2526, ge=0, le=65535)
    inbound_max_bytes: int = Field(default=1_000_000, ge=10_000, le=50_000_000)
    # The role that owns the schema and runs migrations; `database_url` is the runtime role,
    # which may only INSERT and SELECT on the event store. Unset: migrations use database_url.
    owner_database_url: str | None = None

    @field_validator(
        "previous_secret_keys",
        "previous_codec_keys",
        "previous_key_encryption_keys",
        "previous_signing_keys",
        "codec_cors_origins",
        "web_forwarded_allow_ips",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("web_forwarded_allow_ips")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        bad = []
        for item in value:
            try:
                if item != "*":
                    ipaddress.ip_network(item, strict=False)
            except ValueError:
                bad.append(repr(item[:60]))
        if bad:
            raise ValueError(
                f"expected IP addresses or networks (10.0.0.0/8) or *, comma-separated; not an"
                f" address: {', '.join(bad)}"
            )
        return value

    @field_validator("reply_address")
    @classmethod
    def _reply_address(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from noticeflow.domain.replies import ReplyAddress

        parsed = ReplyAddress.parse(value)  # ValueError: says what is wrong
        return f"{parsed.local}@{parsed.domain}"

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"expected the collector's OTLP/HTTP base URL, e.g. http://otel-collector:4318,"
                f" not {value.strip()[:80]!r}"
            )
        return value.strip()

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        """mTLS needs both halves; one alone would silently connect without a client
        certificate. Every file named must be readable."""
        problems = []
        if (self.temporal_tls_cert is None) != (self.temporal_tls_key is None):
            problems.append(
                "NOTICEFLOW_TEMPORAL_TLS_CERT and NOTICEFLOW_TEMPORAL_TLS_KEY go together (the"
                " client certificate and its key); set both or neither"
            )
        for name, path in (
            ("NOTICEFLOW_TEMPORAL_TLS_CERT", self.temporal_tls_cert),
            ("NOTICEFLOW_TEMPORAL_TLS_KEY", self.temporal_tls_key),
            ("NOTICEFLOW_TEMPORAL_TLS_SERVER_CA", self.temporal_tls_server_ca),
        ):
            if path is not None and not os.access(path, os.R_OK):
                problems.append(f"{name}: cannot read {path}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

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
        """The current link-signing key first, then the ones it replaced (plain text: for the
        link signer and the session key only)."""
        keys = [reveal(self.secret_key), *(reveal(k) for k in self.previous_secret_keys)]
        return list(dict.fromkeys(k for k in keys if k))

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


def reveal(secret: SecretStr | str | None) -> str | None:
    """A secret setting's text (None when unset)."""
    if secret is None:
        return None
    return secret.get_secret_value() if isinstance(secret, SecretStr) else str(secret)


def install_keys(settings: Settings, purposes: Iterable[str] = keyring.PURPOSES) -> keyring.Keyring:
    """Check the keys these purposes need and make them the process's keys; an entry point calls
    this at start. A missing, public, short or patterned key is an InputError naming every
    problem at once, in one block (the CLI prints it and exits 2)."""
    found = keyring.from_settings(settings, purposes)
    remember_secrets(settings)
    return keyring.install(found)


# --- files only their owner may read --------------------------------------------------------------


def write_private(path: Path, data: bytes, *, replace: bool = True) -> bool:
    """Write ``path`` atomically, readable by its owner only from the first byte: a temporary file
    in the same directory (0600 from creation), fsync, then renamed over ``path``. With
    ``replace=False`` an existing ``path`` is kept (False is returned): two processes making the
    same file at once agree on one."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)  # fails if it exists: never overwrites
            except FileExistsError:
                return False
        _fsync_dir(path.parent)
        return True
    finally:
        temporary.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def make_private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner may enter (made, or tightened if looser)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def tighten(data_dir: Path, skip: Iterable[str] = ("postgres",)) -> None:
    """Make an existing data dir private: the dir and its subdirs 0700, its files 0600 (a data dir
    made by an older version was 0755 with 0644 files). ``skip``: subdirs that another program
    owns and guards itself (embedded PostgreSQL's cluster)."""
    make_private_dir(data_dir)
    skipped = {data_dir / name for name in skip}
    for root, dirs, files in os.walk(data_dir):
        here = Path(root)
        dirs[:] = [d for d in dirs if here / d not in skipped]
        for name in dirs:
            with contextlib.suppress(OSError):
                if (here / name).lstat().st_mode & 0o077 and not (here / name).is_symlink():
                    (here / name).chmod(0o700)
        for name in files:
            path = here / name
            with contextlib.suppress(OSError):
                if not path.is_symlink() and path.lstat().st_mode & 0o077:
                    path.chmod(0o600)


def read_key_file(data_dir: Path, setting: str) -> str | None:
    """The key `noticeflow up` keeps for ``setting`` in this data dir, or None."""
    places = [data_dir / KEYS_DIR / setting]
    if setting == "secret_key":
        places.append(data_dir / SECRET_FILE)
    for path in places:
        with contextlib.suppress(OSError):
            text = path.read_text().strip()
            if text:
                return text
    return None


def ensure_key_file(data_dir: Path, setting: str) -> str:
    """The data dir's own key for ``setting`` (e.g. ``"secret_key"``), made on first use:
    ``secrets.token_urlsafe(32)`` in ``<data dir>/keys/<setting>``, written atomically and 0600,
    and the same on every restart (links mailed before a restart keep working). A link key in the
    old place (``<data dir>/secret_key``) is moved there."""
    keys = make_private_dir(data_dir / KEYS_DIR)
    path = keys / setting
    empty = False
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text().strip()
        if existing:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
            return existing
        empty = True
    legacy = data_dir / SECRET_FILE
    value = None
    if setting == "secret_key":
        with contextlib.suppress(OSError):
            value = legacy.read_text().strip() or None
    value = value or secrets.token_urlsafe(32)
    # An empty file (a crash under the old, non-atomic writer) is replaced; a real one is kept.
    if not write_private(path, (value + "\n").encode(), replace=empty):
        return ensure_key_file(data_dir, setting)  # another process made it first: use theirs
    if setting == "secret_key":
        legacy.unlink(missing_ok=True)
    return value


def ensure_secret_key(data_dir: Path) -> str:
    """The data dir's link-signing key (see :func:`ensure_key_file`)."""
    return ensure_key_file(data_dir, "secret_key")


# --- showing URLs and error text without their secrets ---------------------------------------------

_SECRET_PARAMS = re.compile(r"pass|secret|token|key", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@:]*:)(?P<pw>[^\s@/]+)@")
_known_secrets: set[str] = set()


def redact_url(url: str | None) -> str:
    """A URL fit to show: ``postgresql://user:***@host/db`` (and ``password=***`` in its query).
    Anything that is not a readable URL is not shown at all."""
    if not url:
        return "-"
    try:
        parts = urlsplit(url)
        password = parts.password
        netloc = parts.netloc
        if password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            user = userinfo.partition(":")[0]
            netloc = f"{user}:***@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, "***" if _SECRET_PARAMS.search(k) else v) for k, v in pairs], safe="*/:"
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "(a URL that cannot be read)"


def remember_secrets(settings: Settings) -> None:
    """Note this process's secrets (URL passwords, keys, tokens) so that :func:`scrub` takes them
    out of any error or log text."""
    for field in ("database_url", "owner_database_url", "smtp_url"):
        url = getattr(settings, field, None)
        with contextlib.suppress(ValueError):
            parts = urlsplit(url) if url else None
            if parts and parts.password:
                _known_secrets.add(parts.password)
            for key, value in parse_qsl(parts.query if parts else ""):
                if _SECRET_PARAMS.search(key) and value:
                    _known_secrets.add(value)
    for _name, value in settings:
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, SecretStr) and len(item.get_secret_value().strip()) >= 6:
                _known_secrets.add(item.get_secret_value().strip())


def scrub(text: str) -> str:
    """``text`` with every known secret and every URL's password replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + "***@", text)
    for secret in sorted(_known_secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


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
        for setting in KEY_SETTINGS:
            if f"NOTICEFLOW_{setting.upper()}" not in os.environ:
                kept = read_key_file(base.data_dir, setting)
                if kept:
                    filled[setting] = SecretStr(kept)
        secret_fields = {
            name
            for name, field in Settings.model_fields.items()
            if "SecretStr" in str(field.annotation)
        }
        given = {
            name: SecretStr(value) if name in secret_fields and isinstance(value, str) else value
            for name, value in overrides.items()
        }
        settings = base.model_copy(update={**filled, **given})
        remember_secrets(settings)
        return settings
    except ValidationError as error:
        raise InputError(describe_validation_error(error, "configuration")) from None
