"""The service's state in the data directory: API keys, the job queue and leases (SQLite).

One SQLite file (``<data>/service/service.sqlite``, WAL) so that several processes sharing the
data directory (the service, ``qnetlab serve keys ...``, a second reader) never corrupt it:
every write is one ``BEGIN IMMEDIATE`` transaction. Times are wall-clock UTC seconds (keys and
leases expire in the operators' time); job results carry the lab time they ran at.

Jobs go ``queued -> running -> done | failed | interrupted``: a job found ``running`` when the
service starts was cut off by the death of the previous process and becomes ``interrupted``
(never run again by itself); :meth:`ServiceStore.claim_next` hands each queued job to exactly
one worker.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import auth

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, scopes TEXT NOT NULL,
    digest TEXT NOT NULL, created REAL NOT NULL, expires REAL NOT NULL, revoked REAL,
    created_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, resource TEXT NOT NULL,
    params TEXT NOT NULL, state TEXT NOT NULL, submitted_by TEXT NOT NULL,
    submitted REAL NOT NULL, started REAL, finished REAL, pid INTEGER, result TEXT,
    error TEXT, idem TEXT, UNIQUE (submitted_by, idem));
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, resource, id);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key_id TEXT NOT NULL, holder TEXT NOT NULL,
    reason TEXT NOT NULL, granted REAL NOT NULL, expires REAL NOT NULL, released REAL,
    released_by TEXT);
"""
JOB_STATES = ("queued", "running", "done", "failed", "interrupted")
MAX_LEASE_S = 12 * 3600.0


class AuthError(Exception):
    """A presented key is missing, malformed, unknown, wrong, expired or revoked (401)."""


class Conflict(Exception):
    """The write collides with the state (a lease held by someone else, ...): 409."""


class NotFound(Exception):
    """No such key, job or lease: 404."""


