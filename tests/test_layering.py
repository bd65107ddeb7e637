"""The layers of DESIGN.md, checked by reading every import (not by convention)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_CORE = (
    "PyQt6",
    "serial",
    "opentrons",
    "opentrons_shared_data",
    "labctl.drivers",
    "labctl.simulators",
    "labctl.gui",
    "matplotlib",
)
# matplotlib is allowed only in labctl/reports/diagram.py (imported lazily by `labctl diagram`).
CORE_EXCEPTIONS = {"labctl/reports/diagram.py": ("matplotlib",)}
CLOCK_CALLS = {
    ("time", "time"),
    ("time", "sleep"),
    ("time", "monotonic"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def _bad(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


def py_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", py_files("labctl"), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_qt_serial_opentrons_or_devices(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    allowed = CORE_EXCEPTIONS.get(rel, ())
    bad = [
        f"{rel}:{line}: imports {name}"
        for line, name in imports_of(path)
        if _bad(name, FORBIDDEN_IN_CORE) and not _bad(name, allowed)
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", py_files("simulators"), ids=lambda p: str(p.relative_to(ROOT)))
def test_simulators_never_import_drivers_or_gui(path: Path) -> None:
    bad = [n for _, n in imports_of(path) if _bad(n, ("labctl.drivers", "labctl.gui", "drivers"))]
    assert not bad


@pytest.mark.parametrize("path", py_files("drivers"), ids=lambda p: str(p.relative_to(ROOT)))
def test_drivers_never_import_simulators_or_gui(path: Path) -> None:
    bad = [
        n for _, n in imports_of(path) if _bad(n, ("labctl.simulators", "labctl.gui", "simulators"))
    ]
    assert not bad


@pytest.mark.parametrize("path", py_files("gui"), ids=lambda p: str(p.relative_to(ROOT)))
def test_gui_never_imports_drivers_or_simulators(path: Path) -> None:
    bad = [n for _, n in imports_of(path) if _bad(n, ("labctl.drivers", "labctl.simulators"))]
    assert not bad


@pytest.mark.parametrize(
    "path",
    [
        p
        for f in ("labctl", "drivers", "simulators", "gui")
        for p in py_files(f)
        if p.name != "clock.py"
    ],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_direct_clock_calls_outside_the_clock_module(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
            name = (
                base.id
                if isinstance(base, ast.Name)
                else base.attr
                if isinstance(base, ast.Attribute)
                else None
            )
            if (name, node.func.attr) in CLOCK_CALLS:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}.{node.func.attr}()")
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "time"
            and any(a.name in ("time", "sleep", "monotonic") for a in node.names)
        ):
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: from time import ...")
    assert not bad, "\n".join(bad)


def test_the_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    p = tmp_path / "x.py"
    p.write_text("import os\nfrom PyQt6.QtWidgets import QWidget\nimport serial.tools\n")
    names = [n for _, n in imports_of(p) if _bad(n, FORBIDDEN_IN_CORE)]
    assert names == ["PyQt6.QtWidgets", "PyQt6.QtWidgets.QWidget", "serial.tools"]
