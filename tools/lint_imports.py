"""Check the import contracts of pyproject.toml ([tool.importlinter]) with ``lint-imports``.

import-linter (grimp) finds a package's modules by walking its folder, but qnetlab's subpackages
live in folders of their own (``drivers/``, ``sequences/``, ... mapped by
``[tool.setuptools.package-dir]``), so walking ``qnetlab/`` alone would miss them. This script
copies the sources into the installed layout in a temporary folder and runs ``lint-imports``
there, so every contract sees every module under its import name.

Usage: ``python tools/lint_imports.py`` (``./dev.sh test`` runs it after ruff). Exit code is
``lint-imports``'s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def package_folders(pyproject: dict) -> dict[str, Path]:
    """Import name -> source folder, for every package setuptools installs."""
    mapped = pyproject["tool"]["setuptools"].get("package-dir", {})
    packages = pyproject["tool"]["setuptools"]["packages"]
    return {name: ROOT / mapped.get(name, name.replace(".", "/")) for name in packages}


def stage(folders: dict[str, Path], into: Path) -> None:
    """Copy each package's own ``.py`` files to ``into/<import path>``."""
    for name, folder in folders.items():
        target = into / name.replace(".", "/")
        target.mkdir(parents=True, exist_ok=True)
        for source in folder.glob("*.py"):
            shutil.copy2(source, target / source.name)


def main() -> int:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        pyproject = tomllib.load(fh)
    with tempfile.TemporaryDirectory(prefix="qnetlab-imports-") as tmp:
        stage(package_folders(pyproject), Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp}
        lint = Path(sys.executable).with_name("lint-imports")
        cmd = [str(lint), "--no-cache", str(ROOT / "pyproject.toml")]
        return subprocess.call(cmd, cwd=tmp, env=env)


if __name__ == "__main__":
    sys.exit(main())