def iso(t: float | None) -> str | None:
    """UTC ISO-8601 of a wall-clock time, to the second."""
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class ServiceStore:
    """Keys, jobs and leases of one data directory; safe from many threads and processes."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(data_dir) / "service"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "service.sqlite"
        self._local = threading.local()
        self._conn().executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: other writers (threads or processes) wait their turn."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- keys ---------------------------------------------------------------------------

    def create_key(self, name: str, role: str, expires_s: float, created_by: str
                   ) -> tuple[dict[str, Any], str]:
        """A new key: (its public row, the token, shown only this once)."""
        auth.check_role(role)
        name = name.strip()
        if not name or len(name) > 64 or not name.isprintable():
            raise ValueError(f"name {name!r} is not allowed; allowed: 1 to 64 printable "
                             "characters")
        key_id, token, digest = auth.new_token()
        now = time.time()
        with self._write() as db:
            db.execute("INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                       (key_id, name, role, json.dumps(auth.ROLE_SCOPES[role]), digest, now,
                        now + expires_s, created_by))
        return self.key(key_id), token

    def key(self, key_id: str) -> dict[str, Any]:
        row = self._conn().execute("SELECT * FROM keys WHERE id = ?", (key_id,)).fetchone()
        if row is None:
            raise NotFound(f"no key {key_id!r}")
        return _key_row(row)

    def keys(self) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT * FROM keys ORDER BY created").fetchall()
        return [_key_row(r) for r in rows]

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        with self._write() as db:
            row = db.execute("SELECT revoked FROM keys WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                raise NotFound(f"no key {key_id!r}")
            if row["revoked"] is None:
                db.execute("UPDATE keys SET revoked = ? WHERE id = ?", (time.time(), key_id))
        return self.key(key_id)

    def active_keys(self) -> int:
        return self._conn().execute(
            "SELECT COUNT(*) FROM keys WHERE revoked IS NULL AND expires > ?",
            (time.time(),)).fetchone()[0]

    def authenticate(self, token: str) -> auth.Principal:
        """The principal of a presented token; :class:`AuthError` saying why it is refused."""
        parts = auth.split_token(token)
        if parts is None:
            raise AuthError("malformed API key (expected qnl_<id>_<secret>)")
        key_id, secret = parts
        row = self._conn().execute("SELECT * FROM keys WHERE id = ?", (key_id,)).fetchone()
        if row is None or not auth.secret_matches(secret, row["digest"]):
            raise AuthError("invalid API key")
        if row["revoked"] is not None:
            raise AuthError(f"API key {key_id} was revoked at {iso(row['revoked'])}")
        if row["expires"] <= time.time():
            raise AuthError(f"API key {key_id} expired at {iso(row['expires'])}")
        return auth.Principal(key_id, row["name"], row["role"],
                              frozenset(json.loads(row["scopes"])))

    # -- jobs ---------------------------------------------------------------------------

    def submit(self, kind: str, resource: str, params: dict[str, Any], who: str,
               idem: str | None = None) -> tuple[dict[str, Any], bool]:
        """Queue a job: (job, created). A repeated ``idem`` key from the same caller returns
        the job it created first, so a client retrying after a lost reply never doubles it."""
        with self._write() as db:
            if idem is not None:
                row = db.execute("SELECT * FROM jobs WHERE submitted_by = ? AND idem = ?",
                                 (who, idem)).fetchone()
                if row is not None:
                    return _job_row(row), False
            cur = db.execute(
                "INSERT INTO jobs (kind, resource, params, state, submitted_by, submitted, idem)"
                " VALUES (?, ?, ?, 'queued', ?, ?, ?)",
                (kind, resource, json.dumps(params), who, time.time(), idem))
            job_id = cur.lastrowid
        return self.job(int(job_id or 0)), True

    def job(self, job_id: int) -> dict[str, Any]:
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return _job_row(row)

    def jobs(self, kinds: tuple[str, ...] | None = None, states: tuple[str, ...] | None = None,
             limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        sql, args = "SELECT * FROM jobs WHERE 1", []
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += list(kinds)
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += list(states)
        rows = self._conn().execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_job_row(r) for r in rows]

    def claim_next(self, resource: str) -> dict[str, Any] | None:
        """The oldest queued job of ``resource``, now ``running`` under this process."""
        with self._write() as db:
            row = db.execute("SELECT id FROM jobs WHERE state = 'queued' AND resource = ? "
                             "ORDER BY id LIMIT 1", (resource,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = 'running', started = ?, pid = ? WHERE id = ?",
                       (time.time(), os.getpid(), row["id"]))
        return self.job(row["id"])

    def finish(self, job_id: int, state: str, result: dict[str, Any] | None = None,
               error: str | None = None) -> dict[str, Any]:
        with self._write() as db:
            db.execute("UPDATE jobs SET state = ?, finished = ?, result = ?, error = ? "
                       "WHERE id = ? AND state = 'running'",
                       (state, time.time(), json.dumps(result) if result is not None else None,
                        error, job_id))
        return self.job(job_id)

    def mark_interrupted(self) -> list[dict[str, Any]]:
        """Every job left ``running`` by a dead service process becomes ``interrupted``.

        Called by the one process that serves this data directory (it holds the serve lock),
        before it runs anything: no job can be running legitimately at that moment."""
        with self._write() as db:
            rows = db.execute("SELECT id, pid FROM jobs WHERE state = 'running'").fetchall()
            for row in rows:
                db.execute("UPDATE jobs SET state = 'interrupted', finished = ?, error = ? "
                           "WHERE id = ?", (time.time(), f"the service process (pid "
                                            f"{row['pid']}) died while this job ran; not "
                                            "repeated: submit it again if still wanted",
                                            row["id"]))
        return [self.job(r["id"]) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._conn().execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        return {r["state"]: r["n"] for r in rows}

    # -- leases -------------------------------------------------------------------------

    def lease(self) -> dict[str, Any] | None:
        """The lease in force now, if any."""
        row = self._conn().execute(
            "SELECT * FROM leases WHERE released IS NULL AND expires > ? ORDER BY id DESC "
            "LIMIT 1", (time.time(),)).fetchone()
        return _lease_row(row) if row is not None else None

    def leases(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT * FROM leases ORDER BY id DESC LIMIT ?", (limit,))
        return [_lease_row(r) for r in rows]

    def acquire_lease(self, who: auth.Principal, seconds: float, reason: str) -> dict[str, Any]:
        """Exclusive hands-on control for ``seconds``; :class:`Conflict` naming the holder."""
        if not (isinstance(seconds, int | float) and 0 < seconds <= MAX_LEASE_S):
            raise ValueError(f"duration_s {seconds!r} is out of range; allowed: more than 0 "
                             f"and at most {MAX_LEASE_S:.0f} s")
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT * FROM leases WHERE released IS NULL AND expires > ? "
                             "ORDER BY id DESC LIMIT 1", (now,)).fetchone()
            if row is not None and row["key_id"] != who.key_id:
                raise Conflict(lease_conflict(_lease_row(row)))
            if row is not None:  # the holder extends its own lease
                db.execute("UPDATE leases SET expires = ?, reason = ? WHERE id = ?",
                           (now + seconds, reason, row["id"]))
                lease_id = row["id"]
            else:
                lease_id = db.execute(
                    "INSERT INTO leases (key_id, holder, reason, granted, expires) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (who.key_id, who.who, reason, now, now + seconds)).lastrowid
        row = self._conn().execute("SELECT * FROM leases WHERE id = ?", (lease_id,)).fetchone()
        return _lease_row(row)

    def release_lease(self, who: auth.Principal) -> dict[str, Any]:
        """End the lease in force: its holder, or an admin (``admin:lease``)."""
        with self._write() as db:
            row = db.execute("SELECT * FROM leases WHERE released IS NULL AND expires > ? "
                             "ORDER BY id DESC LIMIT 1", (time.time(),)).fetchone()
            if row is None:
                raise NotFound("no lease is in force")
            if row["key_id"] != who.key_id and not who.can("admin:lease"):
                raise Conflict(lease_conflict(_lease_row(row)))
            db.execute("UPDATE leases SET released = ?, released_by = ? WHERE id = ?",
                       (time.time(), who.who, row["id"]))
        row = self._conn().execute("SELECT * FROM leases WHERE id = ?", (row["id"],)).fetchone()
        return _lease_row(row)

    def check_lease(self, who: auth.Principal) -> None:
        """:class:`Conflict` if someone else holds the lab's lease."""
        lease = self.lease()
        if lease is not None and lease["key_id"] != who.key_id:
            raise Conflict(lease_conflict(lease))


