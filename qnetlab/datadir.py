"""Where data lives: one data directory holding the QCoDeS database and the runs' HDF5 files.

Resolution order: an explicit path, then :func:`set_data_dir`, then the ``QNETLAB_DATA``
environment variable, then ``~/qnetlab-data``.

Also the few things several processes sharing one data directory need: an exclusive lock
(:func:`exclusive`) around database writes, database connections with a busy timeout
(:func:`open_database`), and the identity of the writing process (:func:`process_identity`,
:func:`process_state`) so a run whose process died can be told from one still running.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ENV_VAR = "QNETLAB_DATA"
DEFAULT = Path("~/qnetlab-data")
DB_NAME = "qnetlab.db"
LOCK_NAME = "qnetlab.db.lock"
#: How long a database access waits for another process before failing (s).
BUSY_TIMEOUT_S = 120.0
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


class _ProcessLock:
    """An ``fcntl.flock`` on one file, re-entrant within the process and safe across threads.

    SQLite's busy timeout does not help when two processes both hold a read lock and both want
    to write (SQLite answers "database is locked" at once to avoid the deadlock), so every
    QCoDeS write transaction of the run store takes this lock first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread_lock:
            if self._depth == 0:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    os.close(self._fd)  # closing releases the flock
                    self._fd = None


_locks: dict[Path, _ProcessLock] = {}
_locks_guard = threading.Lock()


def exclusive(path: str | os.PathLike[str] | None = None) -> _ProcessLock:
    """The data directory's write lock (one object per directory and process)."""
    lock_path = data_dir(path) / LOCK_NAME
    with _locks_guard:
        return _locks.setdefault(lock_path, _ProcessLock(lock_path))


def open_database(path: str | os.PathLike[str] | None = None, *,
                  any_thread: bool = False) -> Any:
    """A QCoDeS connection to the data directory's database, with a busy timeout.

    The schema is created or upgraded under the directory's lock (several processes may open a
    new directory at once). ``any_thread=True`` lets a flusher thread use the connection; the
    caller then serialises all use of it."""
    from qcodes.dataset.sqlite.connection import AtomicConnection
    from qcodes.dataset.sqlite.database import connect

    db = database_path(path)
    with exclusive(db.parent).hold():
        connect(db).close()  # creates / upgrades the schema, registers numpy adapters
    conn = sqlite3.connect(f"file:{db}", detect_types=sqlite3.PARSE_DECLTYPES, uri=True,
                           check_same_thread=not any_thread, timeout=BUSY_TIMEOUT_S,
                           factory=AtomicConnection)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return conn


def _proc_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_identity() -> dict[str, Any]:
    """This process as recorded in every run: pid, host and (Linux) start tick."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "proc_start": _proc_start(pid) or -1}


def process_state(pid: Any, host: Any, proc_start: Any = -1) -> str:
    """``alive``, ``dead`` or ``unknown`` (another host, or nothing recorded)."""
    if not pid or not host or str(host) != socket.gethostname():
        return "unknown"
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        pass
    start = _proc_start(int(pid))
    if start is not None and int(proc_start or -1) > 0 and start != int(proc_start):
        return "dead"  # the pid now belongs to another process
    return "alive"
