"""What would it take: how a device's fidelity and herald rate change when one parameter improves.

A :class:`DevicePoint` is a single-click link at one operating point, e.g. a calibrated lab
(:func:`calibrated_point`; ``qnetlab roadmap --profile NAME`` calibrates the simulated lab on a
device profile first). :func:`sensitivity` improves each parameter by a factor ``k``
(efficiency, collection and coherence times ``k``; added noise, its heating share, dark counts
and fiber length over ``k``; detector and visibility losses ``1 - x`` over ``k``) and reports
fidelity and rate at the point's ``alpha``; :func:`smallest_improvement` finds the least ``k``
of one parameter alone that lifts the best fidelity (over ``alpha``) above a threshold: 1/2
(entanglement) or the Bell threshold ``(1 + 3 / sqrt 2) / 4 = 0.780`` (CHSH violation for a
Werner-like state, ``S = 2 sqrt2 (4F - 1) / 3 > 2``). The link model is
:mod:`qnetlab.sequences.fom` (docs/physics.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from qnetlab.sequences.fom import LinkBudget, max_fidelity_alpha, single_click

ENTANGLED = 0.5
BELL = (1 + 3 / math.sqrt(2)) / 4  # F above which a Werner-like state violates CHSH
MAX_FACTOR = 1e4


@dataclass(frozen=True)
class DevicePoint:
    """A symmetric single-click link at one operating point."""

    efficiency: float  # transducer x swap
    added_noise: float  # input-referred, photons
    noise_floor: float  # the share that does not come from pump heating
    collection: float  # transducer output -> node fiber (detectors excluded)
    detector_efficiency: float
    dark_click: float  # dark-count click probability per herald window, both detectors
    t2_s: float
    visibility: float
    phase_noise_rad: float
    fiber_km: float  # each side
    alpha: float
    attempt_rate_hz: float = 50e3
    swap_duration_s: float = 200e-9

    def budget(self) -> LinkBudget:
        return LinkBudget(collection=self.collection, detector_efficiency=self.detector_efficiency,
                          visibility=self.visibility, phase_noise_rad=self.phase_noise_rad,
                          dark_click=self.dark_click)

    def period_s(self) -> float:
        return max(1 / self.attempt_rate_hz,
                   2 * self.fiber_km * LinkBudget().fiber_delay_s_per_km + self.swap_duration_s)

    def terms(self) -> tuple[float, float, float]:
        """(eta per node, added noise, coherence) of the link model."""
        b = self.budget()
        return (self.efficiency * b.chain(self.fiber_km), self.added_noise,
                b.coherence(self.fiber_km, self.t2_s))

    def predict(self, alpha: float | None = None) -> tuple[float, float]:
        """(heralds per second, fidelity) at ``alpha`` (default: the point's)."""
        eta, noise, coherence = self.terms()
        p, f = single_click(self.alpha if alpha is None else alpha, eta, noise, coherence,
                            self.dark_click)
        return p / self.period_s(), f

    def best_fidelity(self) -> tuple[float, float, float]:
        """(best fidelity over alpha, its alpha, its rate per second)."""
        eta, noise, coherence = self.terms()
        alpha, p, f = max_fidelity_alpha(eta, noise, coherence, self.dark_click)
        return f, alpha, p / self.period_s()


def _loss_over(value: float, k: float) -> float:
    return 1 - (1 - value) / k


#: parameter -> how a k-fold improvement changes the point
IMPROVEMENTS: dict[str, Callable[[DevicePoint, float], DevicePoint]] = {
    "efficiency": lambda d, k: replace(d, efficiency=min(1.0, d.efficiency * k)),
    "added noise": lambda d, k: replace(d, added_noise=d.added_noise / k,
                                        noise_floor=d.noise_floor / k),
    "heating": lambda d, k: replace(d, added_noise=d.noise_floor
                                    + (d.added_noise - d.noise_floor) / k),
    "collection": lambda d, k: replace(d, collection=min(1.0, d.collection * k)),
    "detector efficiency": lambda d, k: replace(
        d, detector_efficiency=_loss_over(d.detector_efficiency, k)),
    "dark counts": lambda d, k: replace(d, dark_click=d.dark_click / k),
    "coherence (T2)": lambda d, k: replace(d, t2_s=d.t2_s * k),
    "visibility": lambda d, k: replace(d, visibility=_loss_over(d.visibility, k)),
    "fiber length": lambda d, k: replace(d, fiber_km=d.fiber_km / k),
}


@dataclass(frozen=True)
class Sensitivity:
    parameter: str
    factor: float
    rate_hz: float
    fidelity: float
    rate_ratio: float
    fidelity_change: float


def sensitivity(point: DevicePoint, factor: float = 2.0) -> list[Sensitivity]:
    """For each parameter improved ``factor``-fold alone: rate and fidelity at the point's
    alpha, and their change from the point."""
    if not factor >= 1:
        raise ValueError(f"factor={factor!r}: allowed a number >= 1 (an improvement)")
    rate0, f0 = point.predict()
    rows = []
    for name, improve in IMPROVEMENTS.items():
        rate, f = improve(point, factor).predict()
        rows.append(Sensitivity(name, factor, rate, f, rate / rate0 if rate0 > 0 else math.inf,
                                f - f0))
    return rows


def smallest_improvement(point: DevicePoint, parameter: str, threshold: float
                         ) -> float | None:
    """Least factor (1 .. MAX_FACTOR) of ``parameter`` alone that lifts the best fidelity to
    ``threshold``; 1 when it is there already, None when no single factor reaches it."""
    improve = IMPROVEMENTS[parameter]

    def reaches(k: float) -> bool:
        return improve(point, k).best_fidelity()[0] >= threshold

    if reaches(1.0):
        return 1.0
    if not reaches(MAX_FACTOR):
        return None
    lo, hi = 0.0, math.log(MAX_FACTOR)
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if reaches(math.exp(mid)) else (mid, hi)
    return math.exp(hi)


def roadmap(point: DevicePoint, factor: float = 2.0) -> dict[str, Any]:
    """Everything ``qnetlab roadmap`` shows: the point, its best fidelity, the sensitivity to
    a ``factor``-fold improvement, and the least single improvements to 1/2 and to Bell."""
    best, alpha, rate = point.best_fidelity()
    return {
        "point": point,
        "now": point.predict(),
        "best": (best, alpha, rate),
        "sensitivity": sensitivity(point, factor),
        "to_entangle": {p: smallest_improvement(point, p, ENTANGLED) for p in IMPROVEMENTS},
        "to_bell": {p: smallest_improvement(point, p, BELL) for p in IMPROVEMENTS},
    }


def calibrated_point(cal: Mapping[str, Mapping[str, float]], nodes: tuple[str, str],
                     station: str, fiber_km: float, t2_s: float, noise_floor: float = 0.0,
                     budget: LinkBudget | None = None) -> DevicePoint:
    """A calibrated link (the calibration store's ``as_dict``): efficiency x swap contrast,
    added noise, alpha (means of the two nodes), the station's detector efficiency and dark
    clicks; collection, visibility and phase noise from the lab's ``budget``; the memory's
    ``t2_s`` as read; ``noise_floor`` the added noise that is not pump heating, if known."""
    def mean(key: str, default: float | None = None) -> float:
        values = [cal.get(n, {}).get(key, default) for n in nodes]
        if None in values:
            raise ValueError(f"the calibration has no {key} for {' and '.join(nodes)}: run "
                             "`qnetlab calibrate` first")
        return float(sum(values)) / 2  # type: ignore[arg-type]

    b = budget or LinkBudget()
    herald = cal.get(station, {})
    return DevicePoint(
        efficiency=mean("efficiency") * mean("swap_contrast", 1.0),
        added_noise=mean("added_noise"), noise_floor=min(noise_floor, mean("added_noise")),
        collection=b.collection,
        detector_efficiency=float(herald.get("detector_efficiency", b.detector_efficiency)),
        dark_click=float(herald.get("dark_click_probability", b.dark_click)),
        t2_s=t2_s, visibility=b.visibility, phase_noise_rad=b.phase_noise_rad,
        fiber_km=fiber_km, alpha=mean("alpha"))


def table(result: Mapping[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Rows (parameter, rate ratio, fidelity change, least factor to 1/2, to Bell)."""
    def factor(k: float | None) -> str:
        return "not alone" if k is None else ("reached" if k <= 1.0 else f"x{k:.3g}")

    return [(s.parameter, f"x{s.rate_ratio:.3g}", f"{s.fidelity_change:+.4f}",
             factor(result["to_entangle"][s.parameter]), factor(result["to_bell"][s.parameter]))
            for s in result["sensitivity"]]


def figure(result: Mapping[str, Any], title: str) -> Any:
    """Bar charts: rate ratio and fidelity change per parameter for the k-fold improvement."""
    from matplotlib.figure import Figure  # outside pyplot: no backend is forced

    rows = result["sensitivity"]
    names = [r.parameter for r in rows]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    axes[0].barh(names, [r.rate_ratio for r in rows])
    axes[0].axvline(1.0, color="k", lw=0.8)
    axes[0].set(xlabel=f"rate ratio ({rows[0].factor:g}x better)", xscale="log")
    axes[1].barh(names, [r.fidelity_change for r in rows])
    axes[1].axvline(0.0, color="k", lw=0.8)
    f_now = result["now"][1]
    axes[1].set(xlabel=f"fidelity change (now F = {f_now:.3f})")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
