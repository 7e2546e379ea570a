"""Keys and files (issue 10, item 5): no default key anywhere; the worker, the web, the CLI and `up`
refuse missing, empty, public, short and patterned keys in one block naming each setting (exit 2,
no traceback); `up` makes its own keys once per data dir (0600, stable across restarts), keeps its
data dir and everything it writes private, and never writes or prints a password from the
environment. Real processes where the refusal is the point; `up`'s parts in process, and one
full `up` run."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import smtplib
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from itsdangerous import URLSafeSerializer

from noticeflow import keyring
from noticeflow.config import KEY_SETTINGS, load_settings, reveal
from noticeflow.links import SALT, ActionLink, InvalidLink, LinkAction, LinkSigner
from noticeflow.sink import SmtpSink, free_port
from noticeflow.stack import _banner, own_keys, private_data_dir, stack_parts, write_stack

NOTICEFLOW = shutil.which("noticeflow") or str(Path(sys.executable).parent / "noticeflow")
PUBLIC = "dev-only-insecure-secret"
ENV_NAMES = [f"NOTICEFLOW_{setting.upper()}" for setting in KEY_SETTINGS]
# One of each kind of bad key: public, empty, short, patterned.
BAD_KEYS = {
    "NOTICEFLOW_SECRET_KEY": PUBLIC,
    "NOTICEFLOW_CODEC_KEY": "",
    "NOTICEFLOW_KEY_ENCRYPTION_KEY": "short-key",
    "NOTICEFLOW_SIGNING_KEY": "ab" * 30,
}
WHY = {
    "NOTICEFLOW_SECRET_KEY": "is a public development key",
    "NOTICEFLOW_CODEC_KEY": "is not set",
    "NOTICEFLOW_KEY_ENCRYPTION_KEY": "has 9 characters",
    "NOTICEFLOW_SIGNING_KEY": "is not random",
}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def mode_if_there(path: Path) -> int | None:
    """The file's mode; None when it is gone (a running `up` removes its temporary files)."""
    try:
        return mode(path)
    except FileNotFoundError:
        return None


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No NOTICEFLOW_ variable but the ones given (so no key), and an empty data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTICEFLOW_")}
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    env["NOTICEFLOW_DATA_DIR"] = str(data)
    env.update(extra)
    return env


def good_keys() -> dict[str, str]:
    return {name: secrets.token_urlsafe(32) for name in ENV_NAMES}


def refused(done: subprocess.CompletedProcess[str], *names: str) -> str:
    """The one block of a refusal for keys: exit 2, no traceback, one line per bad setting."""
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, (done.returncode, output)
    assert "Traceback" not in output and "╭" not in output, output
    lines = output.splitlines()
    assert lines[0].startswith("error: refusing to start"), output
    assert all(line.startswith("  - ") for line in lines[1:]), output
    for name in names:
        assert sum(line.startswith(f"  - {name} ") for line in lines) == 1, (name, output)
    return output


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NOTICEFLOW, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )


# --- every entry point refuses without real keys --------------------------------------------------

