"""Verification of heralded pairs: tomography (MLE), fidelity with a bootstrap error, CHSH."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qnetlab.runstore import RunStore
from qnetlab.stations import StationBundle

from . import plots
from .estimators import Chsh, Tomography, chsh, correlator_fidelity, counts_from_outcomes, tomography
from .frames import correct, herald_paulis
from .generation import Generation, generate

TOMOGRAPHY_BASES = ("X", "Y", "Z")
CHSH_A = ("A0", "A90")  # Z, X
CHSH_B = ("A-45", "A45")


def corrected(gen: Generation) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(basis A, basis B, outcome A, outcome B in the Psi+ frame) of measured pairs."""
    basis_a, basis_b = gen.basis_letters(0), gen.basis_letters(1)
    measured = ~np.isnan(gen.outcome[0]) & ~np.isnan(gen.outcome[1])
    out_b = correct(basis_b, gen.outcome[1], herald_paulis(gen.pattern))
    return basis_a[measured], basis_b[measured], gen.outcome[0][measured], out_b[measured]


def tomography_of(gen: Generation, bootstrap: int = 50) -> Tomography:
    ba, bb, oa, ob = corrected(gen)
    return tomography(counts_from_outcomes(ba, bb, oa, ob), bootstrap=bootstrap)


def quick_fidelity(gen: Generation) -> tuple[float, float]:
    """Fidelity to the heralded Bell state from <XX>, <YY>, <ZZ> (no MLE)."""
    return correlator_fidelity(*corrected(gen))


def chsh_of(gen: Generation) -> Chsh:
    """S of pairs measured in A0/A90 (first end) and A-45/A45 (second end).

    For Psi- heralds the second end's settings swap roles (Z reflects the XZ plane), which
    is the same Pauli-frame correction as for tomography."""
    if gen.bases != (CHSH_A, CHSH_B):
        raise ValueError(f"CHSH needs bases {CHSH_A} / {CHSH_B}, got {gen.bases}")
    sa = gen.basis_index[0].astype(int)
    sb = gen.basis_index[1].astype(int)
    sb = np.where(gen.sign < 0, 1 - sb, sb)
    ok = ~np.isnan(gen.outcome[0])
    return chsh(sa[ok], sb[ok], gen.outcome[0][ok], gen.outcome[1][ok])


@dataclass
class Verification:
    tomography: Tomography
    chsh: Chsh
    tomography_run: Generation
    chsh_run: Generation
    figure: Any = None

    def summary(self) -> dict[str, float]:
        return {"fidelity": self.tomography.fidelity, "fidelity_err": self.tomography.fidelity_err,
                "chsh_s": abs(self.chsh.s), "chsh_err": self.chsh.s_err,
                "rate_hz": self.tomography_run.rate_hz, "pairs": len(self.tomography_run)}


def verify(bundle: StationBundle, link: str, pairs: int = 2000, *, protocol: str | None = None,
           runs: RunStore | None = None, max_time_s: float = 7200.0,
           calibration: dict[str, Any] | None = None, bootstrap: int = 50) -> Verification:
    """Tomography and CHSH runs of ``pairs`` each on ``link``; the density matrix is plotted."""
    runs = runs or RunStore()
    tomo_gen = generate(bundle, link, pairs, protocol=protocol, bases=TOMOGRAPHY_BASES,
                        runs=runs, name="entanglement.tomography", max_time_s=max_time_s,
                        calibration=calibration)
    result = tomography_of(tomo_gen, bootstrap=bootstrap)
    chsh_gen = generate(bundle, link, pairs, bases=CHSH_A, bases_peer=CHSH_B, runs=runs,
                        name="entanglement.chsh", max_time_s=max_time_s, calibration=calibration)
    fig = plots.density_matrix(result.rho, f"{link}: F = {result.fidelity:.3f} +- "
                               f"{result.fidelity_err:.3f} ({len(tomo_gen)} pairs)")
    path = plots.save(fig, tomo_gen.extra.get("hdf5_path"), "density_matrix")
    plots.save(plots.herald_statistics(tomo_gen.attempts, tomo_gen.pattern,
                                       f"{link}: heralds of the tomography run"),
               tomo_gen.extra.get("hdf5_path"), "heralds")
    return Verification(result, chsh_of(chsh_gen), tomo_gen, chsh_gen, path)
