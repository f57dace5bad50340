"""Heralded entanglement between two nodes: probabilities, states, and sampled records.

Protocols (docs/physics.md §2.1):

- single-click ("SING"): each node prepares ``sqrt(1-a)|0>|0> + sqrt(a)|1>|1>`` (qubit, photon);
  one click after the midpoint beam splitter heralds ``(|01> + s e^{i d}|10>)/sqrt2`` with
  ``s = +1`` for detector 1 and ``-1`` for detector 2. ``p ~ 2 a eta`` and
  ``F = (1 - a)(1 + V e^{-sigma^2/2} cos d)/2`` for a true herald.
- two-photon Barrett-Kok ("TWOP"): two rounds with a pi pulse between them; ``p = eta_A eta_B / 2``
  and ``F = (1 + V)/2`` for a true herald, insensitive to the optical phase. Same detector twice
  heralds Psi+, different detectors Psi-.

False heralds come from the transducers' added noise and detector dark counts. Their state is the
product of the qubits' reduced states (single-click, ``F = [a_A(1-a_B) + a_B(1-a_A)]/2``, which
the common ``F ~ 1/4`` rule overestimates) or the maximally mixed state (Barrett-Kok).
Memory decoherence while the herald travels back multiplies the coherence by
``exp(-t_wait (1/T2_A + 1/T2_B))``.

Cost grows with the number of heralds, not attempts: attempts-to-success are drawn from the
geometric distribution, never looped over.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

PROTOCOLS = ("SING", "TWOP")
_PAULI = np.array(
    [[[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]], dtype=complex
)  # X, Y, Z
_I2 = np.eye(2, dtype=complex)


@dataclass
class NodeOptics:
    """One node's side of a link attempt."""

    eta: float  # emitted photon -> click: swap x transducer x collection x fiber x detector
    alpha: float  # bright-state population (single-click)
    noise_click: float  # probability per attempt (per round) of a click from added noise
    t2_s: float  # memory coherence time


@dataclass
class HeraldSetup:
    """Everything that fixes the statistics of one link's heralds."""

    protocol: str
    a: NodeOptics
    b: NodeOptics
    dark_click: float  # dark-count click probability per herald window, both detectors
    visibility: float
    phase_error_rad: float
    phase_noise_rad: float
    attempt_period_s: float
    wait_s: float  # time the qubits wait for the herald to come back

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r} not in {PROTOCOLS}")

    @property
    def noise(self) -> float:
        return self.a.noise_click + self.b.noise_click + self.dark_click

    @property
    def coherence(self) -> float:
        wait = self.wait_s * (2 if self.protocol == "TWOP" else 1)
        memory = math.exp(-wait * (1 / self.a.t2_s + 1 / self.b.t2_s))
        if self.protocol == "TWOP":
            return self.visibility * memory
        return self.visibility * math.exp(-self.phase_noise_rad**2 / 2) * memory


@dataclass
class HeraldProbabilities:
    true: float
    false: float

    @property
    def total(self) -> float:
        return self.true + self.false

    @property
    def false_fraction(self) -> float:
        return self.false / self.total if self.total > 0 else 0.0


def probabilities(s: HeraldSetup) -> HeraldProbabilities:
    """Per-attempt probabilities of a true and of a false herald."""
    q = min(s.noise, 1.0)
    if s.protocol == "SING":
        a, b = s.a, s.b
        p_sig = a.alpha * a.eta + b.alpha * b.eta - a.alpha * b.alpha * a.eta * b.eta
        return HeraldProbabilities(true=p_sig * (1 - q), false=q * (1 - p_sig))
    eta_a, eta_b = s.a.eta, s.b.eta
    return HeraldProbabilities(true=eta_a * eta_b / 2 * (1 - q) ** 2, false=q * (eta_a + eta_b) + q * q)


def _single_click_weights(s: HeraldSetup) -> tuple[float, float, float]:
    """Populations of |01>, |10>, |11> given a true single-click herald (qubit order A, B)."""
    a, b = s.a, s.b
    p01 = b.alpha * (1 - a.alpha) * b.eta  # B emitted
    p10 = a.alpha * (1 - b.alpha) * a.eta  # A emitted
    p11 = a.alpha * b.alpha * (a.eta + b.eta - a.eta * b.eta)
    norm = p01 + p10 + p11
    if norm <= 0:  # no photon can be emitted: true heralds cannot happen, any state will do
        return 0.5, 0.5, 0.0
    return p01 / norm, p10 / norm, p11 / norm


