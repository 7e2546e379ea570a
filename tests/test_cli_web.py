"""`noticeflow web` and `noticeflow users` from the command line: every refusal is one line (no
traceback), says what is wrong and exits non-zero; accounts are added, disabled and removed, and
that ends their sessions. Real processes, a real PostgreSQL (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from noticeflow import users
from noticeflow.sink import free_port
from noticeflow.users import Role, User

NOTICEFLOW = shutil.which("noticeflow") or str(Path(sys.executable).parent / "noticeflow")
KEY = secrets.token_urlsafe(32)
# The other three keys (codec, key-encryption, signing): real ones, as every command needs them.
OTHER_KEYS = {
    f"NOTICEFLOW_{name.upper()}": secrets.token_urlsafe(32)
    for name in ("codec_key", "key_encryption_key", "signing_key")
}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No NOTICEFLOW_ variable but the ones given and the process's three other keys (the link key
    only when given), and an empty data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTICEFLOW_")}
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    env["NOTICEFLOW_DATA_DIR"] = str(data)
    env.update(OTHER_KEYS)
    env.update(extra)
    return env


def cli(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NOTICEFLOW, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single `error:` line of a refused command (and nothing else on either stream)."""
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == code, (done.returncode, output)
    assert "Traceback" not in output and "╭" not in output, output
    assert "\n" not in output and output.startswith("error: "), output
    return output


# --- noticeflow web ------------------------------------------------------------------------------


