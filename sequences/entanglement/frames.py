"""Pauli frames: bring every heralded (or swapped) pair into the Psi+ frame.

A heralded pair is Psi+ or Psi- (the detector pattern says which); Psi- = (I x Z) Psi+, so the
second node's X and Y outcomes flip. After entanglement swapping the end-to-end state depends on
the Bell-state measurement and both herald signs; the correcting Pauli on the far end is worked
out here from first principles (pure states), once.
"""

from __future__ import annotations

import itertools

import numpy as np

from .estimators import PAULI, PSI_PLUS

BELL = np.array([[1, 0, 0, 1], [1, 0, 0, -1], [0, 1, 1, 0], [0, 1, -1, 0]],
                dtype=complex) / np.sqrt(2)  # Phi+, Phi-, Psi+, Psi-
#: which outcomes a Pauli correction flips, per measured Pauli basis
FLIPS = {"I": "", "X": "YZ", "Y": "XZ", "Z": "XY"}


def bell_sign(pattern: np.ndarray) -> np.ndarray:
    """+1 (Psi+) for detector 1 / the same detector twice, -1 (Psi-) otherwise."""
    pattern = np.asarray(pattern)
    single = np.where(pattern == 1, 1, -1)
    double = np.where(np.isin(pattern, (11, 22)), 1, -1)
    return np.where(pattern < 10, single, double).astype(np.int8)


def _psi(sign: int) -> np.ndarray:
    return np.array([0, 1, sign, 0], dtype=complex) / np.sqrt(2)


def _swap_correction(bsm: int, s1: int, s2: int) -> str:
    joint = np.kron(_psi(s1), _psi(s2)).reshape(2, 2, 2, 2)  # qubits end1, mid1, mid2, end2
    ac = np.einsum("mn,amnc->ac", BELL[bsm].reshape(2, 2).conj(), joint).reshape(4)
    ac /= np.linalg.norm(ac)
    for name in "IXYZ":
        op = np.eye(2) if name == "I" else PAULI[name]
        if abs(PSI_PLUS.conj() @ np.kron(np.eye(2), op) @ ac) > 0.99:
            return name
    raise AssertionError(f"no Pauli frame for BSM {bsm}, signs {s1}, {s2}")


SWAP_CORRECTION = {(k, s1, s2): _swap_correction(k, s1, s2)
                   for k, s1, s2 in itertools.product(range(4), (1, -1), (1, -1))}


def correct(basis_b: np.ndarray, out_b: np.ndarray, paulis: np.ndarray) -> np.ndarray:
    """Second-node outcomes in the Psi+ frame, given the correcting Pauli of each pair."""
    out = np.array(out_b, dtype=float)
    for pauli, flips in FLIPS.items():
        for basis in flips:
            out[(paulis == pauli) & (basis_b == basis)] *= -1
    return out


def herald_paulis(pattern: np.ndarray) -> np.ndarray:
    return np.where(bell_sign(pattern) > 0, "I", "Z")


def swap_paulis(bsm: np.ndarray, pattern1: np.ndarray, pattern2: np.ndarray) -> np.ndarray:
    s1, s2 = bell_sign(pattern1), bell_sign(pattern2)
    return np.array([SWAP_CORRECTION[(int(k), int(a), int(b))]
                     for k, a, b in zip(bsm, s1, s2, strict=True)], dtype="<U1")
