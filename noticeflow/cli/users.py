"""`noticeflow users`: local dashboard accounts."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from noticeflow.cli.common import (
    DataDirOpt,
    JsonOpt,
    database,
    emit,
    fail,
    keyed,
    run,
    settings_for,
    table,
)
from noticeflow.domain.errors import InputError

app = typer.Typer(no_args_is_help=True, help="Local dashboard accounts.")


ROLE_HELP = "viewer (reads), operator (acts on cases and customers), approver (also approves)"


@app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name (a-z, 0-9, '.', '_', '-').")],
    role: Annotated[str, typer.Option("--role", help=ROLE_HELP)],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Reset the role and password of an existing user (ends its open sessions).",
        ),
    ] = False,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a dashboard account; the password is asked for (or read with --password-stdin)."""
    from noticeflow import users

    problems = []
    chosen: users.Role | None = None
    try:
        chosen = users.Role(role)
    except ValueError:
        problems.append(f"--role: {role[:40]!r} is not one of viewer, operator, approver")
    try:
        users.check_name(name)
    except InputError as error:
        problems.append(str(error))
    if problems or chosen is None:  # before asking for a password that would be of no use
        fail("; ".join(problems))
        return
    keyed(settings_for(data_dir))  # no keys, no password asked for
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        users.check_password(password)
    except InputError as error:
        fail(str(error))
    role_chosen = chosen

    async def go() -> tuple[bool, int]:
        async with database(settings_for(data_dir)) as pool:
            created = await users.add_user(pool, name, role_chosen, password, replace=replace)
            # A reset (perhaps the old password is known to someone): its sessions end.
            ended = 0 if created else await users.revoke_sessions(pool, name)
            return created, ended

    created, ended = run(go())
    emit(
        {"name": name, "role": role_chosen.value, "created": created, "sessions_ended": ended},
        as_json,
        f"user {name} {'added' if created else 'reset'} as {role_chosen.value}"
        + (f" ({_sessions(ended)} ended)" if ended else ""),
    )


def _sessions(count: int) -> str:
    return f"{count} open session{'' if count == 1 else 's'}"


@app.command("list")
def users_list(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Dashboard accounts, their roles and open sessions (never their password hashes)."""
    from noticeflow import users

    async def go() -> list[dict[str, Any]]:
        async with database(settings_for(data_dir)) as pool:
            return await users.list_users(pool)

    rows = run(go())
    emit(rows, as_json, lambda: table(rows, ["name", "role", "created_at", "disabled", "sessions"]))


@app.command("disable")
def users_disable(
    name: Annotated[str, typer.Argument(help="User name of a local account.")],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Disable a local account: it can no longer sign in, and its open sessions end now.
    `users add NAME --replace` enables it again with a new password."""
    from noticeflow import users

    async def go() -> int:
        async with database(settings_for(data_dir)) as pool:
            return await users.disable_user(pool, name)

    ended = run(go())
    emit(
        {"name": name, "disabled": True, "sessions_ended": ended},
        as_json,
        f"user {name} disabled ({_sessions(ended)} ended)",
    )


@app.command("remove")
def users_remove(
    name: Annotated[str, typer.Argument(help="User name (a local account or an OIDC user).")],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a local account and end every open session of that name (an OpenID Connect
    user's too; also remove them at the identity provider). Their past actions keep their name."""
    from noticeflow import users

    async def go() -> tuple[bool, int]:
        async with database(settings_for(data_dir)) as pool:
            return await users.remove_user(pool, name)

    removed, ended = run(go())
    what = "removed" if removed else "has no local account"
    emit(
        {"name": name, "removed": removed, "sessions_ended": ended},
        as_json,
        f"user {name} {what} ({_sessions(ended)} ended)",
    )
