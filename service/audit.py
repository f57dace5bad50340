"""The append-only audit log of every write to the service: who, what, when, from where, outcome.

One JSON object a line in ``<data>/service/audit.jsonl`` (any tool reads it). Records are only
ever appended, under an exclusive ``fcntl`` lock (several processes may write: the service and
``qnetlab serve keys ...``), then flushed and fsynced before the write is answered. Each record
carries the SHA-256 of the previous line and its own (a hash chain): :func:`verify` finds any
record that was changed, removed or reordered afterwards.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


class AuditLog:
    """Appends records to one data directory's audit log and reads them back."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / "service" / "audit.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, who: str, what: str, source: str, outcome: str, **extra: Any
               ) -> dict[str, Any]:
        """Append one record (fsynced before returning)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            prev, seq = _last(fd)
            record = {"seq": seq + 1, "time_utc": _now(), "who": who, "what": what,
                      "from": source, "outcome": outcome, **extra, "prev": prev}
            record["hash"] = _hash(record)
            os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock
        return record

    def records(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The records, oldest first (the last ``limit`` if given)."""
        if not self.path.exists():
            return []
        lines = self.path.read_text().splitlines()
        if limit is not None:
            lines = lines[-limit:] if limit > 0 else []
        return [json.loads(line) for line in lines if line.strip()]

    def verify(self) -> tuple[bool, str]:
        """(intact, why not): every record's hash and its link to the one before."""
        prev = GENESIS
        for n, record in enumerate(self.records(), start=1):
            if record.get("prev") != prev:
                return False, f"record {n}: chain broken (a record before it was changed, " \
                              "removed or reordered)"
            if record.get("hash") != _hash({k: v for k, v in record.items() if k != "hash"}):
                return False, f"record {n}: content does not match its hash"
            prev = record["hash"]
        return True, ""


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _last(fd: int) -> tuple[str, int]:
    """(hash, seq) of the file's last record, read from its tail."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0:
        return GENESIS, 0
    chunk = min(size, 65536)
    tail = os.pread(fd, chunk, size - chunk).decode(errors="replace")
    last = tail.rstrip("\n").rsplit("\n", 1)[-1]
    record = json.loads(last)
    return record["hash"], int(record["seq"])