def true_state(s: HeraldSetup, sign: int) -> np.ndarray:
    """Density matrix (basis |00>,|01>,|10>,|11>) after a true herald of Bell sign ``sign``."""
    rho = np.zeros((4, 4), dtype=complex)
    c = s.coherence
    if s.protocol == "SING":
        p01, p10, p11 = _single_click_weights(s)
        coh = c * math.sqrt(p01 * p10) * sign * np.exp(1j * s.phase_error_rad)
        rho[1, 1], rho[2, 2], rho[3, 3] = p01, p10, p11
    else:
        rho[1, 1] = rho[2, 2] = 0.5
        coh = 0.5 * c * sign
    rho[1, 2] = coh
    rho[2, 1] = np.conj(coh)
    return rho


def false_state(s: HeraldSetup) -> np.ndarray:
    if s.protocol == "TWOP":
        return np.eye(4, dtype=complex) / 4
    ra = np.diag([1 - s.a.alpha, s.a.alpha]).astype(complex)
    rb = np.diag([1 - s.b.alpha, s.b.alpha]).astype(complex)
    return np.kron(ra, rb)


def bell_state(sign: int) -> np.ndarray:
    psi = np.array([0, 1, sign, 0], dtype=complex) / math.sqrt(2)
    return np.outer(psi, psi.conj())


def fidelity(rho: np.ndarray, target: np.ndarray) -> float:
    """Fidelity to a pure target state: Tr(rho |psi><psi|)."""
    return float(np.real(np.trace(rho @ target)))


def analytic_fidelity(s: HeraldSetup) -> float:
    """Average fidelity of heralded pairs to their heralded Bell state (true and false mixed)."""
    probs = probabilities(s)
    f_true = fidelity(true_state(s, +1), bell_state(+1))
    f_false = fidelity(false_state(s), bell_state(+1))
    return (1 - probs.false_fraction) * f_true + probs.false_fraction * f_false


@dataclass
class HeraldRecords:
    """Sampled heralds of one request; arrays of equal length."""

    attempts: np.ndarray  # int64 attempts taken for this pair (>= 1)
    times_s: np.ndarray  # herald time, lab seconds
    pattern: np.ndarray  # int16 detector pattern: 1/2 single-click, 11/12/21/22 Barrett-Kok
    sign: np.ndarray  # int8 Bell sign +1 (Psi+) / -1 (Psi-)
    false: np.ndarray  # bool: false herald (truth, for tests)


def pattern_to_sign(pattern: np.ndarray) -> np.ndarray:
    """Bell sign from the detector pattern: D1 / same detector twice -> +1, else -1."""
    pattern = np.asarray(pattern)
    single = np.where(pattern == 1, 1, -1)
    double = np.where((pattern == 11) | (pattern == 22), 1, -1)
    return np.where(pattern < 10, single, double).astype(np.int8)


def sample_heralds(
    s: HeraldSetup, n_pairs: int, rng: np.random.Generator, t_start: float, t_stop: float
) -> HeraldRecords:
    """Draw up to ``n_pairs`` heralds starting at ``t_start``; those after ``t_stop`` are cut."""
    probs = probabilities(s)
    if probs.total <= 0 or n_pairs <= 0:
        empty = np.empty(0)
        return HeraldRecords(empty.astype(np.int64), empty, empty.astype(np.int16),
                             empty.astype(np.int8), empty.astype(bool))
    attempts = rng.geometric(min(probs.total, 1.0), size=n_pairs).astype(np.int64)
    times = t_start + np.cumsum(attempts) * s.attempt_period_s + s.wait_s
    keep = times <= t_stop
    attempts, times = attempts[keep], times[keep]
    n = times.size
    is_false = rng.random(n) < probs.false_fraction
    if s.protocol == "SING":
        pattern = rng.integers(1, 3, size=n).astype(np.int16)
    else:
        pattern = (10 * rng.integers(1, 3, size=n) + rng.integers(1, 3, size=n)).astype(np.int16)
    return HeraldRecords(attempts, times, pattern, pattern_to_sign(pattern), is_false)


_BASIS_RE = re.compile(r"^(X|Y|Z|A(-?\d+(?:\.\d+)?))$")


def basis_vector(token: str) -> np.ndarray:
    """Bloch direction of a measurement basis: X, Y, Z or A<deg> (angle from Z towards X)."""
    m = _BASIS_RE.match(token.strip().upper())
    if not m:
        raise ValueError(f"basis {token!r} is not one of X, Y, Z or A<degrees>")
    if m.group(2) is not None:
        th = math.radians(float(m.group(2)))
        return np.array([math.sin(th), 0.0, math.cos(th)])
    return np.eye(3)[{"X": 0, "Y": 1, "Z": 2}[m.group(1)]]


