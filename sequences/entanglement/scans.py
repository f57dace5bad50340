"""Scans of rate and fidelity against alpha, fiber length and pump power, each against the
lab's analytic model (rate against distance also against the PLOB bound)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qnetlab.runstore import RunStore
from qnetlab.stations import StationBundle

from . import plots
from .generation import generate, link_pumps
from .model import LinkModel, calibrated_budget, calibrated_photon_sigma, plob_rate
from .verification import quick_fidelity


@dataclass
class Scan:
    name: str
    x: np.ndarray
    fidelity: np.ndarray
    fidelity_err: np.ndarray
    rate_hz: np.ndarray
    rate_err: np.ndarray
    model_x: np.ndarray
    model_fidelity: np.ndarray
    model_rate_hz: np.ndarray
    figures: list[Path]


def link_model(bundle: StationBundle, link: str, calibration: dict[str, dict[str, float]]
               ) -> LinkModel:
    """Average the two ends' calibrated efficiency and noise into a symmetric model."""
    ends = bundle.topology.links[link].nodes
    qnu = bundle.node(ends[0])["qnu"]
    eff = float(np.mean([calibration[n]["efficiency"] * calibration[n].get("swap_contrast", 1.0)
                         for n in ends]))
    noise = float(np.mean([calibration[n]["added_noise"] for n in ends]))
    t2 = float(np.mean([bundle.node(n)["qnu"].qubit.t2() for n in ends]))
    herald = calibration.get(bundle.topology.links[link].herald, {})
    sigmas = tuple(calibrated_photon_sigma(calibration[n], herald,
                                           bundle.node(n)["pump"].power()) for n in ends)
    return LinkModel(eff, noise, t2, qnu.engine.attempt_rate(), qnu.qubit.swap_duration(),
                     budget=calibrated_budget(herald), photon_sigma_s=sigmas)


def _measure(bundle: StationBundle, link: str, pairs: int, runs: RunStore, name: str,
             calibration: dict[str, Any]) -> tuple[float, float, float, float, Path | None]:
    gen = generate(bundle, link, pairs, bases=("X", "Y", "Z"), runs=runs, name=name,
                   max_time_s=7200, calibration=calibration)
    f, f_err = quick_fidelity(gen)
    rate = gen.rate_hz
    return f, f_err, rate, rate / np.sqrt(max(len(gen), 1)), gen.extra.get("hdf5_path")


def _fiber(bundle: StationBundle, link: str) -> float:
    a, b = bundle.topology.links[link].nodes
    return bundle.node(a)["qnu"].link_to(b).fiber_length()


def scan_alpha(bundle: StationBundle, link: str, alphas: list[float], pairs: int,
               calibration: dict[str, dict[str, float]], runs: RunStore | None = None) -> Scan:
    runs = runs or RunStore()
    ends = bundle.topology.links[link].nodes
    qnus = [bundle.node(n)["qnu"] for n in ends]
    before = [q.qubit.alpha() for q in qnus]
    rows, last = [], None
    try:
        for alpha in alphas:
            for q in qnus:
                q.qubit.alpha(alpha)
            *row, last = _measure(bundle, link, pairs, runs, "entanglement.scan_alpha",
                                  calibration)
            rows.append(row)
    finally:
        for q, a in zip(qnus, before, strict=True):
            q.qubit.alpha(a)
    model = link_model(bundle, link, calibration)
    fiber = _fiber(bundle, link)
    mx = np.linspace(min(alphas) * 0.8, max(alphas) * 1.1, 100)
    pred = np.array([model.predict("single_click", a, fiber) for a in mx])
    r = np.array(rows)
    figs = [plots.save(plots.model_overlay(np.array(alphas), r[:, 0], r[:, 1], mx, pred[:, 1],
                                           "bright-state population alpha", "fidelity",
                                           f"{link}: fidelity against alpha"), last,
                       "fidelity_vs_alpha"),
            plots.save(plots.model_overlay(np.array(alphas), r[:, 2], r[:, 3], mx, pred[:, 0],
                                           "bright-state population alpha", "heralds / s",
                                           f"{link}: rate against alpha"), last, "rate_vs_alpha")]
    return Scan("alpha", np.array(alphas), r[:, 0], r[:, 1], r[:, 2], r[:, 3], mx, pred[:, 1],
                pred[:, 0], [f for f in figs if f])


