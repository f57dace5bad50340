"""The link layer of the simulated QNUs: CREATE requests, their status and per-node results.

A request is sampled once, when it is created, from the world as it is at that moment
(conditions are taken as constant for the request); results become visible as lab time passes
their herald times. Both ends of the link read the same request by id, each its own outcomes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qnetlab.sim_instruments.physics.heralding import (
    HeraldRecords,
    HeraldSetup,
    analytic_fidelity,
    basis_vector,
    false_state,
    sample_heralds,
    sample_outcomes,
    sample_outcomes_indexed,
    true_state,
)
from qnetlab.sim_instruments.physics.world import Lab, Link
from qnetlab.sim_instruments.protocol import InstrumentRefusal

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


def parse_results(args: str) -> tuple[str, int, int | None]:
    """``<id>[,<start>,<count>]`` -> (id, start, count or None for all)."""
    fields = [f.strip() for f in args.split(",")]
    if len(fields) not in (1, 3):
        raise InstrumentRefusal("data_type_error",
                                f"RES? takes <id> or <id>,<start>,<count>, got {args!r}")
    if len(fields) == 1:
        return fields[0], 0, None
    try:
        start, count = int(fields[1]), int(fields[2])
    except ValueError:
        raise InstrumentRefusal("data_type_error", f"RES? {args!r}: start and count must be "
                                "integers") from None
    if start < 0 or count < 0:
        raise InstrumentRefusal("data_out_of_range", f"RES? {args!r}: start {start} and count "
                                f"{count} must be >= 0")
    return fields[0], start, count


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
        except (KeyError, ValueError, AttributeError):
            raise InstrumentRefusal("data_out_of_range", f"no swap {swap_id!r}") from None

    def status(self, request_id: str) -> str:
        if int(request_id) in getattr(self, "swaps", {}):
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
        if int(request_id) in getattr(self, "swaps", {}):
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


# --- entanglement swapping -----------------------------------------------------------------------

_BELL = np.array([[1, 0, 0, 1], [1, 0, 0, -1], [0, 1, 1, 0], [0, 1, -1, 0]],
                 dtype=complex).reshape(4, 2, 2) / np.sqrt(2)  # Phi+, Phi-, Psi+, Psi-


def _reorder(rho: np.ndarray) -> np.ndarray:
    """Swap the two qubits of a two-qubit density matrix."""
    return rho.reshape(2, 2, 2, 2).transpose(1, 0, 3, 2).reshape(4, 4)


def dephase(rho: np.ndarray, factors: tuple[float, float]) -> np.ndarray:
    """Multiply each coherence by exp(-t/T2) of every qubit whose value differs (batch-safe)."""
    bits = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    differ = bits[:, None, :] != bits[None, :, :]
    scale = np.where(differ[..., 0], factors[0], 1.0) * np.where(differ[..., 1], factors[1], 1.0)
    return rho * scale


@dataclass
class SwapRecord:
    """Bell-state measurements at a middle node and the end nodes' outcomes."""

    id: int
    mid: str
    ends: tuple[str, str]  # (far end of the 'here' link, far end of the other link)
    requests: tuple[int, int]
    times_s: np.ndarray
    bsm: np.ndarray  # 0..3 = Phi+, Phi-, Psi+, Psi-
    patterns: tuple[np.ndarray, np.ndarray]
    storage_s: tuple[np.ndarray, np.ndarray]
    bases: dict[str, list[str]]
    basis_index: dict[str, np.ndarray]
    outcome: dict[str, np.ndarray]
    states: np.ndarray  # conditional end-to-end density matrices (truth, for tests)
    discarded: int = 0

    @property
    def size(self) -> int:
        return int(self.times_s.size)

    def rows(self, node: str, start: int = 0, count: int | None = None) -> np.ndarray:
        """Rows ``start`` .. ``start + count`` (all if ``count`` is None) of ``node``'s
        outcomes, in the RES? layout."""
        if node not in self.outcome:
            raise InstrumentRefusal("settings_conflict", f"swap {self.id} has no qubit at {node}")
        lo = min(start, self.size)
        hi = self.size if count is None else min(self.size, start + count)
        sl, seq = slice(lo, hi), np.arange(lo, hi)
        out = np.empty((seq.size, 6))
        out[:, 0] = seq
        out[:, 1] = self.times_s[sl]
        out[:, 2] = self.bsm[sl]
        out[:, 3] = 0
        out[:, 4] = self.basis_index[node][sl]
        out[:, 5] = self.outcome[node][sl]
        return out

    def bsm_rows(self) -> np.ndarray:
        return np.column_stack([np.arange(self.size), self.times_s, self.bsm, self.patterns[0],
                                self.patterns[1], self.storage_s[0], self.storage_s[1]])


