"""Versioned calibration records, with provenance, in one SQLite file of the data directory.

Every update is a new row (value, uncertainty, unit, lab time, wall time, source run GUID, fit
quality, previous value, status); nothing is overwritten, so the state as of any past time can be
read back and re-applied. Updates that jump further than their quantity's bound are stored as
``held`` and applied only after :meth:`CalibrationStore.approve`.

Crash and concurrency safety: :meth:`CalibrationStore.transaction` groups writes into one SQLite
transaction (``BEGIN IMMEDIATE``), so a calibration step commits all its records and its node
state at once or not at all, even under SIGKILL; every multi-statement read runs inside one read
transaction, a consistent snapshot in WAL mode. Several processes may share a data directory:
the connection waits up to ``BUSY_TIMEOUT_S`` for another writer, and the schema is created
under an ``fcntl`` lock so that two processes opening a new directory do not collide.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qnetlab.datadir import data_dir as resolve_data_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    quantity TEXT NOT NULL, target TEXT NOT NULL,
    value REAL NOT NULL, uncertainty REAL, unit TEXT,
    lab_time REAL NOT NULL, wall_time TEXT NOT NULL,
    source_run TEXT, fit_quality REAL, previous REAL,
    status TEXT NOT NULL CHECK (status IN ('applied', 'held', 'approved', 'rejected')),
    note TEXT
);
CREATE INDEX IF NOT EXISTS records_qt ON records (quantity, target, lab_time);
CREATE TABLE IF NOT EXISTS node_state (
    cal TEXT NOT NULL, target TEXT NOT NULL,
    last_success REAL, calibrated_at REAL, last_outcome TEXT, detail TEXT, updated REAL,
    PRIMARY KEY (cal, target)
);
"""
LIVE = ("applied", "approved")
BUSY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Record:
    id: int
    quantity: str
    target: str
    value: float
    uncertainty: float | None
    unit: str
    lab_time: float
    wall_time: str
    source_run: str | None
    fit_quality: float | None
    previous: float | None
    status: str
    note: str | None


@dataclass
class NodeState:
    """What the engine remembers of one calibration on one target."""

    last_success: float | None = None  # lab time of the last in-spec check or calibration
    calibrated_at: float | None = None  # lab time its values last changed
    last_outcome: str | None = None  # in_spec, calibrated, failed, held
    detail: str = ""


