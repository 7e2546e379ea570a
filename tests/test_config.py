"""Configuration: the environment first, then what `noticeflow up` left in the data dir; secrets
that never show, URLs shown without their passwords, files only their owner can read."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from pathlib import Path

import pytest
import structlog
from pydantic import SecretStr

from noticeflow.config import (
    KEY_SETTINGS,
    Settings,
    ensure_key_file,
    ensure_secret_key,
    load_settings,
    redact_url,
    remember_secrets,
    reveal,
    scrub,
    tighten,
    write_private,
)
from noticeflow.logging import configure_logging, open_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def no_key_env(monkeypatch):
    for setting in KEY_SETTINGS:
        monkeypatch.delenv(f"NOTICEFLOW_{setting.upper()}", raising=False)


def test_a_data_dir_gets_its_own_private_keys_that_survive_restarts(tmp_path, no_key_env):
    assert load_settings(tmp_path).secret_key is None  # nothing made yet, and no default
    made = {setting: ensure_key_file(tmp_path, setting) for setting in KEY_SETTINGS}
    assert len(set(made.values())) == 4 and all(len(key) >= 43 for key in made.values())
    assert mode(tmp_path / "keys") == 0o700
    for setting, key in made.items():
        assert mode(tmp_path / "keys" / setting) == 0o600
        assert ensure_key_file(tmp_path, setting) == key  # the same key after a restart
        assert reveal(getattr(load_settings(tmp_path), setting)) == key  # the CLI finds it too
    assert [p.name for p in (tmp_path / "keys").iterdir() if p.name.startswith(".")] == []


def test_the_environment_wins_over_the_data_dir(tmp_path, no_key_env, monkeypatch):
    ensure_secret_key(tmp_path)
    monkeypatch.setenv("NOTICEFLOW_SECRET_KEY", "from-the-environment")
    assert reveal(load_settings(tmp_path).secret_key) == "from-the-environment"


def test_each_data_dir_has_its_own_key(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert ensure_secret_key(tmp_path / "a") != ensure_secret_key(tmp_path / "b")


def test_the_old_link_key_file_is_read_and_moved_into_keys(tmp_path, no_key_env):
    old = "an-old-up-made-key-" + "abcdefghijklmnopqrstuvwxyz0123456789"
    (tmp_path / "secret_key").write_text(old + "\n")
    (tmp_path / "secret_key").chmod(0o644)
    assert reveal(load_settings(tmp_path).secret_key) == old  # before any `up`: still read
    assert ensure_secret_key(tmp_path) == old  # links mailed before the upgrade keep working
    assert not (tmp_path / "secret_key").exists()
    assert (tmp_path / "keys" / "secret_key").read_text().strip() == old
    assert mode(tmp_path / "keys" / "secret_key") == 0o600


def test_an_empty_key_file_left_by_a_crash_is_replaced(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "codec_key").write_text("")
    key = ensure_key_file(tmp_path, "codec_key")
    assert len(key) >= 43 and (tmp_path / "keys" / "codec_key").read_text().strip() == key


def test_concurrent_makers_agree_on_one_key(tmp_path):
    for round_ in range(10):
        data = tmp_path / str(round_)
        data.mkdir()
        found: list[str] = []
        threads = [
            threading.Thread(
                target=lambda d=data, out=found: out.append(ensure_key_file(d, "signing_key"))
            )
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        kept = (data / "keys" / "signing_key").read_text().strip()
        assert len(found) == 8 and set(found) == {kept}


def test_write_private_is_0600_from_creation_and_replaces_atomically(tmp_path):
    old_umask = os.umask(0)  # even a permissive umask gives an owner-only file
    try:
        path = tmp_path / "stack.json"
        write_private(path, b'{"a": 1}\n')
        assert mode(path) == 0o600 and json.loads(path.read_text()) == {"a": 1}
        write_private(path, b'{"a": 2}\n')
        assert json.loads(path.read_text()) == {"a": 2}
        assert not write_private(path, b"{}", replace=False)  # kept, not overwritten
        assert json.loads(path.read_text()) == {"a": 2}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.json"]  # no temp file left
    finally:
        os.umask(old_umask)


def test_a_loose_data_dir_is_tightened(tmp_path):
    data = tmp_path / "data"
    (data / "mail").mkdir(parents=True)
    (data / "postgres").mkdir()
    for path in (data / "stack.json", data / "noticeflow.log", data / "mail" / "1.eml"):
        path.write_text("x")
        path.chmod(0o644)
    (data / "postgres" / "theirs").write_text("x")
    (data / "postgres" / "theirs").chmod(0o640)
    for directory in (data, data / "mail"):
        directory.chmod(0o755)
    tighten(data)
    assert mode(data) == 0o700 and mode(data / "mail") == 0o700
    for path in (data / "stack.json", data / "noticeflow.log", data / "mail" / "1.eml"):
        assert mode(path) == 0o600, path
    assert mode(data / "postgres" / "theirs") == 0o640  # embedded PostgreSQL guards its own


def test_log_files_are_0600_and_a_loose_one_is_tightened(tmp_path):
    loose = tmp_path / "noticeflow.log"
    loose.write_text("")
    loose.chmod(0o644)
    with open_private(loose) as out:
        out.write("line\n")
    with open_private(tmp_path / "new.log") as out:
        out.write("line\n")
    assert mode(loose) == 0o600 and mode(tmp_path / "new.log") == 0o600


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:hunter2@db.example:5432/nf", "postgresql://app:***@db.example:5432/nf"),
        ("smtp://mailer:s3cr%40t@relay.example:587", "smtp://mailer:***@relay.example:587"),
        (
            "postgresql://db.example/nf?sslmode=require",
            "postgresql://db.example/nf?sslmode=require",
        ),
        (
            "postgresql://app@db.example/nf?password=hunter2",
            "postgresql://app@db.example/nf?password=***",
        ),
        ("smtp://127.0.0.1:2525", "smtp://127.0.0.1:2525"),
        (None, "-"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_secrets_never_show_in_repr_or_logs(tmp_path, caplog):
    key = "dGtiAkECT6vNc0V3FveQVxfOvDi5B9lL1Xlmr30JSmQ"  # a link key that must stay secret
    settings = Settings(
        data_dir=tmp_path,
        secret_key=key,
        codec_key="codec-" + key,
        previous_secret_keys=f"old-{key}",
        web_token="bearer-token-never-shown",
        oidc_client_secret="oidc-client-secret-never-shown",
        temporal_api_key="temporal-api-key-never-shown",
        database_url="postgresql://app:db-password-never-shown@db.example/nf",
        smtp_url="smtp://mailer:smtp-password-never-shown@relay.example:587",
    )
    assert isinstance(settings.secret_key, SecretStr)
    assert isinstance(settings.previous_secret_keys[0], SecretStr)
    assert settings.verification_keys == [key, f"old-{key}"]
    remember_secrets(settings)
    shown = repr(settings) + str(settings) + json.dumps(settings.model_dump(mode="json"))
    for secret in (key, "bearer-token", "oidc-client-secret", "temporal-api-key"):
        assert secret not in shown
    # A log line that carries a setting, a URL or a key by mistake shows none of them.
    log_file = tmp_path / "noticeflow.log"
    with open_private(log_file) as out:
        configure_logging(file=out)
        structlog.get_logger().warning(
            "oops", settings=settings, url=settings.database_url, key=key, smtp=settings.smtp_url
        )
        logging.getLogger("somelib").warning("connecting to %s", settings.smtp_url)
    configure_logging()
    logged = log_file.read_text()
    assert "oops" in logged and "smtp://mailer:***@relay.example" in logged
    # The standard library's loggers (a library's own lines) pass the same filter.
    assert "connecting to smtp://mailer:***@relay.example:587" in caplog.text
    assert "never-shown" not in caplog.text
    for secret in (key, "never-shown"):
        assert secret not in logged, logged
    assert scrub(f"failed: {settings.database_url} with {key}") == (
        "failed: postgresql://app:***@db.example/nf with ***"
    )


def test_temporal_tls_and_tracing_settings_are_checked(tmp_path):
    """Half an mTLS pair would connect without a client certificate; a collector address that is
    not a URL would fail every export in the background: both are refused up front."""
    import pytest
    from pydantic import ValidationError

    from noticeflow.config import Settings

    cert = tmp_path / "client.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ValidationError) as half:
        Settings(temporal_tls_cert=cert)
    assert "NOTICEFLOW_TEMPORAL_TLS_CERT and NOTICEFLOW_TEMPORAL_TLS_KEY go together" in str(
        half.value
    )
    with pytest.raises(ValidationError) as unreadable:
        Settings(temporal_tls_cert=cert, temporal_tls_key=tmp_path / "missing.pem")
    assert "NOTICEFLOW_TEMPORAL_TLS_KEY: cannot read" in str(unreadable.value)
    with pytest.raises(ValidationError) as not_url:
        Settings(otlp_endpoint="otel-collector:4318")
    assert "expected the collector's OTLP/HTTP base URL" in str(not_url.value)
    assert Settings(otlp_endpoint=" http://otel:4318 ").otlp_endpoint == "http://otel:4318"
    assert Settings(otlp_endpoint="").otlp_endpoint is None