def scan_fiber(bundle: StationBundle, link: str, lengths_km: list[float], pairs: int,
               calibration: dict[str, dict[str, float]], runs: RunStore | None = None) -> Scan:
    """Rate and fidelity against the fiber on each side (the testbed's spool switch)."""
    runs = runs or RunStore()
    a, b = bundle.topology.links[link].nodes
    chans = [bundle.node(a)["qnu"].link_to(b), bundle.node(b)["qnu"].link_to(a)]
    before = [c.fiber_length() for c in chans]
    rows, last = [], None
    try:
        for km in lengths_km:
            for c in chans:
                c.fiber_length(km)
            *row, last = _measure(bundle, link, pairs, runs, "entanglement.scan_fiber",
                                  calibration)
            rows.append(row)
    finally:
        for c, km in zip(chans, before, strict=True):
            c.fiber_length(km)
    model = link_model(bundle, link, calibration)
    mx = np.linspace(max(min(lengths_km) * 0.5, 0.1), max(lengths_km) * 1.1, 120)
    pred = np.array([model.predict("single_click", bundle.node(a)["qnu"].qubit.alpha(), km)
                     for km in mx])
    bound = plob_rate(mx, np.array([1 / model.attempt_period_s(km) for km in mx]))
    r = np.array(rows)
    figs = [plots.save(plots.model_overlay(np.array(lengths_km), r[:, 2], r[:, 3], mx,
                                           pred[:, 0], "fiber per side (km)", "heralds / s",
                                           f"{link}: rate against distance",
                                           extra=(bound, "PLOB repeaterless bound"), log=True),
                       last, "rate_vs_distance"),
            plots.save(plots.model_overlay(np.array(lengths_km), r[:, 0], r[:, 1], mx,
                                           pred[:, 1], "fiber per side (km)", "fidelity",
                                           f"{link}: fidelity against distance"), last,
                       "fidelity_vs_distance")]
    return Scan("fiber", np.array(lengths_km), r[:, 0], r[:, 1], r[:, 2], r[:, 3], mx,
                pred[:, 1], pred[:, 0], [f for f in figs if f])


def scan_pump(bundle: StationBundle, link: str, powers_dbm: list[float], pairs: int,
              calibration: dict[str, dict[str, float]], runs: RunStore | None = None) -> Scan:
    """Rate and fidelity against the pump power of both ends, with the model fed by the
    transducer efficiency and noise measured at each point."""
    runs = runs or RunStore()
    ends = bundle.topology.links[link].nodes
    pumps = [bundle.node(n)["pump"] for n in ends]
    qnus = [bundle.node(n)["qnu"] for n in ends]
    before = [p.power() for p in pumps]
    rows, preds, last = [], [], None
    base = link_model(bundle, link, calibration)
    base_herald = calibration.get(bundle.topology.links[link].herald, {})
    fiber = _fiber(bundle, link)
    alpha = qnus[0].qubit.alpha()
    try:
        for power in powers_dbm:
            for p in pumps:
                p.power(power)
            with link_pumps(bundle, link):
                eff = np.mean([q.transducer.efficiency() for q in qnus])
                noise = np.mean([q.transducer.added_noise() for q in qnus])
            swap = np.mean([calibration[n].get("swap_contrast", 1.0) for n in ends])
            model = LinkModel(eff * swap, noise, base.t2_s, base.attempt_rate_hz,
                              base.swap_duration_s, budget=base.budget,
                              photon_sigma_s=tuple(calibrated_photon_sigma(
                                  calibration[n], base_herald, power) for n in ends))
            preds.append(model.predict("single_click", alpha, fiber))
            *row, last = _measure(bundle, link, pairs, runs, "entanglement.scan_pump",
                                  calibration)
            rows.append(row)
    finally:
        for p, value in zip(pumps, before, strict=True):
            p.power(value)
    r, pred = np.array(rows), np.array(preds)
    x = np.array(powers_dbm, float)
    figs = [plots.save(plots.model_overlay(x, r[:, 0], r[:, 1], x, pred[:, 1], "pump (dBm)",
                                           "fidelity", f"{link}: fidelity against pump power"),
                       last, "fidelity_vs_pump"),
            plots.save(plots.model_overlay(x, r[:, 2], r[:, 3], x, pred[:, 0], "pump (dBm)",
                                           "heralds / s", f"{link}: rate against pump power"),
                       last, "rate_vs_pump")]
    return Scan("pump", x, r[:, 0], r[:, 1], r[:, 2], r[:, 3], x, pred[:, 1], pred[:, 0],
                [f for f in figs if f])
