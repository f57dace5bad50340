"""An exclusive, visible lock on a data directory's calibration, shared by processes and hosts.

Two processes calibrating the same data directory at once would measure the same nodes twice
and record every quantity twice. :class:`CalibrationLock` serialises them with ``fcntl.flock``
on ``calibration.lock`` in the data directory: the kernel releases the lock when its holder
exits or is killed, so a lock is never left behind by a dead process. The holder writes its pid,
host and start time into the file; a process that has to wait says so in one line naming them,
then blocks until the lock is free (a wall-clock wait for another process, not a lab wait).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

LOCK_NAME = "calibration.lock"


def print_waiting(message: str) -> None:
    """Default wait notice: one line on stderr."""
    print(message, file=sys.stderr, flush=True)


class CalibrationLock:
    """``with CalibrationLock(data_dir):`` holds the data directory's calibration exclusively.

    Re-entrant within one object (nested ``with`` on the same lock only counts), so a
    calibrator can take it for ``maintain`` and again for ``approve``.
    """

    def __init__(self, data_dir: str | os.PathLike[str],
                 on_wait: Callable[[str], None] | None = print_waiting) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self.on_wait = on_wait
        self._fd: int | None = None
        self._depth = 0

    def holder(self) -> dict[str, object]:
        """What the current holder wrote (pid, host, since); empty if unknown."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def describe_holder(self) -> str:
        info = self.holder()
        if not info:
            return "another process"
        return f"pid {info.get('pid')} on host {info.get('host')} since {info.get('since')}"

    def acquire(self) -> None:
        if self._depth:
            self._depth += 1
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if self.on_wait is not None:
                    self.on_wait(f"qnetlab: waiting for the calibration of {self.path.parent}, "
                                 f"held by {self.describe_holder()}")
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._write_holder(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._depth = fd, 1

    def _write_holder(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)

    def release(self) -> None:
        if self._depth == 0 or self._fd is None:
            return
        self._depth -= 1
        if self._depth:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> CalibrationLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