def lease_conflict(lease: dict[str, Any]) -> str:
    return (f"the lab is leased to {lease['holder']} until {lease['expires_utc']} "
            f"({lease['reason'] or 'no reason given'})")


def _key_row(row: sqlite3.Row) -> dict[str, Any]:
    now = time.time()
    state = ("revoked" if row["revoked"] is not None else
             "expired" if row["expires"] <= now else "active")
    return {"id": row["id"], "name": row["name"], "role": row["role"],
            "scopes": json.loads(row["scopes"]), "created_utc": iso(row["created"]),
            "expires_utc": iso(row["expires"]), "revoked_utc": iso(row["revoked"]),
            "state": state, "created_by": row["created_by"]}


def _job_row(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "kind": row["kind"], "resource": row["resource"],
            "params": json.loads(row["params"]), "state": row["state"],
            "submitted_by": row["submitted_by"], "submitted_utc": iso(row["submitted"]),
            "started_utc": iso(row["started"]), "finished_utc": iso(row["finished"]),
            "result": json.loads(row["result"]) if row["result"] else None,
            "error": row["error"]}


def _lease_row(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "key_id": row["key_id"], "holder": row["holder"],
            "reason": row["reason"], "granted_utc": iso(row["granted"]),
            "expires_utc": iso(row["expires"]), "expires": row["expires"],
            "released_utc": iso(row["released"]), "released_by": row["released_by"]}