COMMANDS = {
    "worker": ["worker"],
    "web": ["web", "--port", "0"],
    "customers list": ["customers", "list"],
    "db upgrade": ["db", "upgrade"],
    "notice approve": ["notice", "approve", "n-1", "--by", "bob"],
    "users add": ["users", "add", "dora", "--role", "viewer", "--password-stdin"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_missing_keys_are_refused_in_one_block_naming_each(command, tmp_path):
    env = _env(tmp_path, NOTICEFLOW_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    output = refused(run(env, *COMMANDS[command]), *ENV_NAMES)
    assert output.count("is not set") == 4 and "token_urlsafe(32)" in output
    assert "nobody" not in output  # refused before any connection, and no URL shown


@pytest.mark.parametrize("command", ["worker", "web", "customers list"])
def test_public_empty_short_and_patterned_keys_are_refused_all_at_once(command, tmp_path):
    env = _env(tmp_path, NOTICEFLOW_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", **BAD_KEYS)
    output = refused(run(env, *COMMANDS[command]), *ENV_NAMES)
    for name, why in WHY.items():
        assert f"{name} {why}" in output, output
    for key in ("short-key", "abab"):  # a refusal names the setting, never the key itself
        assert key not in output


def test_a_bad_previous_key_is_refused_too(tmp_path):
    env = _env(tmp_path, **good_keys(), NOTICEFLOW_PREVIOUS_SECRET_KEYS=PUBLIC)
    output = refused(run(env, "customers", "list"), "NOTICEFLOW_PREVIOUS_SECRET_KEYS")
    assert "public development key" in output


def test_one_secret_for_two_keys_is_refused(tmp_path):
    shared = secrets.token_urlsafe(32)
    reused = {"NOTICEFLOW_CODEC_KEY": shared, "NOTICEFLOW_KEY_ENCRYPTION_KEY": shared}
    env = _env(tmp_path, **{**good_keys(), **reused})
    output = refused(run(env, "customers", "list"), "NOTICEFLOW_CODEC_KEY")
    assert "NOTICEFLOW_CODEC_KEY and NOTICEFLOW_KEY_ENCRYPTION_KEY are the same secret" in output
    assert shared not in output


def test_up_refuses_a_bad_key_from_the_environment_before_starting_anything(tmp_path):
    env = _env(tmp_path, **BAD_KEYS)
    refused(run(env, "up"), *ENV_NAMES)
    data = tmp_path / "data"
    assert not (data / "stack.json").exists() and not (data / "temporal.db").exists()
    assert not (data / "keys").exists()  # every key came from the environment: none made


def test_the_web_refuses_bad_keys_with_its_other_problems_in_the_same_block(tmp_path):
    env = _env(tmp_path, **{**good_keys(), "NOTICEFLOW_SECRET_KEY": PUBLIC})
    output = refused(run(env, "web", "--port", "70000"), "NOTICEFLOW_SECRET_KEY", "--port:")
    assert output.startswith("error: refusing to start (3 problems):")
    assert "  - no database: set NOTICEFLOW_DATABASE_URL" in output


# --- links: nothing signed with the old public default verifies -----------------------------------


def test_a_link_forged_with_the_old_public_default_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTICEFLOW_SECRET_KEY", raising=False)
    expires = int((datetime.now(UTC) + timedelta(days=30)).timestamp())
    forged = URLSafeSerializer(PUBLIC, salt=SALT).dumps(["n-1", "acme", "opt_in", expires])
    # The link key `up` makes (no environment key): the forgery does not verify.
    settings = load_settings(own_keys(load_settings(tmp_path), tmp_path).data_dir)
    assert settings.verification_keys and PUBLIC not in settings.verification_keys
    signer = LinkSigner(settings.verification_keys, "https://n.example")
    with pytest.raises(InvalidLink) as refused_link:
        signer.verify(forged, datetime.now(UTC))
    assert refused_link.value.kind == "forged"
    # And no signer can be made with the public key, alone or among previous keys.
    for keys in ([PUBLIC], [settings.verification_keys[0], PUBLIC]):
        with pytest.raises(ValueError, match="public development key"):
            LinkSigner(keys, "https://n.example")
    # A real link from the same signer is fine.
    link = ActionLink("n-1", "acme", LinkAction.opt_in, datetime.fromtimestamp(expires, UTC))
    assert signer.verify(signer.token(link), datetime.now(UTC)) == link


# --- up's keys and files ---------------------------------------------------------------------------


def test_up_makes_its_keys_once_0600_and_keeps_them_across_restarts(tmp_path, monkeypatch):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    first = own_keys(load_settings(data), data)
    keyring.from_settings(first)  # real keys: all four pass the keyring's checks
    assert mode(data / "keys") == 0o700
    for setting in KEY_SETTINGS:
        assert mode(data / "keys" / setting) == 0o600
    again = own_keys(load_settings(data), data)  # a restart
    for setting in KEY_SETTINGS:
        assert reveal(getattr(again, setting)) == reveal(getattr(first, setting))
    # The environment overrides the data dir's key, and nothing is made for it.
    override = secrets.token_urlsafe(32)
    monkeypatch.setenv("NOTICEFLOW_CODEC_KEY", override)
    assert reveal(own_keys(load_settings(data), data).codec_key) == override
    private_data_dir(data)
    assert mode(data) == 0o700


def test_stack_json_and_the_banner_hold_no_environment_password(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    database_url = "postgresql://app:hunter2-db@db.example:5432/nf"
    smtp_url = "smtp://mailer:hunter2-smtp@relay.example:587"
    parts = stack_parts("127.0.0.1:7233", "http://127.0.0.1:8233", None, None, None,
                        data / "mail", "http://127.0.0.1:8080")  # fmt: skip
    path = write_stack(data, parts)
    assert mode(path) == 0o600
    written = json.loads(path.read_text())
    assert written["database_url"] is None and written["smtp_url"] is None
    banner = _banner({**parts, "database_url": database_url, "smtp_url": smtp_url}, path)
    assert "hunter2" not in banner
    assert "postgresql://app:***@db.example:5432/nf" in banner
    assert "smtp://mailer:***@relay.example:587" in banner
    # The embedded database's URL is kept (the other commands need it), 0600.
    embedded = "postgresql://nf_runtime:local-pw@%2Ftmp%2Fsock/noticeflow"
    parts = stack_parts("a:1", "http://u", embedded, "127.0.0.1", 2525, data / "mail", "http://w")
    written = json.loads(write_stack(data, parts).read_text())
    assert written["database_url"] == embedded and written["smtp_url"] == "smtp://127.0.0.1:2525"
    assert "local-pw" not in _banner(parts, path)
    assert written["inbound_url"] is None and written["reply_address"] is None  # not started
    # The reply endpoint, when `up` runs it: named in stack.json and in the banner alike.
    parts = stack_parts(
        "a:1", "http://u", embedded, "127.0.0.1", 2525, data / "mail", "http://w",
        codec_url="http://127.0.0.1:8888", inbound=("127.0.0.1", 2526),
        reply_address="reply@replies.vendor.example",
    )  # fmt: skip
    written = json.loads(write_stack(data, parts).read_text())
    assert (written["inbound_host"], written["inbound_port"]) == ("127.0.0.1", 2526)
    assert written["inbound_url"] == "smtp://127.0.0.1:2526"
    assert written["reply_address"] == "reply@replies.vendor.example"
    assert written["codec_url"] == "http://127.0.0.1:8888"
    banner = _banner(parts, path)
    assert "replies           smtp://127.0.0.1:2526" in banner
    assert "reply+<token>@replies.vendor.example" in banner


def test_the_sinks_mail_is_0600_in_a_0700_dir(tmp_path):
    with SmtpSink(tmp_path / "mail") as sink, smtplib.SMTP(sink.host, sink.port) as client:
        client.sendmail("a@vendor.example", ["b@customer.example"], b"Subject: hi\r\n\r\nhello\r\n")
    assert mode(tmp_path / "mail") == 0o700
    files = list((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 1 and mode(files[0]) == 0o600


def test_a_full_up_run_keeps_everything_private(tmp_path):
    """One real `up` (embedded PostgreSQL, Temporal, web, the reply endpoint; mail to a sink given
    by URL with a password): data dir private, every file 0600, stack.json and the output without
    the password; stack.json names every part started (the reply endpoint and address too)."""
    port = free_port()
    with SmtpSink(tmp_path / "relay") as relay:
        smtp_url = f"smtp://mailer:hunter2-smtp@{relay.host}:{relay.port}"
        env = _env(
            tmp_path, NOTICEFLOW_SMTP_URL=smtp_url, NOTICEFLOW_WEB_PORT=str(port),
            NOTICEFLOW_REPLY_ADDRESS="reply@replies.vendor.example",
            NOTICEFLOW_INBOUND_PORT=str(free_port()),
        )  # fmt: skip
        data = Path(env["NOTICEFLOW_DATA_DIR"])
        data.chmod(0o755)  # as an older version left it
        (data / "noticeflow.log").write_text("")
        (data / "noticeflow.log").chmod(0o644)
        process = subprocess.Popen(
            [NOTICEFLOW, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        output = ""
        try:
            give_up = time.monotonic() + 180
            assert process.stdout is not None
            while "Press Ctrl-C" not in output:
                line = process.stdout.readline()
                assert line or process.poll() is None, output
                output += line
                assert time.monotonic() < give_up, output
            stack_json = (data / "stack.json").read_text()
            modes = {
                path.relative_to(data).as_posix(): found
                for path in data.rglob("*")
                if "postgres" not in path.relative_to(data).parts
                and not path.is_symlink()
                # (a file may go between the listing and its stat: SQLite's journal, say)
                and (found := mode_if_there(path)) is not None
            }
            data_mode = mode(data)
        finally:
            process.send_signal(signal.SIGINT)
            rest, _ = process.communicate(timeout=60)
            output += rest
    assert "hunter2" not in output and "hunter2" not in stack_json, output
    assert "smtp://mailer:***@" in output
    assert json.loads(stack_json)["smtp_url"] is None
    assert json.loads(stack_json)["database_url"]  # the embedded database's: other commands use it
    # every part started is named in stack.json, the reply endpoint too, as in the banner
    named = json.loads(stack_json)
    assert named["reply_address"] == "reply@replies.vendor.example"
    assert named["inbound_url"] == f"smtp://127.0.0.1:{named['inbound_port']}"
    assert f"replies           {named['inbound_url']}" in output
    for key in ("web_url", "temporal_address", "temporal_ui_url", "codec_url"):
        assert named[key] and str(named[key]) in output, key
    # 0700; 0711 as root (embedded PostgreSQL's server runs as its own user and passes through).
    assert data_mode in (0o700, 0o711), oct(data_mode)
    for name in [
        "stack.json",
        "noticeflow.log",
        "temporal.log",
        *(f"keys/{k}" for k in KEY_SETTINGS),
    ]:
        assert modes[name] == 0o600, (name, oct(modes[name]))
    for name, m in modes.items():
        assert not m & 0o077, (name, oct(m))
    assert process.returncode == 0, output


def test_a_second_up_on_the_same_data_dir_is_refused_naming_the_first(tmp_path: Path) -> None:
    from noticeflow.domain.errors import InputError
    from noticeflow.stack import hold_data_dir

    first = hold_data_dir(tmp_path)
    try:
        with pytest.raises(InputError, match=rf"already running on .* \(pid {os.getpid()}\)"):
            hold_data_dir(tmp_path)
    finally:
        first.close()
    hold_data_dir(tmp_path).close()  # free again once the first has stopped
