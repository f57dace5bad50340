"""Run every benchmark and print all figures as one JSON object.

Each ``bench_*.py`` module beside this file exposes ``run() -> dict[str, float]``; a figure that
is a ratio is measured against its baseline in the same process, so a busy machine shifts both.
Each figure's docstring says what it times and against what; ``docs/benchmarks.md`` lists them.
Usage: ``python benchmarks/run.py [name-substring ...]``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    figures: dict[str, float] = {}
    for path in sorted(HERE.glob("bench_*.py")):
        if argv and not any(a in path.stem for a in argv):
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        assert spec.loader is not None
        spec.loader.exec_module(module)
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout one JSON object
            figures.update(module.run())
    print(json.dumps(figures, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
