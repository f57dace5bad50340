"""Entanglement swapping at a middle node: pair kept heralds of two links, Bell-measure the
middle qubits, measure both ends (conditional states kept as truth for tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from qnetlab.sim_instruments.physics.heralding import (
    basis_vector,
    false_state,
    sample_outcomes,
    true_state,
)
from qnetlab.sim_instruments.protocol import InstrumentRefusal

if TYPE_CHECKING:
    from .link_requests import LinkLayer, LinkRequest

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
        id=layer.next_id(), mid=mid, ends=(end_here, end_there), requests=(here.id, there.id),
        times_s=swap_t, bsm=bsm,
        patterns=(here.records.pattern[[a for a, _ in pairs]],
                  there.records.pattern[[b for _, b in pairs]]),
        storage_s=(store1, store2), bases={end_here: bases_here, end_there: bases_there},
        basis_index={end_here: basis_here, end_there: basis_there},
        outcome={end_here: np.asarray(out_here, float), end_there: np.asarray(out_there, float)},
        states=states, discarded=discarded)
    layer.add_swap(record)
    return record
