"""How many hand-made mutants of the domain code the pure tests kill (issue 11, item 6).

    python bench/mutants.py [--rev HEAD] [--only NAME ...] [--tests tests/domain]

Each mutant is one text substitution in ``noticeflow/domain`` (a rule's check deleted, ``<`` made
``<=`` at a deadline, a filter ignored...). The script never touches the working tree: it exports
``--rev`` (default ``HEAD``: commit first) into a temporary directory with ``git archive``, applies
one mutant there at a time, runs ``python -m pytest -q -x -p no:cacheprovider tests/domain`` with
that copy as the working directory (its ``noticeflow`` comes first on ``sys.path``, ahead of the
installed one), restores the file, and prints killed / survived per mutant and the kill ratio.

Two checks run first, so a ratio can be trusted: the unmutated copy must pass, and a copy whose
``noticeflow/domain/rules.py`` raises on import must fail (proof that the copy's code, not the
installed package, is what the tests import). A mutant whose text is not found is reported as
stale (the code moved on) and fails the run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RULES = "noticeflow/domain/rules.py"
NOTICE = "noticeflow/domain/notice.py"
CUSTOMERS = "noticeflow/domain/customers.py"
DEADLINES = "noticeflow/domain/deadlines.py"
SIGNALS = "noticeflow/domain/signals.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str


MUTANTS = [
    # --- rules.decide -------------------------------------------------------------------------
    Mutant("decide: no effective-date guard", RULES, "if now < effective_at:", "if False:"),
    Mutant("decide: ops exclusion ignored", RULES, "if excluded_by_ops:", "if False:"),
    Mutant(
        "decide: terminated case ignored",
        RULES,
        "if any(case.status is CaseStatus.terminated for case in statuses):",
        "if False:",
    ),
    Mutant(
        "decide: excluded case ignored",
        RULES,
        "if any(case.status is CaseStatus.excluded for case in statuses):",
        "if False:",
    ),
    Mutant(
        "rule 4: undelivered may activate",
        RULES,
        "if delivery is not Delivery.delivered or deadline is None:",
        "if deadline is None:",
    ),
    Mutant("rule 6: deadline check deleted", RULES, "if now < deadline:", "if False:"),
    Mutant("rule 6: < -> <= at the deadline", RULES, "if now < deadline:", "if now <= deadline:"),
    Mutant("rule 6: deadline check inverted", RULES, "if now < deadline:", "if now > deadline:"),
    Mutant(
        "rule 9: open timely case check deleted",
        RULES,
        "if any(case.status is CaseStatus.open and case.timely for case in statuses):",
        "if False:",
    ),
    Mutant(
        "rule 9: a late open case holds too",
        RULES,
        "if any(case.status is CaseStatus.open and case.timely for case in statuses):",
        "if any(case.status is CaseStatus.open for case in statuses):",
    ),
    Mutant(
        "rule 9: only an all-open list holds",
        RULES,
        "if any(case.status is CaseStatus.open and case.timely for case in statuses):",
        "if statuses and all(case.status is CaseStatus.open for case in statuses):",
    ),
    Mutant(
        "rule 8: opt-in check deleted", RULES, "if opt_in_notice and not opted_in:", "if False:"
    ),
    Mutant(
        "rule 8: opt-in check inverted",
        RULES,
        "if opt_in_notice and not opted_in:",
        "if opt_in_notice and opted_in:",
    ),
    Mutant(
        "rule 8: opt-in needed on every notice",
        RULES,
        "if opt_in_notice and not opted_in:",
        "if not opted_in:",
    ),
    # --- is_settled, activation_ground, is_timely, rule 6 at approval --------------------------
    Mutant(
        "is_settled: an open case ignored",
        RULES,
        "if any(case.status is CaseStatus.open for case in cases):",
        "if False:",
    ),
    Mutant(
        "is_settled: activation not final",
        RULES,
        "return verdict is Verdict.activate or verdict in OFF_VERDICTS",
        "return verdict in OFF_VERDICTS",
    ),
    Mutant(
        "is_settled: declined not final",
        RULES,
        "Verdict.terminated, Verdict.declined, Verdict.excluded_by_ops}",
        "Verdict.terminated, Verdict.excluded_by_ops}",
    ),
    Mutant(
        "activation_ground: a late objection counts",
        RULES,
        "if not any(case.timely for case in statuses):",
        "if not statuses:",
    ),
    Mutant(
        "activation_ground: opt-in not the ground",
        RULES,
        '    if opt_in_notice:\n        return "opted_in"',
        '    if False:\n        return "opted_in"',
    ),
    Mutant(
        "rule 7: < -> <= at the deadline (is_timely)",
        RULES,
        "return deadline is None or received_at < deadline",
        "return deadline is None or received_at <= deadline",
    ),
    Mutant(
        "rule 7: before delivery is late",
        RULES,
        "return deadline is None or received_at < deadline",
        "return deadline is not None and received_at < deadline",
    ),
    Mutant(
        "rule 6 at approval: check deleted",
        RULES,
        "if latest_deadline is None or effective_at >= latest_deadline:",
        "if True:",
    ),
    Mutant(
        "rule 6 at approval: at the deadline refused",
        RULES,
        "if latest_deadline is None or effective_at >= latest_deadline:",
        "if latest_deadline is None or effective_at > latest_deadline:",
    ),
    # --- audience (notice.py) -----------------------------------------------------------------
    Mutant(
        "audience: customers filter ignored",
        NOTICE,
        "if self.customers and customer_id not in self.customers:",
        "if False:",
    ),
    Mutant(
        "audience: regions filter ignored",
        NOTICE,
        "if self.regions and region not in self.regions:",
        "if False:",
    ),
    Mutant(
        "audience: services filter ignored",
        NOTICE,
        "return not self.services or bool(set(self.services) & set(services))",
        "return True",
    ),
    Mutant(
        "audience: every service must match",
        NOTICE,
        "return not self.services or bool(set(self.services) & set(services))",
        "return not self.services or set(self.services) <= set(services)",
    ),
    # --- customers file -----------------------------------------------------------------------
    Mutant(
        "customers: duplicate ids accepted",
        CUSTOMERS,
        "if customer.customer_id in seen:",
        "if False:",
    ),
    Mutant(
        "customers: refused ids accepted",
        CUSTOMERS,
        "if customer.customer_id in refused:",
        "if False:",
    ),
    # --- deadlines (rule 5) -------------------------------------------------------------------
    Mutant(
        "deadlines: the day of delivery counts",
        DEADLINES,
        "return next_working_day(delivered_local + timedelta(days=days), country)",
        "return next_working_day(delivered_local + timedelta(days=days - 1), country)",
    ),
    Mutant(
        "deadlines: no roll-forward to a working day",
        DEADLINES,
        "return next_working_day(delivered_local + timedelta(days=days), country)",
        "return delivered_local + timedelta(days=days)",
    ),
    Mutant(
        "deadlines: ends at the start of the last day",
        DEADLINES,
        "next_midnight = datetime.combine(day + DAY, time(0), tzinfo=zone)",
        "next_midnight = datetime.combine(day, time(0), tzinfo=zone)",
    ),
    Mutant(
        "deadlines: min of notice and contract windows",
        DEADLINES,
        "deadline = max(deadline, contract_end)",
        "deadline = min(deadline, contract_end)",
    ),
    Mutant(
        "deadlines: Saturday is a working day",
        DEADLINES,
        "if day.weekday() >= 5:",
        "if day.weekday() >= 6:",
    ),
    Mutant(
        "deadlines: public holidays ignored",
        DEADLINES,
        "return code is None or day not in public_holidays(code, day.year)",
        "return True if day.weekday() < 5 else False",
    ),
    Mutant(
        "deadlines: sub-day window rounded to days",
        DEADLINES,
        "if window % DAY != timedelta(0):",
        "if False:",
    ),
    # --- four eyes (signals.py) ---------------------------------------------------------------
    Mutant(
        "rule 2: names compared case-sensitively",
        SIGNALS,
        'unicodedata.normalize("NFKC", one).casefold().strip()',
        'unicodedata.normalize("NFKC", one).strip()',
    ),
]

# Not a mutant of the rules: proof that the tests import the copy's code, not the installed one.
SHADOW_CHECK = Mutant(
    "(shadow check) rules.py raises on import",
    RULES,
    '"""Per-customer settlement rules',
    'raise RuntimeError("the copy is what the tests import")\n"""Per-customer settlement rules',
)


