"""The CLI starts fast because a command imports what it needs when it runs: a help screen loads
none of the heavy parts (bench/cli_startup.py measures the time; this checks the cause, which
does not depend on the machine's speed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("temporalio", "asyncpg", "pydantic_settings", "structlog", "fastapi", "noticeflow.config")

PROBE = """
import contextlib, io, json, sys
from noticeflow.cli import app
sys.argv = ["noticeflow", *json.loads(sys.argv[1])]
with contextlib.redirect_stdout(io.StringIO()):
    try:
        app()
    except SystemExit:
        pass
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["notice", "--help"],
        ["evidence", "--help"],
        ["receipts", "--help"],
        ["customers", "--help"],
    ],
)
def test_help_loads_none_of_the_heavy_parts(argv):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    loaded = json.loads(out)
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY)
    assert not heavy, f"`noticeflow {' '.join(argv)}` imports {heavy}"