class _LockedConnection:
    """A SQLite connection shared by the threads of one process (concurrent calibration
    steps): one statement at a time, its rows read before the lock goes, and a transaction
    holds the lock throughout (:meth:`CalibrationStore.transaction`), so one thread's
    statements never land inside another's transaction. Nothing waits on the lab clock while
    holding it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.mutex = threading.RLock()

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> _Rows:
        with self.mutex:
            cur = self.conn.execute(sql, args)
            return _Rows(cur.fetchall(), cur.lastrowid)

    def executescript(self, script: str) -> None:
        with self.mutex:
            self.conn.executescript(script)

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def close(self) -> None:
        with self.mutex:
            self.conn.close()

    def __getattr__(self, name: str) -> Any:  # the rest of the connection's interface
        return getattr(self.conn, name)


class _Rows(list):
    """A statement's rows, read while the connection was locked (a cursor's interface)."""

    def __init__(self, rows: list[Any], lastrowid: int | None) -> None:
        super().__init__(rows)
        self.lastrowid = lastrowid

    def fetchone(self) -> Any:
        return self[0] if self else None

    def fetchall(self) -> list[Any]:
        return list(self)


class CalibrationStore:
    """Calibration records and engine state; ``calibration.db`` in the data directory.
    Thread-safe: concurrent calibration steps share one store."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(resolve_data_dir(data_dir)) / "calibration.db"
        self._conn = _LockedConnection(sqlite3.connect(
            self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False))
        self._depth, self._writing = 0, False  # nesting and kind of transaction()
        self._init_schema()
        #: :meth:`version` of the live values this process has put on its instruments (or
        #: found there when it opened the store); a newer version was written by someone else
        self.applied_version = self.version()

    def _init_schema(self) -> None:
        """WAL mode and tables, under a file lock: switching a new database to WAL while
        another process does the same fails at once with "database is locked"."""
        with open(self.path.with_name("calibration.db.init-lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[None]:
        """One SQLite transaction around the block: all its writes or none (also under
        SIGKILL), and its reads a consistent snapshot. A write transaction takes the write
        lock up front (``BEGIN IMMEDIATE``) so that what it reads is what it writes against.
        Nested calls join the outer transaction (a write may not nest in a read: upgrading a
        snapshot to a writer fails at once when another process wrote meanwhile)."""
        with self._conn.mutex:
            yield from self._transaction(write)

    def _transaction(self, write: bool) -> Iterator[None]:
        if self._depth:
            if write and not self._writing:
                raise RuntimeError("a calibration-store write inside a read transaction")
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        self._depth, self._writing = 1, write
        try:
            yield
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        else:
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        finally:
            self._depth = 0

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        with self.transaction():
            cur = self._conn.execute(sql, args)
        return int(cur.lastrowid or 0)

    def version(self) -> tuple[int, int]:
        """Changes whenever the live values change: (newest record id, approvals so far)."""
        row = self._conn.execute("SELECT MAX(id), COUNT(*) FILTER (WHERE status='approved') "
                                 "FROM records").fetchone()
        return int(row[0] or 0), int(row[1] or 0)

    # --- records ------------------------------------------------------------------------------
    def current(self, quantity: str, target: str) -> Record | None:
        """The live value of a quantity on a target (latest applied or approved)."""
        row = self._conn.execute(
            "SELECT * FROM records WHERE quantity=? AND target=? AND status IN ('applied',"
            "'approved') ORDER BY lab_time DESC, id DESC LIMIT 1", (quantity, target)).fetchone()
        return Record(*row) if row else None

    def jumps(self, quantity: str, target: str, value: float, max_jump: float | None) -> bool:
        """Whether ``value`` moves further from the live value than ``max_jump``."""
        live = self.current(quantity, target)
        return max_jump is not None and live is not None and abs(value - live.value) > max_jump

    def record(self, quantity: str, target: str, value: float, *, lab_time: float,
               unit: str = "", uncertainty: float | None = None, source_run: str | None = None,
               fit_quality: float | None = None, max_jump: float | None = None,
               hold: bool = False, note: str | None = None) -> Record:
        """Store an update; held (not live) when it jumps more than ``max_jump`` or when the
        caller holds it with the rest of its node (``hold``)."""
        with self.transaction():  # previous and the jump are judged against what is written
            live = self.current(quantity, target)
            previous = live.value if live else None
            jumped = self.jumps(quantity, target, value, max_jump)
            status = "held" if (jumped or hold) else "applied"
            if jumped:
                note = (note or "") + (f"jump {value - previous:+.6g} {unit} exceeds the bound "
                                       f"{max_jump:g} {unit}: awaiting approval")
            rid = self._write(
                    "INSERT INTO records (quantity, target, value, uncertainty, unit, lab_time, "
                "wall_time, source_run, fit_quality, previous, status, note) VALUES "
                "(?,?,?,?,?,?,?,?,?,?,?,?)",
                (quantity, target, float(value), uncertainty, unit, float(lab_time),
                 dt.datetime.now(dt.UTC).isoformat(), source_run, fit_quality, previous, status,
                 note))
            return self.get(rid)

    def get(self, record_id: int) -> Record:
        row = self._conn.execute("SELECT * FROM records WHERE id=?", (record_id,)).fetchone()
        if row is None:
            raise KeyError(f"no calibration record {record_id}")
        return Record(*row)

    def held(self) -> list[Record]:
        rows = self._conn.execute("SELECT * FROM records WHERE status='held' ORDER BY id")
        return [Record(*r) for r in rows]

    def approve(self, record_id: int, lab_time: float | None = None) -> Record:
        """Make a held update live (its lab time becomes the approval time if given)."""
        rec = self.get(record_id)
        if rec.status != "held":
            raise ValueError(f"record {record_id} is {rec.status}, not held")
        self._write("UPDATE records SET status='approved', lab_time=COALESCE(?, lab_time) "
                    "WHERE id=?", (lab_time, record_id))
        return self.get(record_id)

    def reject(self, record_id: int) -> Record:
        rec = self.get(record_id)
        if rec.status != "held":
            raise ValueError(f"record {record_id} is {rec.status}, not held")
        self._write("UPDATE records SET status='rejected' WHERE id=?", (record_id,))
        return self.get(record_id)

    def history(self, quantity: str, target: str) -> list[Record]:
        rows = self._conn.execute("SELECT * FROM records WHERE quantity=? AND target=? "
                                  "ORDER BY lab_time, id", (quantity, target))
        return [Record(*r) for r in rows]

    def state(self, at: float | None = None) -> dict[tuple[str, str], Record]:
        """Live value of every quantity and target, now or as of lab time ``at``."""
        rows = self._conn.execute(
            "SELECT * FROM records WHERE status IN ('applied','approved') AND lab_time <= ? "
            "ORDER BY lab_time, id", (float("inf") if at is None else at,))
        out: dict[tuple[str, str], Record] = {}
        for row in rows:
            rec = Record(*row)
            out[(rec.quantity, rec.target)] = rec
        return out

    def as_dict(self, at: float | None = None) -> dict[str, dict[str, float]]:
        """``{target: {quantity: value}}`` (what runs store as their calibration state)."""
        out: dict[str, dict[str, float]] = {}
        for (quantity, target), rec in self.state(at).items():
            out.setdefault(target, {})[quantity] = rec.value
        return out

    def latest_time(self) -> float:
        with self.transaction(write=False):
            row = self._conn.execute("SELECT MAX(lab_time) FROM records").fetchone()
            row2 = self._conn.execute("SELECT MAX(updated) FROM node_state").fetchone()
        return max(row[0] or 0.0, row2[0] or 0.0)

    def apply(self, setters: dict[str, Callable[[str, float], None]],
              at: float | None = None) -> list[Record]:
        """Re-apply the state (now or as of ``at``) through ``setters[quantity](target, v)``."""
        applied = []
        with self.transaction(write=False):
            state, version = self.state(at), self.version()
        for (quantity, target), rec in sorted(state.items()):
            setter = setters.get(quantity)
            if setter is not None:
                setter(target, rec.value)
                applied.append(rec)
        if at is None:
            self.applied_version = version
        return applied

    # --- engine state -------------------------------------------------------------------------
    def node_states(self) -> dict[tuple[str, str], NodeState]:
        rows = self._conn.execute("SELECT cal, target, last_success, calibrated_at, "
                                  "last_outcome, detail FROM node_state")
        return {(c, t): NodeState(s, ca, o, d or "") for c, t, s, ca, o, d in rows}

    def save_node_state(self, cal: str, target: str, state: NodeState, now: float) -> None:
        self._write(
            "INSERT INTO node_state (cal, target, last_success, calibrated_at, last_outcome, "
            "detail, updated) VALUES (?,?,?,?,?,?,?) ON CONFLICT(cal, target) DO UPDATE SET "
            "last_success=excluded.last_success, calibrated_at=excluded.calibrated_at, "
            "last_outcome=excluded.last_outcome, detail=excluded.detail, updated=excluded.updated",
            (cal, target, state.last_success, state.calibrated_at, state.last_outcome,
             state.detail, now))