def export(rev: str, into: Path) -> None:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def run_tests(copy: Path, tests: list[str], timeout: float) -> tuple[bool, float, str]:
    """(passed, seconds, last line). A run that exceeds ``timeout`` counts as failed (a hang is
    caught by the suite's own per-test timeout too)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - start, "timed out"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode == 0, time.perf_counter() - start, lines[-1] if lines else ""


def apply(copy: Path, mutant: Mutant) -> str | None:
    """Apply ``mutant`` in the copy; returns the original text, or None if the text is not there
    exactly once (a stale mutant)."""
    path = copy / mutant.path
    original = path.read_text()
    if original.count(mutant.old) != 1:
        return None
    path.write_text(original.replace(mutant.old, mutant.new))
    return original


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="HEAD", help="the commit to mutate (default HEAD)")
    parser.add_argument("--tests", nargs="+", default=["tests/domain"])
    parser.add_argument("--only", nargs="+", help="mutant names containing any of these words")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per test run")
    args = parser.parse_args()
    mutants = [
        m for m in MUTANTS if not args.only or any(w.lower() in m.name.lower() for w in args.only)
    ]
    with tempfile.TemporaryDirectory(prefix="nf-mutants-") as tmp:
        copy = Path(tmp)
        export(args.rev, copy)
        where = subprocess.run(
            [sys.executable, "-c", "import noticeflow.domain.rules as r; print(r.__file__)"],
            cwd=copy,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not Path(where).resolve().is_relative_to(copy.resolve()):
            print(f"the copy does not shadow the installed package: rules.py is {where}")
            return 2
        passed, seconds, line = run_tests(copy, args.tests, args.timeout)
        print(
            f"{'unmutated copy':<52} {'passes' if passed else 'FAILS':<9} {seconds:5.1f}s  {line}"
        )
        if not passed:
            print("the unmutated copy must pass first")
            return 2
        original = apply(copy, SHADOW_CHECK)
        assert original is not None, "shadow check text not found"
        passed, seconds, line = run_tests(copy, args.tests, args.timeout)
        (copy / SHADOW_CHECK.path).write_text(original)
        print(f"{SHADOW_CHECK.name:<52} {'PASSES' if passed else 'fails':<9} {seconds:5.1f}s")
        if passed:
            print("a broken copy passed: the tests do not import the copy's code")
            return 2
        killed: list[Mutant] = []
        survived: list[Mutant] = []
        stale: list[Mutant] = []
        for mutant in mutants:
            original = apply(copy, mutant)
            if original is None:
                stale.append(mutant)
                print(f"{mutant.name:<52} STALE     (text not found once in {mutant.path})")
                continue
            try:
                passed, seconds, line = run_tests(copy, args.tests, args.timeout)
            finally:
                (copy / mutant.path).write_text(original)
            (survived if passed else killed).append(mutant)
            verdict = "SURVIVED" if passed else "killed"
            print(f"{mutant.name:<52} {verdict:<9} {seconds:5.1f}s  {line[:60]}", flush=True)
    judged = len(killed) + len(survived)
    ratio = len(killed) / judged if judged else 0.0
    print(
        f"\n{len(killed)} of {judged} mutants killed ({ratio:.0%}) by {' '.join(args.tests)}"
        f" at {args.rev}; {len(stale)} stale"
    )
    for mutant in survived:
        print(f"  survived: {mutant.name} ({mutant.path})")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
