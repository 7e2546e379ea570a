"""How long the `noticeflow` command takes to start, measured from outside (issue 11).

    python bench/cli_startup.py [--runs N] [--importtime]

Runs ``noticeflow --help`` and ``noticeflow notice --help`` N times each (default 20) in fresh
subprocesses, after one untimed warm-up run each, and prints the median and the 90th percentile
of the wall-clock time, in seconds. A help screen needs no service, so this is the time every
command pays before it does anything: Python, Typer and whatever the CLI imports at the top.
``--importtime`` also prints the ten slowest imports of ``noticeflow --help``
(``python -X importtime``, cumulative microseconds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (["--help"], ["notice", "--help"])


def _entry_point() -> list[str]:
    """The installed `noticeflow` script beside this interpreter (the entry point users run)."""
    script = Path(sys.executable).with_name("noticeflow")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "noticeflow.cli"]


def _once(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=os.environ.copy())
    return time.perf_counter() - started


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def _slowest_imports(argv: list[str], count: int = 10) -> list[tuple[int, str]]:
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            "from noticeflow.cli import main; main()",
            *argv,
        ],
        capture_output=True,
        text=True,
    )
    rows = []
    for line in result.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    return sorted(rows, reverse=True)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--importtime", action="store_true")
    args = parser.parse_args()
    base = _entry_point()
    print(f"{args.runs} runs each, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    for command in COMMANDS:
        argv = [*base, *command]
        _once(argv)  # warm-up: the file system cache, compiled bytecode
        times = [_once(argv) for _ in range(args.runs)]
        label = "noticeflow " + " ".join(command)
        print(
            f"{label:<28} median {statistics.median(times):.3f} s   p90 {_p90(times):.3f} s"
            f"   min {min(times):.3f} s"
        )
    if args.importtime:
        print("slowest imports of `noticeflow --help` (cumulative µs):")
        for micros, name in _slowest_imports(["--help"]):
            print(f"  {micros:>9}  {name}")


if __name__ == "__main__":
    main()
