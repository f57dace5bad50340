"""Where generated lab and station files live, written whole or not at all.

The cache directory is ``$QNETLAB_CACHE/topologies``, else ``$XDG_CACHE_HOME/qnetlab/topologies``
(``~/.cache/qnetlab/topologies``). A generated file is a pure function of its spec, seed and
this version of qnetlab: it is rewritten only when its text differs, through a temporary file
in the same directory and an atomic rename, so several processes generating the same spec at
once leave one intact file and a reader never sees half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ENV_VAR = "QNETLAB_CACHE"


def cache_dir() -> Path:
    """The directory for generated files (created if missing)."""
    root = os.environ.get(ENV_VAR)
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "qnetlab")
    path = Path(root) / "topologies"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cache directory {path} for generated topologies is not usable "
                      f"({exc.strerror or exc}); choose another with {ENV_VAR}=DIR") from None
    return path


def write_if_changed(path: Path, text: str) -> Path:
    """Make ``path`` hold exactly ``text``: untouched if it already does, else replaced
    atomically (temporary file, fsync, rename). Returns the absolute path."""
    path = Path(path).absolute()
    try:
        if path.read_text() == text:
            return path
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.",
                                     suffix=".tmp", delete=False) as tmp:
        try:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
            os.chmod(tmp.name, 0o644)  # a cache and user files, not secrets (mkstemp: 0600)
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)
    return path
