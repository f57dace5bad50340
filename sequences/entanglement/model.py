"""The lab's analytic model of a link, fed with calibrated values, for scans and checks.

Single-click and Barrett-Kok success probability and fidelity from each node's transducer
efficiency and added noise (docs/physics.md, heralding), the link budget of
``sequences.fom``, and the PLOB repeaterless bound ``-log2(1 - eta)`` per channel
use (Pirandola et al., Nat. Commun. 8, 15043, 2017).

A node's photon reaches a click with ``eta = efficiency x collection x fiber x detector x
acceptance``, where the acceptance is the share of that node's photon (its own width at its
pump setting) inside the calibrated herald window. Per-node values may be given as one number
(both nodes alike) or as a pair (first node, second node); so may the fiber length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from qnetlab.sequences.fom import LinkBudget, photon_sigma_s

Pair = float | tuple[float, float]


def _pair(value: Pair) -> tuple[float, float]:
    """``(first node, second node)`` from one value or a pair."""
    if isinstance(value, tuple | list):
        return float(value[0]), float(value[1])
    return float(value), float(value)


@dataclass(frozen=True)
class LinkModel:
    """Per-node efficiency (transducer x swap), added noise, memory T2 and photon width, plus
    the budget (collection, detector, dark clicks, herald window, coherence)."""

    efficiency: Pair
    added_noise: Pair
    t2_s: Pair
    attempt_rate_hz: float
    swap_duration_s: float = 200e-9
    budget: LinkBudget = field(default_factory=LinkBudget)
    photon_sigma_s: Pair = 0.0
    swap: Pair = 1.0  # the swap part of ``efficiency``: noise photons do not pass the swap

    def attempt_period_s(self, fiber_km: Pair) -> float:
        return max(1 / self.attempt_rate_hz,
                   2 * max(_pair(fiber_km)) * self.budget.fiber_delay_s_per_km
                   + self.swap_duration_s)

    def node_eta(self, fiber_km: Pair) -> tuple[tuple[float, float], tuple[float, float]]:
        """((signal eta a, b), (noise click probability a, b)) per attempt."""
        b = self.budget
        eff, noise, swap = _pair(self.efficiency), _pair(self.added_noise), _pair(self.swap)
        chains = [b.chain(km) * b.acceptance(s) for km, s in
                  zip(_pair(fiber_km), _pair(self.photon_sigma_s), strict=True)]
        eta = (eff[0] * chains[0], eff[1] * chains[1])
        clicks = tuple(n * e / max(s, 1e-12) for n, e, s in zip(noise, eta, swap, strict=True))
        return eta, clicks  # type: ignore[return-value]

    def coherence(self, protocol: str, fiber_km: Pair) -> float:
        """Interference visibility times memory decoherence while the herald travels back."""
        wait = 2 * max(_pair(fiber_km)) * self.budget.fiber_delay_s_per_km
        t2a, t2b = _pair(self.t2_s)
        if protocol == "two_photon":
            return self.budget.visibility * math.exp(-2 * wait * (1 / t2a + 1 / t2b))
        return (self.budget.visibility * math.exp(-self.budget.phase_noise_rad**2 / 2)
                * math.exp(-wait * (1 / t2a + 1 / t2b)))

    def probability(self, protocol: str, alpha: Pair, fiber_km: Pair
                    ) -> tuple[float, float, float]:
        """(true herald, false herald, fidelity) per attempt."""
        (ea, eb), (na, nb) = self.node_eta(fiber_km)
        q = min(na + nb + self.budget.dark_click, 1.0)
        c = self.coherence(protocol, fiber_km)
        if protocol == "two_photon":
            p_true, p_false = ea * eb / 2 * (1 - q) ** 2, q * (ea + eb) + q * q
            f_true, f_false = (1 + c) / 2, 0.25
        else:
            aa, ab = _pair(alpha)
            p_sig = aa * ea + ab * eb - aa * ab * ea * eb
            p_true, p_false = p_sig * (1 - q), q * (1 - p_sig)
            w01, w10 = ab * (1 - aa) * eb, aa * (1 - ab) * ea
            w11 = aa * ab * (ea + eb - ea * eb)
            norm = w01 + w10 + w11
            f_true = ((w01 + w10) / 2 + c * math.sqrt(w01 * w10)) / norm if norm else 0.0
            f_false = (aa * (1 - ab) + ab * (1 - aa)) / 2
        total = p_true + p_false
        fid = (p_true * f_true + p_false * f_false) / total if total else 0.0
        return p_true, p_false, fid

    def predict(self, protocol: str, alpha: Pair, fiber_km: Pair) -> tuple[float, float]:
        """(heralds per second, mean fidelity)."""
        p_true, p_false, fid = self.probability(protocol, alpha, fiber_km)
        return (p_true + p_false) / self.attempt_period_s(fiber_km), fid


def calibrated_budget(herald: Mapping[str, float], base: LinkBudget | None = None
                      ) -> LinkBudget:
    """The budget with the heralding station's calibrated herald window and dark-click
    probability where the calibration has them (the nominal values otherwise)."""
    base = base or LinkBudget()
    window = herald.get("herald_window_ps")
    return replace(
        base,
        herald_window_s=None if window is None else window * 1e-12,
        dark_click=herald.get("dark_click_probability", base.dark_click),
        detector_efficiency=herald.get("detector_efficiency", base.detector_efficiency))


def calibrated_photon_sigma(node: Mapping[str, float], herald: Mapping[str, float],
                            power_dbm: float) -> float:
    """A node's photon width at pump power ``power_dbm`` from its calibrated cooperativity
    per mW and the heralding station's calibrated photon linewidth (0 when either is missing)."""
    c_per_mw, linewidth = node.get("cooperativity_per_mw"), herald.get("photon_linewidth_hz")
    if c_per_mw is None or linewidth is None:
        return 0.0
    return photon_sigma_s(linewidth, c_per_mw * 10 ** (power_dbm / 10))


def plob_rate(fiber_km_each_side: np.ndarray, attempt_rate_hz: np.ndarray | float,
              loss_db_per_km: float = 0.2) -> np.ndarray:
    """Repeaterless bound (ebits/s) for the whole node-to-node fiber at the attempt rate."""
    eta = 10 ** (-loss_db_per_km * 2 * np.asarray(fiber_km_each_side, float) / 10)
    return -np.log2(np.clip(1 - eta, 1e-300, None)) * attempt_rate_hz
