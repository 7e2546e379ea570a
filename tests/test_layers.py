"""The layers are written down (pyproject.toml's import-linter contracts, checked by
`lint-imports` in .ci/run): every module of noticeflow sits in a layer, so a new one cannot slip
past the contracts unplaced."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import noticeflow

ROOT = Path(__file__).resolve().parents[1]
NOT_CODE = {"noticeflow.migrations", "noticeflow.templates"}


def _layered() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    names: set[str] = set()
    for layer in layers:
        names |= {part.strip() for part in layer.replace("|", ":").split(":") if part.strip()}
    return names


def test_every_noticeflow_module_has_a_layer():
    modules = {f"noticeflow.{m.name}" for m in pkgutil.iter_modules(noticeflow.__path__)}
    unplaced = sorted(modules - _layered() - NOT_CODE)
    assert not unplaced, f"add these to a layer in pyproject.toml [tool.importlinter]: {unplaced}"


def test_the_layers_name_only_modules_that_exist():
    modules = {f"noticeflow.{m.name}" for m in pkgutil.iter_modules(noticeflow.__path__)}
    top = {"activities", "workflows", "worker"}
    assert not sorted(_layered() - modules - top)
