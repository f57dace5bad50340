"""One process drives an instrument at a time: a lock per instrument address, across processes.

Loading a hardware station takes an exclusive ``fcntl.flock`` on one lock file per instrument
address (under :func:`lock_dir`) and writes the holder into it: process id, host, since when,
station file. A second process is refused with one line naming that holder. The kernel drops
the lock when its process dies, however it dies, so a lock left by a dead (even SIGKILLed)
process is taken over by the next one, which says whose it was.

Instruments of a simulated lab (``@qnetlab``, ``@sim``) live inside their process: every
process has its own lab, so they take no lock. For a lab driven from several hosts, point
``QNETLAB_LOCK_DIR`` at a directory all of them share.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qnetlab.errors import QnetlabError

log = logging.getLogger("qnetlab.stations")
SIMULATED = ("@qnetlab", "@sim")


class StationInUse(QnetlabError):
    """Another live process holds an instrument of the station."""


def lock_dir() -> Path:
    """``$QNETLAB_LOCK_DIR``, else ``qnetlab-locks`` in the system's temporary directory
    (shared by every user of the machine)."""
    env = os.environ.get("QNETLAB_LOCK_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / "qnetlab-locks"


def hardware_addresses(instruments: dict[str, Any]) -> dict[str, str]:
    """``{address: instrument name}`` of a station file's instruments that are not simulated."""
    found = {}
    for name, spec in instruments.items():
        if not isinstance(spec, dict) or not spec.get("address"):
            continue
        visalib = str((spec.get("init") or {}).get("visalib") or "@ivi")
        if not visalib.endswith(SIMULATED):
            found[str(spec["address"])] = str(name)
    return found


@dataclass
class InstrumentLock:
    """The locks a station holds; :meth:`release` when the station closes."""

    files: list[Any] = field(default_factory=list)
    taken_over: list[str] = field(default_factory=list)

    def release(self) -> None:
        """Empty the holder records and unlock (safe to call twice)."""
        while self.files:
            f = self.files.pop()
            try:
                f.seek(0)
                f.truncate()
                f.flush()
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()


def _holder_text(record: dict[str, Any]) -> str:
    return (f"pid {record.get('pid', '?')} on host {record.get('host', '?')} since "
            f"{record.get('since', '?')} (station {record.get('station', '?')})")


def _read_record(f: Any) -> dict[str, Any]:
    f.seek(0)
    try:
        record = json.loads(f.read() or "{}")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _open_lock_file(directory: Path, address: str) -> Any:
    directory.mkdir(parents=True, exist_ok=True)
    try:
        directory.chmod(0o1777)  # shared by every user, like /tmp
    except OSError:
        pass
    path = directory / f"{hashlib.sha256(address.encode()).hexdigest()[:20]}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    return os.fdopen(fd, "r+", encoding="utf-8")


def _take(f: Any, address: str, name: str, station: str, lock: InstrumentLock) -> None:
    """Lock one open lock file or raise :class:`StationInUse` naming its holder."""
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_record(f)
        f.close()
        raise StationInUse(
            f"{station}: instrument {name} ({address}) is in use by {_holder_text(holder)}; "
            "stop that process first") from None
    previous = _read_record(f)
    if previous.get("pid"):
        note = f"{name} ({address}): took over the lock of {_holder_text(previous)}, which " \
               "is no longer running"
        lock.taken_over.append(note)
        log.warning(note)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "address": address,
              "instrument": name, "station": station,
              "since": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    f.seek(0)
    f.truncate()
    f.write(json.dumps(record))
    f.flush()
    os.fsync(f.fileno())


def acquire(addresses: dict[str, str], station: str,
            directory: Path | None = None) -> InstrumentLock:
    """Lock every address (in a fixed order, so two stations sharing instruments cannot
    deadlock); all or none: on refusal the ones taken are released again."""
    lock = InstrumentLock()
    where = directory or lock_dir()
    try:
        for address in sorted(addresses):
            f = _open_lock_file(where, address)
            _take(f, address, addresses[address], station, lock)
            lock.files.append(f)
    except BaseException:
        lock.release()
        raise
    return lock
