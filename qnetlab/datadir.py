"""Where data lives: one data directory holding the QCoDeS database and the runs' HDF5 files.

Resolution order: an explicit path, then :func:`set_data_dir`, then the ``QNETLAB_DATA``
environment variable, then ``~/qnetlab-data``.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "QNETLAB_DATA"
DEFAULT = Path("~/qnetlab-data")
DB_NAME = "qnetlab.db"
_override: Path | None = None


def set_data_dir(path: str | os.PathLike[str] | None) -> None:
    """Set (or with ``None`` clear) the process-wide data directory."""
    global _override
    _override = None if path is None else Path(path)


def data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The data directory to use (created if missing)."""
    if path is not None:
        chosen = Path(path)
    elif _override is not None:
        chosen = _override
    elif os.environ.get(ENV_VAR):
        chosen = Path(os.environ[ENV_VAR])
    else:
        chosen = DEFAULT
    chosen = chosen.expanduser().resolve()
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


def database_path(path: str | os.PathLike[str] | None = None) -> Path:
    return data_dir(path) / DB_NAME