def _pair_state(req: LinkRequest, index: int, end_first: bool, mid: str) -> np.ndarray:
    rec, setup = req.records, req.setup
    assert rec is not None and setup is not None
    rho = false_state(setup) if rec.false[index] else true_state(setup, int(rec.sign[index]))
    mid_is_a = req.link.node_a.name == mid
    # order the qubits (end, mid) for the first pair and (mid, end) for the second
    return _reorder(rho) if mid_is_a == end_first else rho


def swap(layer: LinkLayer, mid: str, here: LinkRequest, there: LinkRequest, cutoff_s: float,
         bases_here: list[str], bases_there: list[str]) -> SwapRecord:
    """Pair kept heralds of two links in time order, discard pairs older than the cutoff,
    Bell-measure the middle node's two qubits, then measure both ends."""
    lab = layer.lab
    now = lab.sync()
    for req in (here, there):
        if req.kind != "K" or req.records is None:
            raise InstrumentRefusal("settings_conflict", f"request {req.id} did not keep its "
                                    "pairs in memory (type K)")
        if mid not in req.bases:
            raise InstrumentRefusal("settings_conflict", f"request {req.id} is not on {mid}")
    k1, k2 = here.delivered(now), there.delivered(now)
    t1, t2 = here.records.times_s[:k1], there.records.times_s[:k2]
    pairs, i, j, discarded = [], 0, 0, 0
    while i < k1 and j < k2:
        if abs(t1[i] - t2[j]) > cutoff_s:
            if t1[i] < t2[j]:
                i += 1
            else:
                j += 1
            discarded += 1
            continue
        pairs.append((i, j))
        i, j = i + 1, j + 1
    end_here = here.link.peer_of(lab.nodes[mid]).name
    end_there = there.link.peer_of(lab.nodes[mid]).name
    t2_of = {name: lab.nodes[name].t2_s for name in (mid, end_here, end_there)}
    n = len(pairs)
    rng = lab.rng("swap", mid, str(here.id), str(there.id))
    swap_t = np.array([max(t1[a], t2[b]) for a, b in pairs])
    store1 = np.array([swap_t[k] - t1[a] for k, (a, _) in enumerate(pairs)])
    store2 = np.array([swap_t[k] - t2[b] for k, (_, b) in enumerate(pairs)])
    states = np.empty((n, 4, 4), dtype=complex)
    bsm = np.empty(n, dtype=np.int8)
    for k, (a, b) in enumerate(pairs):
        rho1 = dephase(_pair_state(here, a, True, mid), (
            np.exp(-store1[k] / t2_of[end_here]), np.exp(-store1[k] / t2_of[mid])))
        rho2 = dephase(_pair_state(there, b, False, mid), (
            np.exp(-store2[k] / t2_of[mid]), np.exp(-store2[k] / t2_of[end_there])))
        joint = np.kron(rho1, rho2).reshape((2,) * 8)
        cond = np.einsum("kmn,amncAMNC,kMN->kacAC", _BELL.conj(), joint, _BELL).reshape(4, 4, 4)
        probs = np.clip(np.real(np.einsum("kii->k", cond)), 0, None)
        probs /= probs.sum()
        choice = int(rng.choice(4, p=probs))
        bsm[k] = choice
        states[k] = cond[choice] / probs[choice]
    basis_here = rng.integers(0, len(bases_here), size=n)
    basis_there = rng.integers(0, len(bases_there), size=n)
    dir_here = np.array([basis_vector(x) for x in bases_here])[basis_here].reshape(-1, 3)
    dir_there = np.array([basis_vector(x) for x in bases_there])[basis_there].reshape(-1, 3)
    if n:
        out_here, out_there = sample_outcomes(list(states), np.arange(n), dir_here, dir_there, rng)
    else:
        out_here = out_there = np.zeros(0)
    record = SwapRecord(
        id=layer._next, mid=mid, ends=(end_here, end_there), requests=(here.id, there.id),
        times_s=swap_t, bsm=bsm,
        patterns=(here.records.pattern[[a for a, _ in pairs]],
                  there.records.pattern[[b for _, b in pairs]]),
        storage_s=(store1, store2), bases={end_here: bases_here, end_there: bases_there},
        basis_index={end_here: basis_here, end_there: basis_there},
        outcome={end_here: np.asarray(out_here, float), end_there: np.asarray(out_there, float)},
        states=states, discarded=discarded)
    layer._next += 1
    if not hasattr(layer, "swaps"):
        layer.swaps = {}
    layer.swaps[record.id] = record
    return record


