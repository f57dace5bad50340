"""Verification of heralded pairs: tomography (MLE), fidelity with a bootstrap error, CHSH."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qnetlab.runstore import RunStore
from qnetlab.stations import StationBundle
from qnetlab.uncertain import plus_minus, sigmas

from . import plots
from .estimators import (
    Chsh,
    Tomography,
    chsh,
    correlator_fidelity,
    correlator_shortfall,
    counts_from_outcomes,
    tomography,
)
from .frames import correct, herald_paulis
from .generation import Generation, generate

TOMOGRAPHY_BASES = ("X", "Y", "Z")
CHSH_A = ("A0", "A90")  # Z, X
CHSH_B = ("A-45", "A45")
SEPARABLE_FIDELITY = 0.5
"""No separable state has a fidelity above 1/2 to a Bell state: F > 1/2 witnesses entanglement."""
LOCAL_BOUND = 2.0
"""|S| of any local hidden-variable model; above it the pairs violate the CHSH inequality."""
CLAIM_SIGMAS = 3.0
"""Standard errors beyond the bound before a claim is made (3: a 0.13 % one-sided chance)."""


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


def fidelity_estimate(gen: Generation) -> tuple[float, float, str | None]:
    """(F, standard error, None), or (nan, nan, why it cannot be estimated) when the run's
    bases or its number of pairs do not allow it."""
    if not {"X", "Y", "Z"} <= set(gen.bases[0]) & set(gen.bases[1]):
        return (float("nan"), float("nan"),
                f"the fidelity needs bases X, Y and Z at both ends (this run: "
                f"{','.join(gen.bases[0])} / {','.join(gen.bases[1])})")
    ba, bb, oa, ob = corrected(gen)
    reason = correlator_shortfall(ba, bb)
    if reason is not None:
        return float("nan"), float("nan"), reason
    f, err = correlator_fidelity(ba, bb, oa, ob)
    return f, err, None


@dataclass(frozen=True)
class Verdict:
    """One claim about measured pairs: does ``value`` exceed ``bound`` by ``CLAIM_SIGMAS``?"""

    claim: str
    symbol: str
    value: float
    err: float
    bound: float

    @property
    def sigmas(self) -> float:
        return sigmas(self.value, self.err, self.bound)

    @property
    def holds(self) -> bool:
        return self.sigmas >= CLAIM_SIGMAS

    def line(self) -> str:
        """``claim: yes|no (symbol = v +- e, N standard errors above|below bound)``."""
        z = self.sigmas
        side = "above" if z >= 0 else "below"
        need = "" if self.holds or z < 0 else f"; {CLAIM_SIGMAS:g} needed"
        return (f"{self.claim}: {'yes' if self.holds else 'no'} ({self.symbol} = "
                f"{plus_minus(self.value, self.err)}, {abs(z):.1f} standard errors {side} "
                f"{self.bound:g}{need})")


def entanglement_verdict(fidelity: float, err: float) -> Verdict:
    """Entanglement is witnessed when F exceeds 1/2 by ``CLAIM_SIGMAS`` standard errors."""
    return Verdict("entanglement witnessed", "F", fidelity, err, SEPARABLE_FIDELITY)


def bell_verdict(result: Chsh) -> Verdict:
    """The CHSH inequality is violated when |S| exceeds 2 by ``CLAIM_SIGMAS`` standard errors."""
    return Verdict("Bell violation", "|S|", abs(result.s), result.s_err, LOCAL_BOUND)


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

    def verdicts(self) -> tuple[Verdict, Verdict]:
        """(entanglement witnessed, Bell violation) of this verification."""
        return (entanglement_verdict(self.tomography.fidelity, self.tomography.fidelity_err),
                bell_verdict(self.chsh))

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


def generation_from_run(run: Any) -> Generation | None:
    """The pairs of a finished or killed generation run, read back from its ``heralds`` stream
    (``run`` is a :class:`qnetlab.runread.RunData`); None for a run without one."""
    heralds = run.streams.get("heralds")
    meta = run.metadata or {}
    if not heralds or "bases" not in meta:
        return None
    bases = (tuple(meta["bases"][0]), tuple(meta["bases"][1]))
    times = np.asarray(heralds["herald_time_s"], float)
    start = float(run.attrs.get("lab_time_start", times[0] if times.size else 0.0))
    return Generation(
        link=str(meta.get("link", "")), ends=tuple(meta.get("ends", ("", ""))),  # type: ignore[arg-type]
        protocol=str(meta.get("protocol", "")), request_id=-1,
        requested=int(meta.get("pairs", times.size)), bases=bases, herald_time_s=times,
        pattern=np.asarray(heralds["pattern"]), attempts=np.asarray(heralds["attempts"]),
        basis_index=(np.asarray(heralds["basis_a"], int), np.asarray(heralds["basis_b"], int)),
        outcome=(np.asarray(heralds["outcome_a"], float), np.asarray(heralds["outcome_b"], float)),
        started_s=start, ended_s=float(times[-1]) if times.size else start,
        state=str(run.status), run_guid=run.guid, extra={"hdf5_path": run.hdf5_path})
