"""The link layer of the simulated QNUs: CREATE requests, their status and per-node results.

A request is sampled once, when it is created, from the world as it is at that moment
(conditions are taken as constant for the request); results become visible as lab time passes
their herald times. Both ends of the link read the same request by id, each its own outcomes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pyvisa_qnetlab.device import InstrumentRefusal
from qnetlab.sim_instruments.physics.heralding import (
    HeraldRecords,
    analytic_fidelity,
    basis_vector,
    false_state,
    sample_heralds,
    sample_outcomes,
    true_state,
)
from qnetlab.sim_instruments.physics.world import Lab, Link

MAX_PAIRS = 1_000_000
MAX_TIME_S = 7 * 86400.0


@dataclass
class LinkRequest:
    id: int
    link: Link
    origin: str
    n_pairs: int
    min_fidelity: float
    max_time_s: float
    kind: str  # K keep in memory, M measure directly
    bases: dict[str, list[str]]
    t_start: float
    attempt_period_s: float
    status: str = "ACTIVE"
    reason: str = ""
    expected_fidelity: float = math.nan
    records: HeraldRecords | None = None
    basis_index: dict[str, np.ndarray] = field(default_factory=dict)
    outcome: dict[str, np.ndarray] = field(default_factory=dict)

    def delivered(self, now: float) -> int:
        if self.records is None:
            return 0
        return int(np.searchsorted(self.records.times_s, now, side="right"))

    def end_time(self) -> float:
        """When the request stops attempting: last herald, or its deadline."""
        if self.records is not None and self.records.times_s.size == self.n_pairs:
            return float(self.records.times_s[-1]) if self.n_pairs else self.t_start
        return self.t_start + self.max_time_s

    def state(self, now: float) -> str:
        if self.status == "FAILED":
            return "FAILED"
        k = self.delivered(now)
        if k >= self.n_pairs:
            return "DONE"
        return "EXPIRED" if now >= self.t_start + self.max_time_s else "ACTIVE"

    def attempts(self, now: float) -> int:
        if self.status == "FAILED":
            return 0
        k = self.delivered(now)
        made = int(self.records.attempts[:k].sum()) if self.records is not None else 0
        if k < self.n_pairs:
            last = float(self.records.times_s[k - 1]) if k else self.t_start
            made += max(0, int((min(now, self.end_time()) - last) / self.attempt_period_s))
        return made


def parse_create(args: str) -> tuple[int, float, float, str, list[str], list[str]]:
    """``<pairs>,<min fidelity>,<max time s>,<K|M>[,<bases here>[,<bases peer>]]``."""
    fields = [f.strip() for f in args.split(",")]
    if len(fields) < 4 or len(fields) > 6:
        raise InstrumentRefusal("data_type_error", f"CREATE needs 4 to 6 fields, got {args!r}")
    try:
        n, fmin, tmax = int(fields[0]), float(fields[1]), float(fields[2])
    except ValueError as exc:
        raise InstrumentRefusal("data_type_error", f"CREATE {args!r}: {exc}") from None
    kind = fields[3].upper()
    if not 1 <= n <= MAX_PAIRS:
        raise InstrumentRefusal("data_out_of_range", f"pairs {n} not in 1..{MAX_PAIRS}")
    if not 0.0 <= fmin <= 1.0:
        raise InstrumentRefusal("data_out_of_range", f"min fidelity {fmin} not in 0..1")
    if not 0.0 < tmax <= MAX_TIME_S:
        raise InstrumentRefusal("data_out_of_range", f"max time {tmax} s not in (0, {MAX_TIME_S}]")
    if kind not in ("K", "M"):
        raise InstrumentRefusal("data_out_of_range", f"type {kind!r} is not K or M")
    here = (fields[4] if len(fields) > 4 else "Z").split("/")
    peer = (fields[5] if len(fields) > 5 else "Z").split("/")
    for token in here + peer:
        try:
            basis_vector(token)
        except ValueError as exc:
            raise InstrumentRefusal("data_out_of_range", str(exc)) from None
    return n, fmin, tmax, kind, [b.strip().upper() for b in here], [b.strip().upper() for b in peer]


class LinkLayer:
    """All link requests of one lab."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.requests: dict[int, LinkRequest] = {}
        self._next = 1

    @classmethod
    def of(cls, lab: Lab) -> LinkLayer:
        layer = getattr(lab, "link_layer", None)
        if layer is None:
            layer = lab.link_layer = cls(lab)  # type: ignore[attr-defined]
        return layer

    def create(self, origin: str, link: Link, args: str) -> int:
        n, fmin, tmax, kind, bases_here, bases_peer = parse_create(args)
        lab = self.lab
        t = lab.sync()
        peer = link.peer_of(lab.nodes[origin]).name
        engine, peer_engine = lab.engines[origin], lab.engines[peer]
        if engine.protocol != peer_engine.protocol:
            raise InstrumentRefusal("settings_conflict", f"protocol {engine.protocol} at {origin} "
                                    f"but {peer_engine.protocol} at {peer}")
        setup = link.herald_setup(engine, t)
        req = LinkRequest(
            id=self._next, link=link, origin=origin, n_pairs=n, min_fidelity=fmin,
            max_time_s=tmax, kind=kind, bases={origin: bases_here, peer: bases_peer},
            t_start=t, attempt_period_s=setup.attempt_period_s,
        )
        self._next += 1
        self.requests[req.id] = req
        req.expected_fidelity = analytic_fidelity(setup)
        if req.expected_fidelity < fmin:
            req.status, req.reason = "FAILED", "fidelity"
            return req.id
        rng = lab.rng(link.name, "request", str(req.id))
        rec = sample_heralds(setup, n, rng, t, t + tmax)
        req.records = rec
        names = (link.node_a.name, link.node_b.name)
        for name in names:
            req.basis_index[name] = rng.integers(0, len(req.bases[name]), size=rec.times_s.size)
        if kind == "M":
            states = [true_state(setup, +1), true_state(setup, -1), false_state(setup)]
            index = np.where(rec.false, 2, np.where(rec.sign > 0, 0, 1))
            dirs = {
                name: np.array([basis_vector(b) for b in req.bases[name]])[req.basis_index[name]]
                for name in names
            }
            out_a, out_b = sample_outcomes(states, index, dirs[names[0]].reshape(-1, 3),
                                           dirs[names[1]].reshape(-1, 3), rng)
            req.outcome = {names[0]: out_a.astype(float), names[1]: out_b.astype(float)}
        else:
            req.outcome = {name: np.full(rec.times_s.size, np.nan) for name in names}
        return req.id

    def get(self, request_id: str) -> LinkRequest:
        try:
            return self.requests[int(request_id)]
        except (KeyError, ValueError):
            raise InstrumentRefusal("data_out_of_range", f"no link request {request_id!r}") \
                from None

    def status(self, request_id: str) -> str:
        req = self.get(request_id)
        now = self.lab.sync()
        return f"{req.state(now)},{min(req.delivered(now), req.n_pairs)},{req.n_pairs}"

    def results(self, request_id: str, node: str) -> np.ndarray:
        req = self.get(request_id)
        if node not in req.bases:
            raise InstrumentRefusal("settings_conflict", f"request {req.id} is not on {node}")
        k = req.delivered(self.lab.sync())
        rows = np.empty((k, 6))
        if k:
            rec = req.records
            assert rec is not None
            rows[:, 0] = np.arange(k)
            rows[:, 1] = rec.times_s[:k]
            rows[:, 2] = rec.pattern[:k]
            rows[:, 3] = rec.attempts[:k]
            rows[:, 4] = req.basis_index[node][:k]
            rows[:, 5] = req.outcome[node][:k]
        return rows

    def attempts(self, node: str) -> int:
        now = self.lab.clock.now()
        return sum(r.attempts(now) for r in self.requests.values() if node in r.bases)

    def heralds(self, node: str) -> int:
        now = self.lab.clock.now()
        return sum(r.delivered(now) for r in self.requests.values() if node in r.bases)