def block_error(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The one block of a refused command: `error: ...:` and one `  - ` line per problem."""
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, (done.returncode, output)
    assert "Traceback" not in output and "╭" not in output, output
    head, *items = output.splitlines()
    assert head.startswith("error: refusing to start") and head.endswith(":"), output
    assert items and all(item.startswith("  - ") for item in items), output
    return [item[4:] for item in items]


def test_web_refuses_without_a_real_link_key_and_says_every_problem_at_once(tmp_path):
    items = block_error(cli(_env(tmp_path), "web", "--port", "70000"))
    assert items[0] == "--port: '70000' is not a port number (0-65535)"
    assert items[1].startswith("no database: set NOTICEFLOW_DATABASE_URL, or run `noticeflow up`")
    assert items[2].startswith("NOTICEFLOW_SECRET_KEY is not set") and len(items) == 3
    # Set to the public key by hand is no better than unset; nor a short or patterned key.
    env = _env(tmp_path, NOTICEFLOW_DATABASE_URL="postgresql://x/y")
    for key, why in [
        ("dev-only-insecure-secret", "is a public development key"),
        ("   ", "is not set"),
        ("cli-web-test-key-" + "z" * 20, "has 37 characters"),
        ("z" * 64, "is not random"),
    ]:
        items = block_error(cli({**env, "NOTICEFLOW_SECRET_KEY": key}, "web"))
        assert len(items) == 1 and items[0].startswith(f"NOTICEFLOW_SECRET_KEY {why}"), items


@pytest.mark.parametrize(
    ("args", "extra", "expected"),
    [
        (["--port", "abc"], {}, "--port: 'abc' is not a port number (0-65535)"),
        (["--port", "-1"], {}, "--port: '-1' is not a port number (0-65535)"),
        (["--port", "65536"], {}, "--port: '65536' is not a port number (0-65535)"),
        (["--host", " "], {}, "--host: give an address to listen on"),
        ([], {"NOTICEFLOW_WEB_PORT": "abc"}, "configuration: NOTICEFLOW_WEB_PORT: Input should"),
        (
            [],
            {"NOTICEFLOW_WEB_PORT": "abc", "NOTICEFLOW_LINK_RATE_PER_TOKEN": "0"},
            "NOTICEFLOW_WEB_PORT: Input should be a valid integer, unable to parse string as an"
            " integer; NOTICEFLOW_LINK_RATE_PER_TOKEN: Input should be greater than",
        ),
    ],
)
def test_web_bad_options_and_settings_are_one_line(tmp_path, args, extra, expected):
    env = _env(tmp_path, NOTICEFLOW_SECRET_KEY=KEY, NOTICEFLOW_DATABASE_URL="postgresql://x/y")
    env.update(extra)
    assert expected in one_line_error(cli(env, "web", *args))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://someone@127.0.0.1/db", "NOTICEFLOW_DATABASE_URL is not a usable PostgreSQL URL"),
        ("not a url at all", "NOTICEFLOW_DATABASE_URL is not a usable PostgreSQL URL"),
        (
            "postgresql://someone:hunter2-secret@127.0.0.1:notaport/db",
            "NOTICEFLOW_DATABASE_URL is not a usable PostgreSQL URL: a port is not a number",
        ),
        (
            "postgresql://someone:hunter2-secret@127.0.0.1:{port}/db",
            "cannot open the database (NOTICEFLOW_DATABASE_URL):",
        ),
    ],
)
def test_web_with_an_invalid_or_unreachable_database_is_one_line(tmp_path, url, expected):
    env = _env(tmp_path, NOTICEFLOW_SECRET_KEY=KEY, NOTICEFLOW_DATABASE_URL=url.format(port=1))
    error = one_line_error(cli(env, "web", "--port", str(free_port())))
    assert expected in error
    assert "hunter2" not in error  # the password is not repeated


@pytest.mark.parametrize(
    "command",
    [["customers", "list"], ["notice", "list"], ["db", "upgrade"], ["worker"]],
    ids=" ".join,
)
@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:hunter2-secret@127.0.0.1:notaport/x",
        "postgresql://u:hunter2-secret@127.0.0.1:99999/x",
        "postgresql://u:hunter2-secret@127.0.0.1/x?sslmode=sometimes",
        "mysql://u:hunter2-secret@127.0.0.1/x",
    ],
)
def test_a_malformed_database_url_is_one_line_naming_the_setting(tmp_path, command, url):
    """Found: `customers list` with a port that is not a number said "unexpected ValueError",
    exit 70. Every entry point names the setting and shows the URL without its password."""
    env = _env(tmp_path, NOTICEFLOW_SECRET_KEY=KEY, NOTICEFLOW_DATABASE_URL=url)
    error = one_line_error(cli(env, *command))
    assert error.startswith("error: NOTICEFLOW_DATABASE_URL is not a usable PostgreSQL URL: ")
    assert "(expected postgresql://USER@HOST:PORT/DATABASE, with a password as" in error
    assert "hunter2" not in error and "unexpected" not in error
    assert url.replace("hunter2-secret", "***") in error


def test_a_malformed_owner_url_is_named_as_the_owner_url(tmp_path, database_url):
    owner = "postgresql://noticeflow_owner:hunter2-secret@127.0.0.1:notaport/x"
    env = _env(
        tmp_path,
        NOTICEFLOW_SECRET_KEY=KEY,
        NOTICEFLOW_DATABASE_URL=database_url,
        NOTICEFLOW_OWNER_DATABASE_URL=owner,
    )
    error = one_line_error(cli(env, "db", "upgrade"))
    assert error.startswith("error: NOTICEFLOW_OWNER_DATABASE_URL is not a usable PostgreSQL URL")
    assert "a port is not a number (notaport)" in error and "hunter2" not in error


async def test_web_on_a_database_without_the_schema_says_to_upgrade(postgres_server, tmp_path):
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    env = _env(
        tmp_path,
        NOTICEFLOW_SECRET_KEY=KEY,
        NOTICEFLOW_DATABASE_URL=postgres_server.replace("/postgres?", f"/{name}?"),
    )
    error = one_line_error(cli(env, "web", "--port", str(free_port())))
    assert "the database schema is not up to date" in error and "011_web_sessions.sql" in error
    assert "noticeflow db upgrade" in error


def test_web_on_a_taken_port_or_a_foreign_address_is_one_line(database_url, tmp_path):
    env = _env(tmp_path, NOTICEFLOW_SECRET_KEY=KEY, NOTICEFLOW_DATABASE_URL=database_url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        error = one_line_error(cli(env, "web", "--port", str(port)))
    assert error == f"error: could not listen on 127.0.0.1:{port} (address already in use)"
    # 192.0.2.1 (TEST-NET-1) is no address of this machine.
    foreign = one_line_error(cli(env, "web", "--host", "192.0.2.1", "--port", "8080"))
    assert foreign == "error: could not listen on 192.0.2.1:8080 (cannot assign requested address)"
    # And both at once: the port and the database.
    env["NOTICEFLOW_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/db"
    both = one_line_error(cli(env, "web", "--host", "192.0.2.1", "--port", "8080"))
    assert "could not listen on 192.0.2.1:8080" in both and "cannot open the database" in both


def test_web_serves_with_a_key_and_a_database_and_stops_on_sigint(database_url, tmp_path):
    port = free_port()
    env = _env(tmp_path, NOTICEFLOW_SECRET_KEY=KEY, NOTICEFLOW_DATABASE_URL=database_url)
    env["NOTICEFLOW_TEMPORAL_ADDRESS"] = f"127.0.0.1:{free_port()}"  # none: pages work anyway
    process = subprocess.Popen(
        [NOTICEFLOW, "web", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        give_up = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/login", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < give_up, "the web did not answer"
                time.sleep(0.2)
        assert answer.status_code == 200 and "csrf_token" in answer.text
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert f"noticeflow web on http://127.0.0.1:{port}" in output


# --- noticeflow users ----------------------------------------------------------------------------


def test_users_add_refuses_bad_names_reserved_names_and_bad_passwords(database_url, tmp_path):
    env = _env(tmp_path, NOTICEFLOW_SECRET_KEY=KEY, NOTICEFLOW_DATABASE_URL=database_url)
    password = "long-enough-password\n"
    bad = one_line_error(cli(env, "users", "add", "Bad Name", "--role", "boss", "--password-stdin"))
    # Both problems, told before a password is asked for.
    assert "--role: 'boss' is not one of viewer, operator, approver" in bad
    assert "user name 'Bad Name' is not valid" in bad
    for reserved in sorted(users.RESERVED_NAMES):
        done = cli(env, "users", "add", reserved, "--role", "approver", "--password-stdin",
                   stdin=password)  # fmt: skip
        assert f"user name {reserved!r} is reserved" in one_line_error(done)
    short = cli(env, "users", "add", "shorty", "--role", "viewer", "--password-stdin", stdin="s\n")
    assert "at least 12 characters" in one_line_error(short)
    padded = cli(env, "users", "add", "padded", "--role", "viewer", "--password-stdin",
                 stdin="  long-enough-password  \n")  # fmt: skip
    assert "must not start or end with white space" in one_line_error(padded)
    listed = cli(env, "users", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


async def test_users_add_disable_remove_end_the_sessions(database_url, pool, tmp_path):
    env = _env(tmp_path, NOTICEFLOW_SECRET_KEY=KEY, NOTICEFLOW_DATABASE_URL=database_url)
    add = ["users", "add", "dora", "--role", "operator", "--password-stdin", "--json"]
    added = cli(env, *add, stdin="dora-password-1\n")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout) == {
        "name": "dora", "role": "operator", "created": True, "sessions_ended": 0,
    }  # fmt: skip
    again = cli(env, *add[:-1], stdin="dora-password-1\n")
    assert "exists already; use --replace" in one_line_error(again)

    first = await users.create_session(pool, User("dora", Role.operator, "password"))
    assert await users.load_session(pool, first) == User("dora", Role.operator, "password")
    # A reset (--replace) ends the open sessions: the old password may be known to someone.
    reset = cli(env, *add, "--replace", stdin="dora-password-2\n")
    assert json.loads(reset.stdout)["sessions_ended"] == 1
    assert await users.load_session(pool, first) is None

    second = await users.create_session(pool, User("dora", Role.operator, "password"))
    listed = json.loads(cli(env, "users", "list", "--json").stdout)
    assert [(u["name"], u["disabled"], u["sessions"]) for u in listed] == [("dora", False, 1)]
    disabled = cli(env, "users", "disable", "dora", "--json")
    assert disabled.returncode == 0, disabled.stderr
    assert json.loads(disabled.stdout) == {"name": "dora", "disabled": True, "sessions_ended": 1}
    assert await users.load_session(pool, second) is None
    assert await users.authenticate(pool, "dora", "dora-password-2") is None

    removed = cli(env, "users", "remove", "dora")
    assert removed.returncode == 0 and "user dora removed (0 open sessions ended)" in removed.stdout
    assert await pool.fetchval("SELECT count(*) FROM web_users WHERE name = 'dora'") == 0

    unknown = one_line_error(cli(env, "users", "disable", "nobody"))
    assert "no local account 'nobody'" in unknown
    assert "no user 'nobody'" in one_line_error(cli(env, "users", "remove", "nobody", "--json"))


async def test_users_remove_ends_an_oidc_users_sessions(database_url, pool, tmp_path):
    env = _env(tmp_path, NOTICEFLOW_SECRET_KEY=KEY, NOTICEFLOW_DATABASE_URL=database_url)
    sid = await users.create_session(pool, User("olga", Role.approver, "oidc"))
    assert await users.load_session(pool, sid) == User("olga", Role.approver, "oidc")
    # No local account to disable, and none may be made in that name (it would be taken for her).
    assert "no local account 'olga'" in one_line_error(cli(env, "users", "disable", "olga"))
    add = cli(env, "users", "add", "olga", "--role", "viewer", "--password-stdin",
              stdin="olga-password-1\n")  # fmt: skip
    assert "OpenID Connect user" in one_line_error(add)
    removed = cli(env, "users", "remove", "olga", "--json")
    assert json.loads(removed.stdout) == {"name": "olga", "removed": False, "sessions_ended": 1}
    assert await users.load_session(pool, sid) is None


def test_a_commands_bad_settings_are_one_line(tmp_path):
    env = _env(tmp_path, NOTICEFLOW_WEB_PORT="abc")
    error = one_line_error(cli(env, "users", "list"))
    assert "NOTICEFLOW_WEB_PORT" in error
