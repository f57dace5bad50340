"""The link model, fed with calibrated values, predicts what the simulated link does at random
operating points (not the demo's), for both protocols; and the calibrations behind it record
what the model needs without bias."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qnetlab import stations
from qnetlab.runstore import RunStore
from qnetlab.sequences.calibration import CalContext, CalibrationStore, calibrate
from qnetlab.sequences.calibration.link_cals import DetectorTiming
from qnetlab.sequences.entanglement import generate, link_pumps, quick_fidelity
from qnetlab.sequences.entanglement.model import (
    LinkModel,
    calibrated_budget,
    calibrated_photon_sigma,
)

POINTS = 12  # random operating points per protocol
PAIRS = {"single_click": 1500, "two_photon": 600}
MEASURE_S = 20.0  # transducer readout per node and point (0.7 % efficiency error)
DARK_S = 40  # seconds of dark counts per detector and point


@pytest.fixture
def calibrated(sim_lab, qnetlab_data_dir):
    lab = sim_lab("link", seed=7)
    bundle = stations.load("sim_link")
    report = calibrate(bundle, data_dir=qnetlab_data_dir)
    assert report.ok, report.table()
    store = CalibrationStore(qnetlab_data_dir)
    cal = store.as_dict()
    detector = store.current("detector_efficiency", "mid")
    cal["mid"]["detector_efficiency_rel_err"] = detector.uncertainty / detector.value
    yield lab, bundle, cal
    bundle.close()


def _draw(rng: np.random.Generator, alpha_max: float) -> dict[str, tuple[float, float] | float]:
    """One operating point: alpha (0.03-0.4 inside the station's limit), pump (dBm), fiber (km)
    a side, detector bias (uA)."""
    return {"alpha": float(rng.uniform(0.03, min(0.4, alpha_max))),
            "pump_dbm": (float(rng.uniform(-4, 8)), float(rng.uniform(-4, 8))),
            "fiber_km": (float(rng.uniform(0.5, 10)), float(rng.uniform(0.5, 10))),
            "bias_ua": float(rng.uniform(9, 12.5))}


def _apply(bundle, point) -> None:
    a, b = bundle.topology.links["ab"].nodes
    herald = bundle.herald("ab")
    for node, peer, dbm, km in ((a, b, point["pump_dbm"][0], point["fiber_km"][0]),
                                (b, a, point["pump_dbm"][1], point["fiber_km"][1])):
        inst = bundle.node(node)
        inst["pump"].power(dbm)
        inst["qnu"].qubit.alpha(point["alpha"])
        inst["qnu"].link_to(peer).fiber_length(km)
    herald.det1.bias(point["bias_ua"])
    herald.det2.bias(point["bias_ua"])


def _model(bundle, cal, point) -> tuple[LinkModel, float]:
    """The model at this point from the calibration and the readouts a user has there
    (transducer efficiency and noise per node, dark counts at the new detector bias):
    (model, relative 1-sigma error of its efficiencies)."""
    ends = bundle.topology.links["ab"].nodes
    qnus = [bundle.node(n)["qnu"] for n in ends]
    with link_pumps(bundle, "ab"):
        readouts = []
        for q in qnus:
            with q.transducer.measure_time.set_to(MEASURE_S):
                readouts.append((q.transducer.efficiency(), q.transducer.added_noise()))
    herald = bundle.herald("ab")
    station = {k: v for k, v in cal["mid"].items() if not k.endswith("_rel_err")}
    dark = sum(herald.det1.count_rate() + herald.det2.count_rate() for _ in range(DARK_S))
    station["dark_click_probability"] = dark / DARK_S * station["herald_window_ps"] * 1e-12
    swap = tuple(cal[n].get("swap_contrast", 1.0) for n in ends)
    model = LinkModel(
        efficiency=tuple(r[0] * s for r, s in zip(readouts, swap, strict=True)),
        added_noise=tuple(r[1] for r in readouts),
        t2_s=tuple(q.qubit.t2() for q in qnus),
        attempt_rate_hz=qnus[0].engine.attempt_rate(),
        swap_duration_s=qnus[0].qubit.swap_duration(),
        budget=calibrated_budget(station),
        photon_sigma_s=tuple(calibrated_photon_sigma(cal[n], station, p) for n, p in
                             zip(ends, point["pump_dbm"], strict=True)),
        swap=swap)
    return model, 0.03 / math.sqrt(MEASURE_S)


@pytest.mark.parametrize("protocol", ["single_click", "two_photon"])
def test_model_predicts_random_operating_points(calibrated, protocol):
    """Herald probability and fidelity at random (seeded) operating points agree with the
    model as z-scores, and the probability carries no bias beyond 5 %."""
    _lab, bundle, cal = calibrated
    rng = np.random.default_rng(20261129)
    z_p, z_f, ratios, shared = [], [], [], []
    for _ in range(POINTS):
        point = _draw(rng, bundle.node("alice")["qnu"].qubit.alpha.vals._max_value)
        _apply(bundle, point)
        model, rel_eff = _model(bundle, cal, point)
        p_true, p_false, f_model = model.probability(protocol, point["alpha"],
                                                     point["fiber_km"])
        p_model = p_true + p_false
        gen = generate(bundle, "ab", PAIRS[protocol], protocol=protocol, bases=("X", "Y", "Z"),
                       max_time_s=6e5, poll_s=200.0)
        p_hat = len(gen) / gen.attempts_total
        order = 2 if protocol == "two_photon" else 1  # p ~ eta^order
        # the calibrated detector efficiency's error is shared by every point
        sys = p_model * order * cal["mid"]["detector_efficiency_rel_err"]
        sigma_p = math.sqrt((p_hat / math.sqrt(len(gen))) ** 2
                            + (p_model * order * rel_eff / 2) ** 2 + sys**2)
        shared.append((sys / sigma_p) ** 2)
        f_hat, f_err = quick_fidelity(gen)
        z_p.append((p_hat - p_model) / sigma_p)
        z_f.append((f_hat - f_model) / f_err)
        ratios.append(p_model / p_hat)
    z_p, z_f, ratios = map(np.array, (z_p, z_f, ratios))
    assert np.all(np.abs(z_p) < 4), (z_p, ratios)
    assert np.all(np.abs(z_f) < 4), z_f
    assert abs(z_p.mean()) < 3 * math.sqrt(1 / POINTS + np.mean(shared)), (z_p, ratios)
    assert abs(ratios.mean() - 1) < 0.05, ratios  # no bias beyond +-5 %


def _truth_at_operating_point(lab, cal, node: str, t: float | None = None
                              ) -> tuple[float, float]:
    """(true conversion efficiency, true photon width) of ``node`` at its calibrated pump power,
    pump emitting, at lab time ``t`` (default now; read from the simulated world, never from an
    instrument)."""
    world_node = lab.world.nodes[node]
    pump = world_node.pump
    saved = pump.power_dbm, pump.output_on, pump.interlock_ok
    pump.power_dbm, pump.output_on, pump.interlock_ok = cal[node]["pump_power_dbm"], True, True
    t = lab.clock.now() if t is None else t
    try:
        return world_node.conversion_efficiency(t), world_node.photon_sigma_s(t)
    finally:
        pump.power_dbm, pump.output_on, pump.interlock_ok = saved


def test_herald_window_is_chosen_for_both_nodes_photons(calibrated, qnetlab_data_dir):
    """With the two nodes at different pump powers (different photon widths), the timing
    calibration's window holds at least 99.5 % of each node's photons, the broader one
    included. The calibrated powers may coincide, so bob's pump is set 6 dB lower (a broader
    photon) before the timing is calibrated again."""
    lab, bundle, cal = calibrated
    cal["bob"]["pump_power_dbm"] -= 6.0
    bundle.node("bob")["pump"].power(cal["bob"]["pump_power_dbm"])
    ctx = CalContext(bundle, RunStore(qnetlab_data_dir), CalibrationStore(qnetlab_data_dir),
                     figures=False)
    timing = DetectorTiming()
    for up in timing.calibrate(ctx, "mid"):
        if timing.quantities[up.quantity].apply is not None:
            timing.quantities[up.quantity].apply(bundle, "mid", up.value)
    station = lab.world.stations["mid"]
    sigmas = {node: _truth_at_operating_point(lab, cal, node)[1] for node in ("alice", "bob")}
    assert sigmas["bob"] > 1.2 * sigmas["alice"]  # the case where one width does not fit both
    for node, sigma in sigmas.items():
        assert station.window_acceptance(lab.clock.now(), sigma) > 0.995, node


@pytest.mark.parametrize("seed", [3, 11])
def test_recorded_efficiency_is_unbiased_with_its_uncertainty(sim_lab, qnetlab_data_dir, seed):
    """The pump-operating-point calibration records the efficiency with an uncertainty that
    covers the truth (not the highest of noisy readings, which lies above it)."""
    lab = sim_lab("link", seed=seed)
    bundle = stations.load("sim_link")
    try:
        assert calibrate(bundle, data_dir=qnetlab_data_dir, targets=["alice", "bob"]).ok
        store = CalibrationStore(qnetlab_data_dir)
        cal = store.as_dict()
        for node in ("alice", "bob"):
            rec = store.current("efficiency", node)
            truth, _ = _truth_at_operating_point(lab, cal, node, rec.lab_time)
            assert rec.uncertainty is not None and 0 < rec.uncertainty < 0.03 * rec.value
            assert abs(rec.value - truth) < 3.5 * rec.uncertainty, (node, rec.value, truth)
    finally:
        bundle.close()
