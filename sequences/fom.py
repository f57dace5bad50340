"""The lab's model of a single-click link, used to choose the pump operating point.

Figure of merit: the herald rate at a target fidelity. For a transducer with conversion
efficiency ``eta_t`` and input-referred added noise ``N``, per attempt and node

    p_signal = 2 alpha eta,  p_noise = 2 N eta,  eta = eta_t x swap x chain

(``chain`` = collection x fiber x detector), a true herald has fidelity
``(1 - alpha)(1 + c)/2`` with ``c = V exp(-sigma^2/2) exp(-2 t_wait / T2)`` and a false one
``alpha (1 - alpha)``; the bright-state population ``alpha`` is chosen to reach the target
fidelity with the highest rate. Formulas: docs/physics.md (heralding); the chain defaults are
the link-budget assumptions below, not measured quantities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .fitting import Fit, FitError, fit

JITTER_SIGMA_S = 20e-12 / 2.3548  # SNSPD timing jitter (20 ps FWHM), docs/physics.md


@dataclass(frozen=True)
class LinkBudget:
    """Everything between the transducer's output and a click, plus the coherence budget."""

    # transducer output to the node's fiber: Meesala 2024's 0.055 without their detectors' 0.83
    # (the detectors are counted once, by ``detector_efficiency``)
    collection: float = 0.055 / 0.83
    detector_efficiency: float = 0.9
    fiber_loss_db_per_km: float = 0.2
    fiber_delay_s_per_km: float = 5e-6
    visibility: float = 0.9
    phase_noise_rad: float = 0.1
    dark_click: float = 4e-6  # dark-count probability per herald window, both detectors
    herald_window_s: float | None = None  # None: every photon falls inside the window

    def chain(self, fiber_km: float) -> float:
        return self.collection * self.detector_efficiency * 10 ** (
            -self.fiber_loss_db_per_km * fiber_km / 10)

    def acceptance(self, photon_sigma_s: float) -> float:
        """Share of a photon of rms width ``photon_sigma_s`` inside the centred herald window."""
        return window_acceptance(self.herald_window_s, photon_sigma_s)

    def coherence(self, fiber_km: float, t2_s: float) -> float:
        wait = 2 * fiber_km * self.fiber_delay_s_per_km
        return self.visibility * math.exp(-self.phase_noise_rad**2 / 2) * math.exp(
            -2 * wait / t2_s)


def single_click(alpha: float, eta: float, noise: float, coherence: float,
                 dark: float) -> tuple[float, float]:
    """(success probability per attempt, mean fidelity) of a symmetric single-click link."""
    p_signal = 2 * alpha * eta
    p_false = 2 * noise * eta + dark
    total = p_signal + p_false
    if total <= 0:
        return 0.0, 0.0
    f_true = (1 - alpha) * (1 + coherence) / 2
    f_false = alpha * (1 - alpha)
    return total, (p_signal * f_true + p_false * f_false) / total


def _alphas(alpha_max: float) -> np.ndarray:
    """The bright-state populations tried: 0.001 steps up to ``alpha_max`` (at most 0.499)."""
    return np.arange(1, round(min(alpha_max, 0.499) * 1000) + 1) / 1000


def best_alpha(eta: float, noise: float, coherence: float, dark: float,
               target_fidelity: float, alpha_max: float = 0.499
               ) -> tuple[float, float, float] | None:
    """Largest-rate ``alpha`` (up to ``alpha_max``) reaching ``target_fidelity``: (alpha, p, F),
    or None."""
    best = None
    for alpha in _alphas(alpha_max):
        alpha = float(alpha)
        p, f = single_click(alpha, eta, noise, coherence, dark)
        if f >= target_fidelity and (best is None or p > best[1]):
            best = (alpha, p, f)
    return best


def max_fidelity_alpha(eta: float, noise: float, coherence: float, dark: float,
                       alpha_max: float = 0.499) -> tuple[float, float, float]:
    """(alpha, p, F) with the highest mean fidelity (alpha up to ``alpha_max``): the best a
    device can do when no alpha reaches the target (the fidelity of a noisy device peaks at an
    intermediate alpha)."""
    rows = [(float(a), *single_click(float(a), eta, noise, coherence, dark))
            for a in _alphas(alpha_max)]
    return max(rows, key=lambda r: r[2])


def window_acceptance(window_s: float | None, photon_sigma_s: float) -> float:
    """``erf(W / (2 sqrt2 sigma))``: a Gaussian arrival (photon width and detector jitter)
    inside a window of full width ``W`` centred on it (calibrated delays centre it)."""
    if window_s is None:
        return 1.0
    sigma = math.hypot(photon_sigma_s, JITTER_SIGMA_S)
    return math.erf(window_s / (2 * math.sqrt(2) * sigma))


def photon_sigma_s(linewidth_hz: float, cooperativity: float) -> float:
    """rms width of the converted photon: ``1 / (2 pi kappa_e (1 + C))`` (the pump broadens
    the microwave mode by ``1 + C``; docs/physics.md)."""
    return 1.0 / (2 * math.pi * linewidth_hz * (1 + cooperativity))


def conversion_curve(power_mw: np.ndarray, scale: float, c_per_mw: float) -> np.ndarray:
    """``scale 4C / (1 + C)^2`` with ``C = c_per_mw P``: efficiency against pump power."""
    c = c_per_mw * np.asarray(power_mw, float)
    return scale * 4 * c / (1 + c) ** 2


def fit_cooperativity(power_dbm: np.ndarray, efficiency: np.ndarray) -> Fit:
    """Fit :func:`conversion_curve` to efficiencies read at pump powers (dBm); the fitted
    ``c_per_mw`` gives the cooperativity, hence the photon width, at any pump power."""
    p_mw = 10 ** (np.asarray(power_dbm, float) / 10)
    eff = np.asarray(efficiency, float)
    if np.unique(p_mw).size < 3 or not np.any(eff > 0):
        raise FitError("cooperativity fit needs efficiencies at three pump powers or more")
    i = int(np.argmax(eff))
    f = fit(conversion_curve, p_mw, eff, {"scale": float(eff[i]), "c_per_mw": 1 / p_mw[i]},
            bounds=([0.0, 0.0], [np.inf, np.inf]))
    if not f["c_per_mw"] > 0:
        raise FitError(f"cooperativity fit gave c = {f['c_per_mw']:.3g} per mW")
    return f
