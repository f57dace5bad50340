"""Model fits used by the calibrations (scipy ``curve_fit``), with uncertainties and R^2."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit


@dataclass(frozen=True)
class Fit:
    """Best-fit parameters, their 1-sigma errors, and the coefficient of determination."""

    params: dict[str, float]
    errors: dict[str, float]
    r_squared: float
    model: Callable[..., np.ndarray]

    def __getitem__(self, name: str) -> float:
        return self.params[name]

    def curve(self, x: np.ndarray) -> np.ndarray:
        return self.model(x, *self.params.values())


class FitError(RuntimeError):
    """The data do not support the model (no convergence, or a meaningless result)."""


def fit(model: Callable[..., np.ndarray], x: np.ndarray, y: np.ndarray, p0: dict[str, float],
        bounds: tuple[list[float], list[float]] | None = None) -> Fit:
    x, y = np.asarray(x, float), np.asarray(y, float)
    names = list(p0)
    try:
        popt, pcov = curve_fit(model, x, y, p0=list(p0.values()),
                               bounds=bounds if bounds is not None else (-np.inf, np.inf),
                               maxfev=20000)
    except (RuntimeError, ValueError) as exc:
        raise FitError(f"{model.__name__} fit did not converge: {exc}") from None
    residual = y - model(x, *popt)
    total = np.sum((y - y.mean()) ** 2)
    r2 = 1 - np.sum(residual**2) / total if total > 0 else 0.0
    errors = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else \
        np.full(len(popt), np.inf)
    return Fit(dict(zip(names, map(float, popt), strict=True)),
               dict(zip(names, map(float, errors), strict=True)), float(r2), model)


def lorentzian_dip(x, x0, fwhm, depth, baseline):
    """``baseline (1 - depth / (1 + (2 (x - x0)/fwhm)^2))``: a cavity reflection dip."""
    return baseline * (1 - depth / (1 + (2 * (x - x0) / fwhm) ** 2))


def fit_lorentzian_dip(x: np.ndarray, y: np.ndarray) -> Fit:
    i = int(np.argmin(y))
    base = float(np.median(y))
    if base <= 0:
        raise FitError("no light on the photodiode (baseline <= 0)")
    depth = 1 - y[i] / base
    half = y < base * (1 - depth / 2)
    width = max(float(np.ptp(x[half])) if half.sum() > 1 else 0.0, 3 * float(np.diff(x).mean()))
    return fit(lorentzian_dip, x, y, {"x0": float(x[i]), "fwhm": width, "depth": depth,
                                      "baseline": base})


def tuning_curve(bias, f_max, offset, period):
    """Flux-tunable mode: ``f_max sqrt(|cos(pi (bias - offset) / period)|)``."""
    return f_max * np.sqrt(np.abs(np.cos(np.pi * (bias - offset) / period)))


def fit_tuning_curve(bias: np.ndarray, freq: np.ndarray) -> Fit:
    i = int(np.argmax(freq))
    return fit(tuning_curve, bias, freq,
               {"f_max": float(freq[i]), "offset": float(bias[i]), "period": 10.0},
               bounds=([0, -10, 1], [2 * float(freq.max()), 10, 50]))


def rabi_swap(x, x_opt, contrast):
    """Swapped fraction ``contrast sin^2(pi/2 x / x_opt)``."""
    return contrast * np.sin(np.pi / 2 * x / x_opt) ** 2


def fit_rabi(x: np.ndarray, y: np.ndarray) -> Fit:
    i = int(np.argmax(y))
    return fit(rabi_swap, x, y, {"x_opt": float(max(x[i], 1e-12)), "contrast": float(y[i])},
               bounds=([float(x[x > 0].min()) / 2, 0], [2 * float(x.max()), 1.2]))


def gaussian_peak(x, x0, sigma, amplitude, background):
    return background + amplitude * np.exp(-0.5 * ((x - x0) / sigma) ** 2)


def fit_gaussian_peak(x: np.ndarray, y: np.ndarray) -> Fit:
    smooth = np.convolve(y, np.ones(9) / 9, mode="same")
    i = int(np.argmax(smooth))
    bg = float(np.median(y))
    return fit(gaussian_peak, x, y, {"x0": float(x[i]), "sigma": 10 * float(np.diff(x).mean()),
                                     "amplitude": float(smooth[i] - bg), "background": bg})


def fringe(phase, phase0, visibility, offset):
    """Interference fringe ``offset + visibility cos(phase - phase0)``."""
    return offset + visibility * np.cos(phase - phase0)


def fit_fringe(phase: np.ndarray, y: np.ndarray) -> Fit:
    # linear least squares for a cos + b sin + c, then the nonlinear fit for errors
    design = np.column_stack([np.cos(phase), np.sin(phase), np.ones_like(phase)])
    (a, b, c), *_ = np.linalg.lstsq(design, y, rcond=None)
    return fit(fringe, phase, y, {"phase0": float(np.arctan2(b, a)),
                                  "visibility": float(np.hypot(a, b)), "offset": float(c)})