def bloch_data(rho: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local Bloch vectors r_A, r_B and correlation matrix T_ij = Tr(rho s_i x s_j)."""
    ra = np.array([np.real(np.trace(rho @ np.kron(p, _I2))) for p in _PAULI])
    rb = np.array([np.real(np.trace(rho @ np.kron(_I2, p))) for p in _PAULI])
    t = np.array([[np.real(np.trace(rho @ np.kron(p, q))) for q in _PAULI] for p in _PAULI])
    return ra, rb, t


def sample_outcomes(
    states: list[np.ndarray],
    state_index: np.ndarray,
    dir_a: np.ndarray,
    dir_b: np.ndarray,
    rng: np.random.Generator,
    dephase_a: np.ndarray | None = None,
    dephase_b: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Jointly sample +-1 outcomes for pairs measured along Bloch directions ``dir_a``/``dir_b``.

    ``states`` are the distinct density matrices, ``state_index`` picks one per pair. Optional
    ``dephase_*`` (per pair, 0..1) shrink each qubit's transverse (X, Y) components, modelling
    storage in memory. P(s, t) = [1 + s a.r_A + t b.r_B + s t a^T T b] / 4.
    """
    data = [bloch_data(r) for r in states]
    ra = np.array([d[0] for d in data])[state_index]
    rb = np.array([d[1] for d in data])[state_index]
    tt = np.array([d[2] for d in data])[state_index]
    n = state_index.size
    ga = np.ones(n) if dephase_a is None else np.asarray(dephase_a, float)
    gb = np.ones(n) if dephase_b is None else np.asarray(dephase_b, float)
    sa = np.stack([ga, ga, np.ones(n)], axis=1)
    sb = np.stack([gb, gb, np.ones(n)], axis=1)
    ra, rb = ra * sa, rb * sb
    tt = tt * sa[:, :, None] * sb[:, None, :]
    ea = np.einsum("ni,ni->n", dir_a, ra)
    eb = np.einsum("ni,ni->n", dir_b, rb)
    eab = np.einsum("ni,nij,nj->n", dir_a, tt, dir_b)
    p_pp = (1 + ea + eb + eab) / 4
    p_pm = (1 + ea - eb - eab) / 4
    p_mp = (1 - ea + eb - eab) / 4
    u = rng.random(n)
    c1, c2, c3 = p_pp, p_pp + p_pm, p_pp + p_pm + p_mp
    out_a = np.where(u < c2, 1, -1).astype(np.int8)
    out_b = np.where(u < c1, 1, np.where(u < c2, -1, np.where(u < c3, 1, -1))).astype(np.int8)
    return out_a, out_b


def sample_outcomes_indexed(
    states: list[np.ndarray],
    state_index: np.ndarray,
    dirs_a: np.ndarray,
    index_a: np.ndarray,
    dirs_b: np.ndarray,
    index_b: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sample_outcomes` without dephasing, for pairs that each pick one of a few states
    (``state_index``) and one of a few bases per end (``index_a`` into the rows of
    ``dirs_a``, ``index_b`` into ``dirs_b``).

    The joint outcome probabilities are computed once per (state, basis a, basis b) and
    looked up per pair, so a million pairs cost a few vectorised look-ups, not a million
    3x3 contractions. Draws the same random numbers as :func:`sample_outcomes`."""
    data = [bloch_data(r) for r in states]
    ra = np.array([d[0] for d in data])  # (states, 3)
    rb = np.array([d[1] for d in data])
    tt = np.array([d[2] for d in data])  # (states, 3, 3)
    ea = np.einsum("ai,si->sa", dirs_a, ra)[:, :, None]  # (states, bases a, 1)
    eb = np.einsum("bi,si->sb", dirs_b, rb)[:, None, :]  # (states, 1, bases b)
    eab = np.einsum("ai,sij,bj->sab", dirs_a, tt, dirs_b)
    p_pp = (1 + ea + eb + eab) / 4
    p_pm = (1 + ea - eb - eab) / 4
    p_mp = (1 - ea + eb - eab) / 4
    c1, c2 = p_pp.ravel(), (p_pp + p_pm).ravel()
    c3 = c2 + p_mp.ravel()
    n_a, n_b = dirs_a.shape[0], dirs_b.shape[0]
    flat = (np.asarray(state_index) * n_a + index_a) * n_b + index_b
    u = rng.random(flat.size)
    first_plus = u < c2.take(flat)  # outcomes ++ or +-
    second_plus = (u < c1.take(flat)) | (~first_plus & (u < c3.take(flat)))  # ++ or -+
    return _signs(first_plus), _signs(second_plus)


def _signs(plus: np.ndarray) -> np.ndarray:
    """+1 where ``plus``, else -1 (int8)."""
    out = plus.astype(np.int8)
    out *= 2
    out -= 1
    return out
