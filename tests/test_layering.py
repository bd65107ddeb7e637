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


# --- the house: no circles, no file or class too big, no borrowed private names ------------

FOLDERS = {
    "labctl": "labctl",
    "drivers": "labctl.drivers",
    "simulators": "labctl.simulators",
    "gui": "labctl.gui",
}
MAX_FILE_SHARE = 0.08  # of all non-test lines
MAX_CLASS_LINES = 400


def modules() -> dict[str, Path]:
    """Every module of the installed package, by its import name."""
    out = {}
    for folder, pkg in FOLDERS.items():
        for p in py_files(folder):
            parts = list(p.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = p
    return out


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package modules it imports, anywhere in its body (a lazy import inside
    a function is still a dependency: it only hides a circle until that function runs)."""

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                deps.update(filter(None, (known(a.name) for a in node.names)))
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    mod = ".".join(base[: len(base) - node.level + 1] + ([mod] if mod else []))
                deps.update(filter(None, (known(f"{mod}.{a.name}") for a in node.names)))
        deps.discard(name)
        graph[name] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def room(module: str) -> str:
    """The part of the house a module belongs to: labctl.plan, labctl.jobs, labctl.drivers..."""
    return ".".join(module.split(".")[:2])


def test_no_import_circles_between_modules() -> None:
    found = circles(import_graph(modules()))
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_import_circles_between_the_rooms_of_the_house() -> None:
    rooms: dict[str, set[str]] = {}
    for mod, deps in import_graph(modules()).items():
        rooms.setdefault(room(mod), set()).update(room(d) for d in deps if room(d) != room(mod))
    found = circles(rooms)
    assert not found, "circles between packages:\n" + "\n".join(" <-> ".join(c) for c in found)


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_file_holds_more_than_8_percent_of_the_code() -> None:
    files = list(modules().values())
    total = sum(_lines(p) for p in files)
    limit = MAX_FILE_SHARE * total
    big = [f"{p.relative_to(ROOT)}: {_lines(p)} lines" for p in files if _lines(p) > limit]
    assert not big, f"over {limit:.0f} lines (8% of {total}):\n" + "\n".join(big)


def classes_over(path: Path, limit: int) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [
        f"{path.relative_to(ROOT)}:{n.lineno}: class {n.name} has {n.end_lineno - n.lineno + 1} lines"
        for n in ast.walk(tree)
        if isinstance(n, ast.ClassDef)
        and n.end_lineno is not None
        and n.end_lineno - n.lineno + 1 > limit
    ]


def test_no_class_over_400_lines() -> None:
    big = [line for p in modules().values() for line in classes_over(p, MAX_CLASS_LINES)]
    assert not big, "\n".join(big)


def private_imports(path: Path, module: str) -> list[str]:
    """``from other import _name``: a module of ours borrowing another's private name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [
        f"{path.relative_to(ROOT)}:{n.lineno}: imports {a.name} from {n.module or '.'}"
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom)
        and (n.level > 0 or (n.module or "").split(".")[0] == "labctl")
        for a in n.names
        if a.name.startswith("_") and not a.name.startswith("__") and n.module != module
    ]


def test_no_module_imports_another_modules_private_names() -> None:
    bad = [line for name, p in modules().items() for line in private_imports(p, name)]
    assert not bad, "\n".join(bad)


def test_the_house_checks_can_fail(tmp_path: Path) -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    big = tmp_path / "big.py"
    big.write_text("class Big:\n" + "    x = 1\n" * 401 + "class Small:\n    pass\n")
    # classes_over reports paths relative to the repository: place the file there.
    probe = ROOT / "tests" / "_house_probe.py"
    probe.write_text(big.read_text())
    try:
        assert classes_over(probe, MAX_CLASS_LINES) == [
            "tests/_house_probe.py:1: class Big has 402 lines"
        ]
        probe.write_text(
            "from labctl.engine.loop import _hidden\nfrom opentrons.cli import _theirs\n"
        )
        assert private_imports(probe, "tests._house_probe") == [
            "tests/_house_probe.py:1: imports _hidden from labctl.engine.loop"
        ]
    finally:
        probe.unlink()
    assert room("labctl.engine.loop") == "labctl.engine" and room("labctl.jobs") == "labctl.jobs"
