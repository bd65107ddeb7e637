"""Type-check labctl as it installs: mypy over labctl, drivers and simulators (and the gui).

The four code folders install as one package (``drivers/`` is ``labctl.drivers``, ...;
pyproject.toml's package-dir). mypy cannot follow setuptools' editable-install finder, so
this lays out the installed tree as symbolic links in a temporary folder, runs mypy there
with the settings of ``[tool.mypy]`` in pyproject.toml, and prints each error with the
path of the file in this repository. Exit code: mypy's (0 when clean).

    python tools/typecheck.py            # labctl, drivers, simulators, gui
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"drivers": "drivers", "simulators": "simulators", "gui": "gui"}  # labctl.<key>


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="labctl-typecheck-") as tmp:
        tree = Path(tmp) / "labctl"
        tree.mkdir()
        for entry in (ROOT / "labctl").iterdir():
            if entry.name != "__pycache__":
                (tree / entry.name).symlink_to(entry)
        for sub, folder in FOLDERS.items():
            (tree / sub).symlink_to(ROOT / folder)
        # mypy finds the package from the working folder: run from the tree's parent.
        os.chdir(tmp)
        out, errs, code = api.run(
            [
                "--config-file",
                str(ROOT / "pyproject.toml"),
                "--cache-dir",
                str(ROOT / ".mypy_cache"),
                "-p",
                "labctl",
            ]
        )
        prefix = "labctl/"
        for line in out.splitlines():
            sys.stdout.write(_to_repo_path(line, prefix) + "\n")
        sys.stderr.write(errs)
        return code


def _to_repo_path(line: str, prefix: str) -> str:
    """'labctl/drivers/x.py:3: error' -> 'drivers/x.py:3: error' (the file in the repo)."""
    if not line.startswith(prefix):
        return line
    rest = line[len(prefix) :]
    head = rest.split("/", 1)[0]
    return rest if head in FOLDERS else line


if __name__ == "__main__":
    raise SystemExit(main())
