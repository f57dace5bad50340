"""Two-qubit state tomography, fidelity and CHSH from measured outcomes (numpy, no simulation).

Pauli-basis tomography: 9 basis settings x 4 outcomes; the maximum-likelihood physical density
matrix comes from the iterative R rho R algorithm (Hradil 1997; Rehacek et al. 2007), which keeps
the estimate positive with unit trace. Fidelity errors come from a parametric bootstrap
(multinomial resampling per setting). CHSH uses E = <a b> per setting pair, with
S = E(a,b) + E(a,b') + E(a',b) - E(a',b') and sigma_E^2 = (1 - E^2)/N.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

PAULI = {
    "X": np.array([[0, 1], [1, 0]], dtype=complex),
    "Y": np.array([[0, -1j], [1j, 0]], dtype=complex),
    "Z": np.array([[1, 0], [0, -1]], dtype=complex),
}
BASES = ("X", "Y", "Z")
SETTINGS = tuple(itertools.product(BASES, BASES))  # (basis A, basis B), 9 settings
PSI_PLUS = np.array([0, 1, 1, 0], dtype=complex) / np.sqrt(2)


def _eigvecs(basis: str) -> tuple[np.ndarray, np.ndarray]:
    """(+1 eigenvector, -1 eigenvector) of a Pauli operator."""
    vals, vecs = np.linalg.eigh(PAULI[basis])
    return vecs[:, np.argmax(vals)], vecs[:, np.argmin(vals)]


def projectors() -> np.ndarray:
    """(9, 4, 4, 4): per setting, the projectors of outcomes (++, +-, -+, --)."""
    out = np.empty((9, 4, 4, 4), dtype=complex)
    for s, (ba, bb) in enumerate(SETTINGS):
        for o, (sa, sb) in enumerate(itertools.product((0, 1), (0, 1))):
            v = np.kron(_eigvecs(ba)[sa], _eigvecs(bb)[sb])
            out[s, o] = np.outer(v, v.conj())
    return out


_PROJ = projectors()


def counts_from_outcomes(basis_a: np.ndarray, basis_b: np.ndarray, out_a: np.ndarray,
                         out_b: np.ndarray) -> np.ndarray:
    """(9, 4) counts from per-pair basis letters ('X','Y','Z') and +-1 outcomes."""
    index = {b: i for i, b in enumerate(BASES)}
    ia = np.vectorize(index.__getitem__)(basis_a) if basis_a.size else np.zeros(0, int)
    ib = np.vectorize(index.__getitem__)(basis_b) if basis_b.size else np.zeros(0, int)
    setting = 3 * ia + ib
    outcome = 2 * (np.asarray(out_a) < 0) + (np.asarray(out_b) < 0)
    counts = np.zeros((9, 4), dtype=np.int64)
    np.add.at(counts, (setting, outcome.astype(int)), 1)
    return counts


def mle(counts: np.ndarray, iterations: int = 2000, tol: float = 1e-10) -> np.ndarray:
    """Maximum-likelihood physical density matrix from (9, 4) Pauli-basis counts."""
    counts = np.asarray(counts, float)
    totals = counts.sum(axis=1, keepdims=True)
    valid = totals[:, 0] > 0
    freq = np.where(totals > 0, counts / np.where(totals > 0, totals, 1), 0.0)[valid]
    proj = _PROJ[valid].reshape(-1, 4, 4)
    f = freq.reshape(-1)
    weight = valid.sum()
    rho = np.eye(4, dtype=complex) / 4
    last = -np.inf
    for _ in range(iterations):
        p = np.real(np.einsum("kij,ji->k", proj, rho))
        p = np.clip(p, 1e-12, None)
        r = np.einsum("k,kij->ij", f / p, proj) / weight
        rho = r @ rho @ r
        rho /= np.real(np.trace(rho))
        loglike = float(np.sum(f * np.log(p)))
        if abs(loglike - last) < tol:
            break
        last = loglike
    return (rho + rho.conj().T) / 2


def fidelity(rho: np.ndarray, psi: np.ndarray = PSI_PLUS) -> float:
    return float(np.real(psi.conj() @ rho @ psi))


@dataclass(frozen=True)
class Tomography:
    rho: np.ndarray
    fidelity: float
    fidelity_err: float
    counts: np.ndarray

    @property
    def pairs(self) -> int:
        return int(self.counts.sum())


def tomography(counts: np.ndarray, bootstrap: int = 50, seed: int = 0,
               target: np.ndarray = PSI_PLUS) -> Tomography:
    """MLE density matrix, fidelity to ``target`` and its bootstrap standard error."""
    rho = mle(counts)
    rng = np.random.default_rng(seed)
    totals = counts.sum(axis=1)
    probs = np.where(totals[:, None] > 0, counts / np.maximum(totals[:, None], 1), 0.25)
    samples = []
    for _ in range(bootstrap):
        resampled = np.array([rng.multinomial(n, p) for n, p in zip(totals, probs, strict=True)])
        samples.append(fidelity(mle(resampled, iterations=500), target))
    err = float(np.std(samples, ddof=1)) if bootstrap > 1 else float("nan")
    return Tomography(rho, fidelity(rho, target), err, np.asarray(counts))


@dataclass(frozen=True)
class Chsh:
    s: float
    s_err: float
    correlations: np.ndarray  # E[a setting, b setting]
    pairs: np.ndarray

    @property
    def violation_sigmas(self) -> float:
        return (abs(self.s) - 2) / self.s_err if self.s_err > 0 else float("nan")


def chsh(setting_a: np.ndarray, setting_b: np.ndarray, out_a: np.ndarray,
         out_b: np.ndarray) -> Chsh:
    """S from settings in {0, 1} per side and +-1 outcomes."""
    e = np.zeros((2, 2))
    n = np.zeros((2, 2), dtype=np.int64)
    prod = np.asarray(out_a) * np.asarray(out_b)
    for i in (0, 1):
        for j in (0, 1):
            sel = (setting_a == i) & (setting_b == j)
            n[i, j] = int(sel.sum())
            e[i, j] = float(prod[sel].mean()) if n[i, j] else 0.0
    s = e[0, 0] + e[0, 1] + e[1, 0] - e[1, 1]
    var = np.sum((1 - e**2) / np.maximum(n, 1))
    return Chsh(float(s), float(np.sqrt(var)), e, n)


MIN_PAIRS_PER_CORRELATOR = 2
"""Pairs each of XX, YY and ZZ needs before its mean and standard error mean anything."""


def correlator_shortfall(basis_a: np.ndarray, basis_b: np.ndarray) -> str | None:
    """Why :func:`correlator_fidelity` cannot estimate anything from these bases (None: it can).

    The quick fidelity needs pairs measured in the same basis at both ends, in each of X, Y
    and Z; with fewer than ``MIN_PAIRS_PER_CORRELATOR`` in one of them it would return nan (no
    pair) or a zero standard error (one pair), neither of which is an estimate."""
    basis_a, basis_b = np.asarray(basis_a), np.asarray(basis_b)
    same = {b: int(((basis_a == b) & (basis_b == b)).sum()) for b in ("X", "Y", "Z")}
    if min(same.values()) >= MIN_PAIRS_PER_CORRELATOR:
        return None
    got = ", ".join(f"{b}{b} {n}" for b, n in same.items())
    return (f"cannot estimate the fidelity from {basis_a.size} measured pair"
            f"{'' if basis_a.size == 1 else 's'}: it needs at least {MIN_PAIRS_PER_CORRELATOR} "
            f"pairs measured in each of XX, YY and ZZ (got {got}); about a third of the pairs "
            "land in one of them, so ask for a few hundred pairs")


def correlator_fidelity(basis_a: np.ndarray, basis_b: np.ndarray, out_a: np.ndarray,
                        out_b: np.ndarray) -> tuple[float, float]:
    """Quick fidelity to Psi+ from <XX>, <YY>, <ZZ>: F = (1 + <XX> + <YY> - <ZZ>) / 4."""
    prod = np.asarray(out_a) * np.asarray(out_b)
    terms, var = [], 0.0
    for basis, sign in (("X", 1), ("Y", 1), ("Z", -1)):
        sel = (basis_a == basis) & (basis_b == basis)
        if not sel.any():
            return float("nan"), float("nan")
        terms.append(sign * prod[sel].mean())
        var += prod[sel].var() / sel.sum()
    return (1 + sum(terms)) / 4, float(np.sqrt(var)) / 4
