"""Configuration: the environment first, then what `noticeflow up` left in the data dir."""

from __future__ import annotations

import stat

from noticeflow.config import DEV_SECRET_KEY, ensure_secret_key, load_settings


def test_a_data_dir_gets_its_own_private_link_key_that_survives_restarts(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTICEFLOW_SECRET_KEY", raising=False)
    assert load_settings(tmp_path).secret_key == DEV_SECRET_KEY  # nothing made yet
    key = ensure_secret_key(tmp_path)
    assert len(key) >= 40 and key != DEV_SECRET_KEY
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600
    assert ensure_secret_key(tmp_path) == key  # the same key after a restart
    assert load_settings(tmp_path).secret_key == key  # the CLI finds it too


def test_the_environment_wins_over_the_data_dir(tmp_path, monkeypatch):
    ensure_secret_key(tmp_path)
    monkeypatch.setenv("NOTICEFLOW_SECRET_KEY", "from-the-environment")
    assert load_settings(tmp_path).secret_key == "from-the-environment"


def test_each_data_dir_has_its_own_key(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert ensure_secret_key(tmp_path / "a") != ensure_secret_key(tmp_path / "b")
