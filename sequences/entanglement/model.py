"""The lab's analytic model of a link, fed with calibrated values, for scans and checks.

Single-click and Barrett-Kok success probability and fidelity from the per-node transducer
efficiency and added noise (docs/physics.md, heralding), the link budget of
``sequences.fom``, and the PLOB repeaterless bound ``-log2(1 - eta)`` per channel
use (Pirandola et al., Nat. Commun. 8, 15043, 2017).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qnetlab.sequences.fom import LinkBudget, single_click


@dataclass(frozen=True)
class LinkModel:
    """Per-node efficiency (transducer x swap) and added noise, plus the budget."""

    efficiency: float
    added_noise: float
    t2_s: float
    attempt_rate_hz: float
    swap_duration_s: float = 200e-9
    budget: LinkBudget = field(default_factory=LinkBudget)

    def attempt_period_s(self, fiber_km: float) -> float:
        return max(1 / self.attempt_rate_hz,
                   2 * fiber_km * self.budget.fiber_delay_s_per_km + self.swap_duration_s)

    def predict(self, protocol: str, alpha: float, fiber_km: float) -> tuple[float, float]:
        """(heralds per second, mean fidelity)."""
        eta = self.efficiency * self.budget.chain(fiber_km)
        rate = 1 / self.attempt_period_s(fiber_km)
        if protocol == "two_photon":
            wait = 2 * fiber_km * self.budget.fiber_delay_s_per_km
            coherence = self.budget.visibility * math.exp(-4 * wait / self.t2_s)
            q = 2 * self.added_noise * eta + self.budget.dark_click
            p_true, p_false = eta * eta / 2, q * 2 * eta + q * q
            total = p_true + p_false
            fid = (p_true * (1 + coherence) / 2 + p_false / 4) / total if total else 0.0
            return total * rate, fid
        p, fid = single_click(alpha, eta, self.added_noise,
                              self.budget.coherence(fiber_km, self.t2_s), self.budget.dark_click)
        return p * rate, fid


def plob_rate(fiber_km_each_side: np.ndarray, attempt_rate_hz: np.ndarray | float,
              loss_db_per_km: float = 0.2) -> np.ndarray:
    """Repeaterless bound (ebits/s) for the whole node-to-node fiber at the attempt rate."""
    eta = 10 ** (-loss_db_per_km * 2 * np.asarray(fiber_km_each_side, float) / 10)
    return -np.log2(np.clip(1 - eta, 1e-300, None)) * attempt_rate_hz
