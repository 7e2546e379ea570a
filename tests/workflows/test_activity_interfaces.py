"""The workflow calls activities through typed interfaces (noticeflow/activity_interfaces.py); the
worker registers implementations (activities/). These pure tests keep the two in step — the same
type names (what histories record) and the same parameter and return annotations — and keep name
strings out of the workflow. No server, no database."""

from __future__ import annotations

import ast
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity

from noticeflow.activity_interfaces import INTERFACES, Sending
from noticeflow.application.deps import Deps
from noticeflow.contracts import Activity
from worker.main import activities_for

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
ACTIVITY_NAMES = {value for key, value in vars(Activity).items() if not key.startswith("_")}
# Only their typed forms: a workflow that calls these with a string or a bare function loses the
# interface's name and result type.
UNTYPED_CALLS = {"execute_activity", "start_activity", "execute_local_activity"}


def _name(fn: Callable[..., Any]) -> str:
    defn = activity._Definition.must_from_callable(fn)
    assert defn.name, f"{fn!r} is a dynamic activity"
    return defn.name


def _interface_methods() -> dict[str, Callable[..., Any]]:
    methods: dict[str, Callable[..., Any]] = {}
    for interface in INTERFACES:
        for _, fn in inspect.getmembers(interface, inspect.isfunction):
            if activity._Definition.from_callable(fn) is None:
                continue
            name = _name(fn)
            assert name not in methods, f"{name} is declared by two interfaces"
            methods[name] = fn
    return methods


def _registered() -> dict[str, Callable[..., Any]]:
    # The worker's own list; the activities only keep their dependencies until they run.
    deps = Deps(pool=None, mailer=None, links=None)  # type: ignore[arg-type]
    registered: dict[str, Callable[..., Any]] = {}
    for fn in activities_for(deps):
        name = _name(fn)
        assert name not in registered, f"{name} is registered twice"
        registered[name] = getattr(fn, "__func__", fn)
    return registered


def _signature(fn: Callable[..., Any]) -> tuple[list[tuple[str, Any]], Any]:
    hints = typing.get_type_hints(fn)
    parameters = list(inspect.signature(fn).parameters.values())[1:]  # without self
    return [(p.name, hints.get(p.name)) for p in parameters], hints.get("return")


def test_every_interface_method_has_an_implementation_with_the_same_name_and_types():
    interfaces, registered = _interface_methods(), _registered()
    missing = sorted(set(interfaces) - set(registered))
    assert not missing, f"declared in an interface, registered by no worker: {missing}"
    for name, declared in interfaces.items():
        assert _signature(registered[name]) == _signature(declared), name


def test_every_registered_activity_is_declared_by_an_interface():
    undeclared = sorted(set(_registered()) - set(_interface_methods()))
    assert not undeclared, f"registered without an interface the workflow could call: {undeclared}"


def test_the_interfaces_take_their_names_from_the_contracts():
    # The names are what running notices' histories record: renaming one breaks their replay.
    assert set(_interface_methods()) <= ACTIVITY_NAMES
    for name, fn in _interface_methods().items():
        assert fn.__name__ == name, f"{fn.__qualname__} is registered as {name}"


async def test_an_interface_registered_by_mistake_says_so():
    with pytest.raises(NotImplementedError, match="is an interface"):
        await Sending().check_approval(None)  # type: ignore[arg-type]


def _workflow_sources() -> list[tuple[Path, ast.Module]]:
    paths = sorted(WORKFLOWS.glob("*.py"))
    assert paths
    return [(path, ast.parse(path.read_text(), str(path))) for path in paths]


def test_no_workflow_code_names_an_activity_by_string():
    interface_names = {interface.__name__ for interface in INTERFACES}
    problems: list[str] = []
    for path, tree in _workflow_sources():
        for node in ast.walk(tree):
            where = f"{path.name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Name) and node.id == "Activity":
                problems.append(f"{where}: uses the names class Activity")
            if isinstance(node, ast.Constant) and node.value in ACTIVITY_NAMES:
                problems.append(f"{where}: the string {node.value!r}")
            if not isinstance(node, ast.Call):
                continue
            called = node.func.attr if isinstance(node.func, ast.Attribute) else None
            if called in UNTYPED_CALLS:
                problems.append(f"{where}: workflow.{called} (use the _method form)")
            if called in {"_activity", "execute_activity_method", "start_activity_method"}:
                target = node.args[0] if node.args else None
                if not (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id in interface_names
                ) and not (isinstance(target, ast.Name) and target.id == "activity"):
                    problems.append(f"{where}: {called} of {ast.unparse(target or node)}")
    assert not problems, problems
