"""Request bookkeeping of the simulated link layer: CREATE requests, their status and per-node
results, one :class:`LinkLayer` per lab.

A request is sampled once, when it is created, from the world as it is at that moment
(conditions are taken as constant for the request); results become visible as lab time passes
their herald times. Both ends of the link read the same request by id, each its own outcomes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from qnetlab.sim_instruments.physics.heralding import (
    HeraldRecords,
    HeraldSetup,
    analytic_fidelity,
    basis_vector,
    false_state,
    sample_heralds,
    sample_outcomes_indexed,
    true_state,
)
from qnetlab.sim_instruments.physics.world import Lab, Link
from qnetlab.sim_instruments.protocol import InstrumentRefusal

from .link_commands import parse_create, parse_results

if TYPE_CHECKING:
    from .link_swap import SwapRecord

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
    setup: HeraldSetup | None = None
    expected_fidelity: float = math.nan
    records: HeraldRecords | None = None
    basis_index: dict[str, np.ndarray] = field(default_factory=dict)
    outcome: dict[str, np.ndarray] = field(default_factory=dict)
    attempts_before: np.ndarray | None = None  # attempts made up to each herald (cumulative)

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
        made = int(self.attempts_before[k - 1]) if k and self.attempts_before is not None else 0
        if k < self.n_pairs:
            last = float(self.records.times_s[k - 1]) if k else self.t_start
            made += max(0, int((min(now, self.end_time()) - last) / self.attempt_period_s))
        return made


class LinkLayer:
    """All link requests of one lab."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.requests: dict[int, LinkRequest] = {}
        self.swaps: dict[int, SwapRecord] = {}
        self._next = 1

    @classmethod
    def of(cls, lab: Lab) -> LinkLayer:
        """The lab's link layer (one per lab: both ends of a link read the same requests)."""
        if lab.link_layer is None:
            lab.link_layer = cls(lab)
        return lab.link_layer

    def next_id(self) -> int:
        """A new id, shared by requests and swaps (STAT? and RES? take either)."""
        self._next += 1
        return self._next - 1

    def add_swap(self, record: SwapRecord) -> None:
        self.swaps[record.id] = record

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
            id=self.next_id(), link=link, origin=origin, n_pairs=n, min_fidelity=fmin,
            max_time_s=tmax, kind=kind, bases={origin: bases_here, peer: bases_peer},
            t_start=t, attempt_period_s=setup.attempt_period_s,
        )
        self.requests[req.id] = req
        req.setup = setup
        req.expected_fidelity = analytic_fidelity(setup)
        if req.expected_fidelity < fmin:
            req.status, req.reason = "FAILED", "fidelity"
            return req.id
        rng = lab.rng(link.name, "request", str(req.id))
        rec = sample_heralds(setup, n, rng, t, t + tmax)
        req.records = rec
        req.attempts_before = np.cumsum(rec.attempts)
        names = (link.node_a.name, link.node_b.name)
        for name in names:
            req.basis_index[name] = rng.integers(0, len(req.bases[name]), size=rec.times_s.size)
        if kind == "M":
            states = [true_state(setup, +1), true_state(setup, -1), false_state(setup)]
            index = np.where(rec.false, 2, np.where(rec.sign > 0, 0, 1))
            dirs = {name: np.array([basis_vector(b) for b in req.bases[name]]).reshape(-1, 3)
                    for name in names}
            out_a, out_b = sample_outcomes_indexed(
                states, index, dirs[names[0]], req.basis_index[names[0]], dirs[names[1]],
                req.basis_index[names[1]], rng)
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

    def get_swap(self, swap_id: str) -> SwapRecord:
        try:
            return self.swaps[int(swap_id)]
        except (KeyError, ValueError):
            raise InstrumentRefusal("data_out_of_range", f"no swap {swap_id!r}") from None

    def status(self, request_id: str) -> str:
        if int(request_id) in self.swaps:
            n = self.swaps[int(request_id)].size
            return f"DONE,{n},{n}"
        req = self.get(request_id)
        now = self.lab.sync()
        return f"{req.state(now)},{min(req.delivered(now), req.n_pairs)},{req.n_pairs}"

    def results(self, args: str, node: str) -> np.ndarray:
        """``<id>[,<start>,<count>]``: the rows of ``node`` for the pairs delivered so far,
        from ``start`` (default 0), at most ``count`` of them (default all).

        Building a reply costs only the rows it returns, so a client that reads new pairs as
        they arrive pays once per pair, not once per pair per poll."""
        request_id, start, count = parse_results(args)
        if int(request_id) in self.swaps:
            return self.swaps[int(request_id)].rows(node, start, count)
        req = self.get(request_id)
        if node not in req.bases:
            raise InstrumentRefusal("settings_conflict", f"request {req.id} is not on {node}")
        k = req.delivered(self.lab.sync())
        lo = min(start, k)
        hi = k if count is None else min(k, start + count)
        rows = np.empty((hi - lo, 6))
        if hi > lo:
            rec = req.records
            assert rec is not None
            rows[:, 0] = np.arange(lo, hi)
            rows[:, 1] = rec.times_s[lo:hi]
            rows[:, 2] = rec.pattern[lo:hi]
            rows[:, 3] = rec.attempts[lo:hi]
            rows[:, 4] = req.basis_index[node][lo:hi]
            rows[:, 5] = req.outcome[node][lo:hi]
        return rows

    def attempts(self, node: str) -> int:
        now = self.lab.clock.now()
        return sum(r.attempts(now) for r in self.requests.values() if node in r.bases)

    def heralds(self, node: str) -> int:
        now = self.lab.clock.now()
        return sum(r.delivered(now) for r in self.requests.values() if node in r.bases)