# --- time tags of a running request -------------------------------------------------------------

def request_tags(req: LinkRequest, station, t0: float, duration: float, rng, sigma_ps: float,
                 dead_time_ps: int) -> tuple[np.ndarray, np.ndarray]:
    """The station's tag stream while ``req`` runs: a sync per attempt (two for Barrett-Kok),
    one click per herald inside its detector's window, and dark clicks that herald nothing.
    The tagger arms on an attempt boundary."""
    assert req.records is not None and req.setup is not None
    period = req.attempt_period_s
    t_end = min(t0 + duration, req.end_time())
    k_lo = max(1, int(np.ceil((t0 - req.t_start) / period)))
    k_hi = int(np.floor((t_end - req.t_start) / period))
    rounds = 2 if req.setup.protocol == "TWOP" else 1
    k = np.arange(k_lo, k_hi + 1, dtype=np.int64)
    starts = req.t_start + k * period
    syncs = np.concatenate([np.round((starts + r * period / rounds) * 1e12).astype(np.int64)
                            for r in range(rounds)])
    syncs.sort()
    attempt = req.attempts_before if req.attempts_before is not None else np.cumsum(
        req.records.attempts)
    keep = (attempt >= k_lo) & (attempt <= k_hi)
    patterns = req.records.pattern[keep]
    herald_start = req.t_start + attempt[keep] * period
    window = station.herald_window_ps
    centres = [ch.delay_set_ps for ch in station.channels]
    arrival = [a(t0) for a in station.arrival_ps]
    times, chans = [syncs], [np.zeros(syncs.size, np.uint8)]
    for r in range(rounds):
        det = patterns if rounds == 1 else (patterns // 10 if r == 0 else patterns % 10)
        base = np.round((herald_start + r * period / rounds) * 1e12).astype(np.int64)
        for ch in (1, 2):
            sel = det == ch
            offsets = _in_window(rng, arrival[ch - 1], sigma_ps, centres[ch - 1], window,
                                 int(sel.sum()))
            times.append(base[sel] + offsets)
            chans.append(np.full(int(sel.sum()), ch, np.uint8))
    for ch, detector in enumerate(station.channels, start=1):
        n_dark = rng.poisson(detector.dark_hz() * (t_end - t0)) if t_end > t0 else 0
        dark = np.round((t0 + rng.random(n_dark) * max(t_end - t0, 0)) * 1e12).astype(np.int64)
        idx = np.searchsorted(syncs, dark, side="right") - 1
        dt = dark - syncs[np.clip(idx, 0, None)]
        inside = (idx >= 0) & (np.abs(dt - centres[ch - 1]) <= window / 2)
        times.append(dark[~inside])
        chans.append(np.full(int((~inside).sum()), ch, np.uint8))
    all_t, all_c = np.concatenate(times), np.concatenate(chans)
    order = np.argsort(all_t, kind="stable")
    return all_t[order], all_c[order]


def _in_window(rng, mean: float, sigma: float, centre: float, window: float, n: int
               ) -> np.ndarray:
    """Arrival offsets of heralding clicks: Gaussian about the true arrival, inside the window."""
    lo, hi = centre - window / 2, centre + window / 2
    out = rng.normal(mean, sigma, size=n)
    for _ in range(50):
        bad = (out < lo) | (out > hi)
        if not bad.any():
            break
        out[bad] = rng.normal(mean, sigma, size=int(bad.sum()))
    return np.round(np.clip(out, lo, hi)).astype(np.int64)
