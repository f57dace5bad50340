"""The simulated physics is consistent: with its formulas, with itself, and across instruments."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from conftest import AOM_A, FRIDGE_A, PUMP_A, QNU_A, QNU_B, STATION
from qnetlab.sim_instruments.physics import constants as k_
from qnetlab.sim_instruments.physics.cryostat import DilutionFridge, riccati_step
from qnetlab.sim_instruments.physics.drift import DriftingValue
from qnetlab.sim_instruments.physics.heralding import (
    HeraldSetup,
    NodeOptics,
    analytic_fidelity,
    bell_state,
    fidelity,
    probabilities,
    sample_heralds,
    sample_outcomes,
    true_state,
)
from qnetlab.sim_instruments.physics.transducer import PumpState, Transducer, hot_bath_turn_on

# --- transducer ---------------------------------------------------------------------------------


def test_reflection_dip_follows_the_lorentzian_through_the_instruments(link):
    lib, op = link
    pump, qnu = op(PUMP_A), op(QNU_A)
    node = lib.lab.nodes["alice"]
    xd = node.transducer(0.0)
    for cmd in (":SOUR0:POW 0", ":SOUR0:POW:STAT 1"):
        pump.write(cmd)
    op(AOM_A).write("SOUR1:FUNC DC;:OUTP1 1")  # the AOM gate held open: CW pump
    p_dev = xd.pump_at_device_w(1e-3)
    for detune_pm in (-30, -8, -3, 0, 2, 5, 12, 40):
        wl = xd.resonance_m + detune_pm * 1e-12
        pump.write(f":SOUR0:WAV {wl:.12e}")
        v = float(qnu.query("XDUC:PD:VOLT?"))
        d = k_.C_LIGHT / wl - k_.C_LIGHT / xd.resonance_m
        r = 1 - xd.kappa_ex_hz * xd.kappa_i_hz / (xd.kappa_hz**2 / 4 + d**2)
        assert v == pytest.approx(k_.PD_RESPONSIVITY_V_PER_W * p_dev * r, abs=6 * k_.PD_NOISE_V)


def test_efficiency_peaks_at_unit_cooperativity_and_noise_grows_with_pump():
    xd = Transducer()
    f_q = k_.QUBIT_FREQUENCY_HZ
    bias = xd.mw_period_ma / math.pi * math.acos((f_q / xd.mw_fmax_hz) ** 2)
    pump_wl = k_.C_LIGHT / (k_.C_LIGHT / xd.resonance_m - f_q)
    etas, coops, noises = [], [], []
    for dbm in np.linspace(-10, 13, 47):
        pump = PumpState(wavelength_m=pump_wl, power_dbm=dbm, output_on=True)
        etas.append(xd.efficiency(pump, bias, f_q))
        coops.append(xd.cooperativity(pump))
        noises.append(xd.added_noise(pump, 0.01, bias))
    best = int(np.argmax(etas))
    assert coops[best] == pytest.approx(1.0, rel=0.3)
    assert max(etas) == pytest.approx(xd.eta_o * xd.eta_e, rel=0.02)
    assert np.all(np.diff(noises) > 0)


def test_short_pulses_heat_the_bath_less():
    assert hot_bath_turn_on(None) == 1.0
    short, long_ = hot_bath_turn_on(100e-9), hot_bath_turn_on(10e-6)
    assert short < 0.1 < long_ < 1.0


# --- cryostat -----------------------------------------------------------------------------------


def test_riccati_step_matches_numerical_integration():
    c, k, tb = 0.24, 0.04, 0.008
    t, dt, load = 0.012, 0.01, 5e-6
    for _ in range(20000):
        t += dt * (load - k * (t * t - tb * tb)) / c
    assert riccati_step(0.012, load, k, tb, c, 200.0) == pytest.approx(t, rel=1e-4)


def test_mxc_settles_at_sqrt_tb2_plus_p_over_k_and_relaxes_with_its_time_constant():
    fridge = DilutionFridge()
    fridge.pump_absorbed_w = 10e-6
    fridge.advance(6 * 3600)
    expected = math.sqrt(fridge.base_k**2 + 10e-6 / fridge.cooling_k)
    assert fridge.mxc_k == pytest.approx(expected, rel=1e-3)
    fridge.pump_absorbed_w = 0.0
    t_hot = fridge.mxc_k
    tau = fridge.tau_at(t_hot)
    fridge.advance(fridge.t + tau / 10)
    # initial slope: dT/dt = -k (T^2 - Tb^2) / C
    slope = -fridge.cooling_k * (t_hot**2 - fridge.base_k**2) / fridge.heat_capacity
    assert (fridge.mxc_k - t_hot) / (tau / 10) == pytest.approx(slope, rel=0.1)
    assert k_.MXC_TAU_S == pytest.approx(fridge.tau_at(k_.MXC_TAU_REF_K))


def test_mxc_reading_rises_with_average_pump_power(link):
    lib, op = link
    pump, fridge = op(PUMP_A), op(FRIDGE_A)
    node = lib.lab.nodes["alice"]
    gate = op(AOM_A)
    for cmd in (":SOUR0:POW 10", ":SOUR0:POW:STAT 1"):
        pump.write(cmd)
    readings = {}
    for label, setup in (
        ("pulsed", ["SOUR1:FUNC PULS", "SOUR1:FUNC:PULS:WIDT 1e-6", "SOUR1:FUNC:PULS:PER 1e-5",
                    "OUTP1 ON"]),
        ("cw", ["SOUR1:FUNC DC"]),
    ):
        for cmd in setup:
            gate.write(cmd)
        lib.clock.advance(4 * 3600)
        readings[label] = float(fridge.query("KRDG? 6"))
        absorbed = node.transducer(0).heat_load_w(node.pump)
        expected = math.sqrt(k_.MXC_BASE_K**2 + absorbed / k_.MXC_COOLING_K_W_PER_K2)
        assert readings[label] == pytest.approx(expected, rel=0.01)
    assert readings["cw"] > readings["pulsed"] > k_.MXC_BASE_K


def test_thermometer_reading_lags_by_the_scan_cycle(link):
    lib, op = link
    pump, fridge = op(PUMP_A), op(FRIDGE_A)
    for cmd in (":SOUR0:POW 13", ":SOUR0:POW:STAT 1"):
        pump.write(cmd)
    op(AOM_A).write("SOUR1:FUNC DC;:OUTP1 1")
    lib.clock.advance(120)
    first = float(fridge.query("KRDG? 6"))
    assert float(fridge.query("KRDG? 6")) == first  # same scan visit, same reading
    lib.clock.advance(31)  # 5 channels x (3 s dwell + 3 s pause)
    assert float(fridge.query("KRDG? 6")) > first


def test_heater_pid_holds_a_setpoint(link):
    lib, op = link
    fridge = op(FRIDGE_A)
    for cmd in ("OUTMODE 0,5,6,0,0,0,1", "PID 0,20,30,0", "RANGE 0,5", "SETP 0,0.03"):
        fridge.write(cmd)
    lib.clock.advance(3600)
    assert float(fridge.query("KRDG? 6")) == pytest.approx(0.03, rel=0.02)
    assert 0 < float(fridge.query("HTR? 0")) < 100


# --- heralding: analytic formulas ---------------------------------------------------------------


def _setup(protocol="SING", alpha=0.05, eta=0.01, noise=0.0, dark=0.0, phase=0.0, sigma=0.1,
           wait=0.0, visibility=0.9, t2=1e9) -> HeraldSetup:
    node = NodeOptics(eta=eta, alpha=alpha, noise_click=noise, t2_s=t2)
    return HeraldSetup(protocol, node, NodeOptics(**vars(node)), dark, visibility, phase, sigma,
                       1e-5, wait)


@pytest.mark.parametrize("alpha,eta", [(0.02, 0.01), (0.05, 0.003), (0.1, 0.02)])
def test_single_click_reduces_to_the_textbook_formulas(alpha, eta):
    s = _setup(alpha=alpha, eta=eta)
    assert probabilities(s).total == pytest.approx(2 * alpha * eta, rel=0.02)
    f = fidelity(true_state(s, +1), bell_state(+1))
    assert f == pytest.approx((1 - alpha) * (1 + 0.9 * math.exp(-0.1**2 / 2)) / 2, rel=0.01)


def test_barrett_kok_reduces_to_the_textbook_formulas():
    s = _setup("TWOP", eta=0.1)
    assert probabilities(s).total == pytest.approx(0.1**2 / 2)
    assert analytic_fidelity(s) == pytest.approx((1 + 0.9) / 2)
    s_phase = _setup("TWOP", eta=0.1, phase=1.0)
    assert analytic_fidelity(s_phase) == pytest.approx(analytic_fidelity(s))  # phase-insensitive


def test_phase_error_memory_and_false_heralds_lower_the_fidelity():
    base = analytic_fidelity(_setup())
    assert analytic_fidelity(_setup(phase=0.5)) < base
    assert analytic_fidelity(_setup(wait=100e-6, t2=300e-6)) < base
    assert analytic_fidelity(_setup(noise=0.002)) < base
    assert analytic_fidelity(_setup(alpha=0.2)) < base


def _estimate(s: HeraldSetup, n: int, seed: int):
    """Sample heralds and XX/YY/ZZ outcomes; return (p_hat, sigma_p, F_hat, sigma_F)."""
    rng = np.random.default_rng(seed)
    rec = sample_heralds(s, n, rng, 0.0, 1e12)
    p_hat = n / rec.attempts.sum()
    sigma_p = p_hat * math.sqrt((1 - p_hat) / n)
    states = [true_state(s, +1), true_state(s, -1), _false(s)]
    index = np.where(rec.false, 2, np.where(rec.sign > 0, 0, 1))
    basis = rng.integers(0, 3, size=n)
    dirs = np.eye(3)[basis]
    oa, ob = sample_outcomes(states, index, dirs, dirs, rng)
    prod = (oa * ob).astype(float)
    # F = (1 + s<XX> + s<YY> - <ZZ>) / 4, Pauli-frame corrected per herald
    terms = [prod[basis == 0] * rec.sign[basis == 0], prod[basis == 1] * rec.sign[basis == 1],
             -prod[basis == 2]]
    f_hat = (1 + sum(t.mean() for t in terms)) / 4
    sigma_f = math.sqrt(sum(t.var() / t.size for t in terms)) / 4
    return p_hat, sigma_p, f_hat, sigma_f


def _false(s):
    from qnetlab.sim_instruments.physics.heralding import false_state

    return false_state(s)


@pytest.mark.parametrize(
    "setup",
    [
        _setup(alpha=0.05, eta=0.01),
        _setup(alpha=0.1, eta=0.02, noise=2e-4, dark=1e-5),
        _setup(alpha=0.03, eta=0.005, noise=1e-4, phase=0.3, wait=20e-6, t2=300e-6),
        _setup("TWOP", eta=0.05, noise=1e-3),
        _setup("TWOP", eta=0.2, dark=1e-4, wait=20e-6, t2=300e-6),
    ],
    ids=["sc-ideal", "sc-noisy", "sc-phase-memory", "bk-noisy", "bk-memory"],
)
def test_sampled_rate_and_fidelity_match_the_analytic_model(setup):
    p_hat, sigma_p, f_hat, sigma_f = _estimate(setup, 30000, seed=7)
    assert abs(p_hat - probabilities(setup).total) < 4 * sigma_p
    assert abs(f_hat - analytic_fidelity(setup)) < 4 * sigma_f


# --- heralding through the instruments ------------------------------------------------------------


def calibrate_from_truth(lib, op, protocol="SING", alpha=0.05, power_dbm=6.0):
    """Set both nodes and the station to their true optimum (what calibration should find)."""
    lab = lib.lab
    truth = lab.truth()
    for name in ("alice", "bob"):
        qnu = op(f"TCPIP0::qnu-{name}.lab::inst0::INSTR")
        pump = op(f"TCPIP0::pump-{name}.lab::inst0::INSTR")
        t = truth["nodes"][name]
        xd = lab.nodes[name].transducer(truth["t"])
        f_q = k_.QUBIT_FREQUENCY_HZ
        bias = t["bias_offset_ma"] + xd.mw_period_ma / math.pi * math.acos(
            (f_q / xd.mw_fmax_hz) ** 2)
        wl = k_.C_LIGHT / (k_.C_LIGHT / xd.resonance_m - f_q)
        for cmd in (f"XDUC:MW:BIAS {bias:.6f}", f"QUB:SWAP:AMPL {t['swap_amplitude_opt']:.6f}",
                    f"QUB:ALPH {alpha}", f"EGEN:PROT {protocol}"):
            qnu.write(cmd)
        for cmd in (f":SOUR0:WAV {wl:.12e}", f":SOUR0:POW {power_dbm}", ":SOUR0:POW:STAT 1"):
            pump.write(cmd)
        # one 100 ns pump pulse per attempt: the 33522B in burst mode on the QNU's sync
        op(f"TCPIP0::aom-{name}.lab::5025::SOCKET").write(
            "SOUR1:FUNC PULS;FUNC:PULS:WIDT 100NS;:SOUR1:BURS:MODE TRIG;NCYC 1;STAT ON;"
            ":TRIG1:SOUR EXT;:OUTP1 ON")
    station = op(STATION)
    for i, arrival in enumerate(truth["stations"]["mid"]["arrival_ps"], start=1):
        station.write(f"TAG:INP{i}:DEL {round(arrival)}")
    station.write("EGEN:HER:WIND 400000")
    link = lab.links["ab"]
    qnu_a = op(QNU_A)
    qnu_a.write(f"LINK1:PHAS {truth['links']['ab']['phase_rad']:.6f}")
    return link


def _request(lib, op, n, bases="X/Y/Z"):
    qa, qb = op(QNU_A), op(QNU_B)
    rid = qa.query(f"LINK1:CRE? {n},0,86400,M,{bases},{bases}")
    lib.clock.advance(86400)
    assert qa.query(f"LINK1:REQ? {rid}").startswith("DONE")
    a = qa.query_binary_values(f"LINK1:RES? {rid}", datatype="d", container=np.array)
    b = qb.query_binary_values(f"LINK1:RES? {rid}", datatype="d", container=np.array)
    return a.reshape(-1, 6), b.reshape(-1, 6)


@pytest.mark.parametrize("protocol,alpha", [("SING", 0.05), ("SING", 0.15), ("TWOP", 0.05)])
def test_link_requests_match_the_model_for_the_calibrated_link(link, protocol, alpha):
    lib, op = link
    ln = calibrate_from_truth(lib, op, protocol=protocol, alpha=alpha)
    setup = ln.herald_setup(lib.lab.engines["alice"], lib.lab.sync())
    model_f = analytic_fidelity(setup)
    assert model_f > 0.6, "a calibrated link must entangle"
    a, b = _request(lib, op, 3000)
    np.testing.assert_array_equal(a[:, :4], b[:, :4])  # same heralds seen from both ends
    p_hat = len(a) / a[:, 3].sum()
    assert abs(p_hat - probabilities(setup).total) < 4 * p_hat * math.sqrt(1 / len(a))
    sign = np.where(a[:, 2] < 10, np.where(a[:, 2] == 1, 1, -1),
                    np.where(np.isin(a[:, 2], (11, 22)), 1, -1))
    prod = a[:, 5] * b[:, 5]
    basis = a[:, 4].astype(int)
    same = basis == b[:, 4].astype(int)
    terms = [(prod * sign)[same & (basis == 0)], (prod * sign)[same & (basis == 1)],
             -prod[same & (basis == 2)]]
    f_hat = (1 + sum(t.mean() for t in terms)) / 4
    sigma = math.sqrt(sum(t.var() / t.size for t in terms)) / 4
    assert abs(f_hat - model_f) < 4 * sigma
    zz = prod[same & (basis == 2)]
    assert zz.mean() < -0.3  # heralded Psi states are anticorrelated in Z


def test_rate_falls_with_fiber_length_as_the_fiber_loss(tmp_path, open_on):
    import pyvisa

    from qnetlab.sim_instruments import lab_file

    rates = {}
    for km in (1.0, 10.0):
        source = Path(lab_file("link"))
        text = source.read_text().replace("fiber_km: [2.0, 2.0]", f"fiber_km: [{km}, {km}]")
        text = text.replace("filename: ../", f"filename: {source.parent.parent}/")
        path = tmp_path / f"link_{km}.yaml"
        path.write_text(text)
        rm = pyvisa.ResourceManager(f"{path}@qnetlab")
        lib, op = rm.visalib, open_on(rm)
        ln = calibrate_from_truth(lib, op)
        setup = ln.herald_setup(lib.lab.engines["alice"], lib.lab.sync())
        a, _ = _request(lib, op, 1500, bases="Z")
        rates[km] = (len(a) / a[:, 3].sum(), probabilities(setup).total, setup.attempt_period_s)
    (p1, m1, _), (p10, m10, t10) = rates[1.0], rates[10.0]
    assert abs(p1 - m1) < 4 * p1 / math.sqrt(1500)
    assert abs(p10 - m10) < 4 * p10 / math.sqrt(1500)
    loss = 10 ** (-0.2 * 9 / 10)  # 9 km more fiber per arm at 0.2 dB/km
    assert p10 / p1 == pytest.approx(loss, rel=0.15)
    assert t10 == pytest.approx(2 * 10 * k_.FIBER_DELAY_S_PER_KM + 200e-9, rel=0.01)


# --- drift ----------------------------------------------------------------------------------------


def test_drift_is_reproducible_and_independent_of_query_order():
    a = DriftingValue(1.0, 0.1, [1, 2])
    b = DriftingValue(1.0, 0.1, [1, 2])
    late = a(7200.0)
    assert b(10.0) is not None and b(7200.0) == late
    assert DriftingValue(1.0, 0.1, [1, 3])(7200.0) != late
    values = np.array([a(t) for t in np.arange(0, 100 * 3600, 3600.0)])
    assert np.std(np.diff(values)) == pytest.approx(0.1, rel=0.3)


def test_truth_differs_by_seed_and_drifts_in_time(link):
    lib, _ = link
    t0 = lib.lab.truth()
    lib.clock.advance(10 * 3600)
    t1 = lib.lab.truth()
    assert t1["nodes"]["alice"]["resonance_nm"] != t0["nodes"]["alice"]["resonance_nm"]
    lib.reset_state(seed=99)
    assert lib.lab.truth()["nodes"]["alice"]["resonance_nm"] != t0["nodes"]["alice"]["resonance_nm"]
