"""The fault runs of bench/faults.py, on the real stack, as tests (marked slow: `-m slow` runs
them alone, `-m "not slow"` skips them; `.ci/run` runs everything).

Each scenario starts its own embedded PostgreSQL, Temporal dev server, SMTP sink and
`noticeflow worker` in their own processes, injects its fault, and counts: every expected mail
reached the sink, repeats only under the original Message-ID, every action judged and none
misjudged, and the notice in its expected phase (not wedged). Scenario a (the worker SIGKILLed
three times during a 5,000-customer send) waits out three heartbeat timeouts and is left to
`python bench/faults.py`; its figures are in docs/reliability.md.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _faults() -> Any:
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_faults", BENCH / "faults.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_faults"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["b", "c", "d1", "d2", "d3"])
async def test_fault_run_loses_misjudges_and_wedges_nothing(scenario: str, tmp_path: Path):
    faults = _faults()
    row = await faults.SCENARIOS[scenario](tmp_path)
    summary = faults.plain([row])
    assert row.wedged == 0, summary
    assert row.mails_accepted == row.mails_expected, summary
    assert row.actions_recorded == row.actions_expected, summary
    assert not any("misjudged" in note for note in row.notes), summary
    other = re.search(r"(\d+) other", row.duplicates)
    assert other is not None and other.group(1) == "0", summary  # repeats: original Message-ID only
