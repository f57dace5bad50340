"""The pump path as real products (issue 11, section 2): a Keysight N7776C / N7778C tunable laser
and a Keysight 33522B waveform generator gating the pump AOM.

Third-party drivers written for the real products run unchanged on @qnetlab: QCoDeS's stock
``Keysight33522B`` and pymeasure's ``KeysightN7776C`` (written from Keysight's manual). The
physics follows the generator's settings, and the laser's tuning costs lab time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import pyvisa
import qcodes.validators as vals
from qcodes.instrument_drivers.Keysight import Keysight33522B

from conftest import AOM_A, PUMP_A, QNU_A
from qnetlab.drivers import QnetlabAomGate, QnetlabPumpLaser, QnetlabQNU
from qnetlab.errors import InstrumentError, SafetyLimitError
from qnetlab.sim_instruments import lab_file, lab_spec

SETTLE_S = 0.1  # x-settling wavelength_set_s in sim_instruments/pump_laser.yaml
STEP_SETTLE_S = 0.01  # x-settling sweep_step_s


def _open(resource: str):
    inst = pyvisa.ResourceManager(lab_spec("link")).open_resource(
        resource, read_termination="\n", write_termination="\n")
    inst.timeout = 500
    return inst


@pytest.fixture
def laser(lab):
    inst = _open(PUMP_A)
    yield inst
    inst.close()


def _errors(inst) -> list[str]:
    out = []
    for _ in range(12):
        reply = inst.query(":SYST:ERR?")
        if reply.lstrip("+").startswith("0,"):
            return out
        out.append(reply)
    raise AssertionError(out)


# --- the AOM gate: QCoDeS's stock Keysight33522B, unchanged ---------------------------------

def test_stock_qcodes_33522b_drives_the_gate_and_the_pump_pulses_follow(lab, caplog):
    awg = Keysight33522B("stock_awg", AOM_A, visalib=lab_spec("link"))
    node = lab.lab.nodes["alice"]
    try:
        assert awg.IDN()["model"] == "33522B" and awg.IDN()["vendor"].startswith("Keysight")
        with caplog.at_level(logging.WARNING):
            snap = awg.snapshot(update=True)  # every query QCoDeS's driver knows answers
        assert "Could not update" not in caplog.text
        assert snap["submodules"]["ch1"]["parameters"]["output"]["value"] == "OFF"
        assert awg.error() == (0, "No error")
        assert node.pump.duty_cycle == 0.0  # power-on: output off, the AOM stays closed

        ch = awg.ch1
        ch.function_type("PULS")
        ch.pulse_width(1e-6)
        ch.frequency(1e5)
        ch.output("ON")
        assert node.pump.duty_cycle == pytest.approx(0.1)
        assert node.pump.pulse_s == pytest.approx(1e-6)

        ch.burst_mode("N Cycle")
        ch.burst_ncycles(1)
        ch.trigger_source("EXT")
        ch.burst_state("ON")  # one pulse per QNU attempt (the EXT trigger)
        rate = lab.lab.engines["alice"].attempt_rate_hz
        assert node.pump.duty_cycle == pytest.approx(1e-6 * rate)

        ch.trigger_source("BUS")  # bursts only on *TRG: dark in between
        assert node.pump.duty_cycle == 0.0
        ch.function_type("DC")
        assert node.pump.duty_cycle == 1.0  # the gate held open: CW pump
        awg.ch2.output("ON")  # channel 2 is not wired to the AOM
        ch.output("OFF")
        assert node.pump.duty_cycle == 0.0 and node.pumped_fraction == 0.0
        assert (ch.function_type(), ch.burst_state(), ch.trigger_source()) == ("DC", "ON", "BUS")
        assert awg.error() == (0, "No error")
    finally:
        awg.close()


def _settled_mxc(lab, gate_cmds: list[str]) -> float:
    """MXC temperature after 4 h with the laser at 10 dBm and the gate set by ``gate_cmds``."""
    laser, gate = _open(PUMP_A), _open(AOM_A)
    laser.write(":SOUR0:POW 10DBM;:SOUR0:POW:STAT 1")
    for cmd in gate_cmds:
        gate.write(cmd)
    lab.clock.advance(4 * 3600)
    laser.close(), gate.close()
    return lab.lab.truth()["nodes"]["alice"]["mxc_k"]


def test_fridge_heating_follows_the_gate_settings(lab):
    closed = _settled_mxc(lab, ["OUTP1 OFF"])
    lab.reset_state()
    pulsed = _settled_mxc(lab, ["SOUR1:FUNC PULS", "SOUR1:FUNC:PULS:WIDT 1US",
                                "SOUR1:FREQ 10KHZ", "OUTP1 ON"])
    lab.reset_state()
    cw = _settled_mxc(lab, ["SOUR1:FUNC DC", "OUTP1 ON"])
    assert closed == pytest.approx(0.008, abs=2e-4)  # laser on, but no light past the AOM
    assert closed < pulsed < cw


# --- qnetlab's driver: QCoDeS's 33522B + qnetlab's base -------------------------------------

def test_gate_driver_hard_limits_hold_whatever_the_station_file_says(lab):
    gate = QnetlabAomGate("gate", AOM_A, visalib=lab_spec("link"), print_connect_message=False)
    try:
        sent: list[str] = []
        original = gate._send
        gate._send = lambda cmd: (sent.append(cmd), original(cmd))[1]
        gate.ch1.pulse_width.vals = vals.Numbers(0, 1)  # what a station file's limits: does
        gate.ch1.frequency.vals = vals.Numbers(1e-6, 3e7)
        with pytest.raises(SafetyLimitError, match="pulse_width"):
            gate.pulse_width(2e-3)
        with pytest.raises(SafetyLimitError, match="frequency"):
            gate.ch1.frequency(2e6)
        assert sent == []
        gate.gate_mode("triggered")
        gate.pulse_width(200e-9)
        assert gate.gate_mode() == "triggered" and gate.pulse_width() == pytest.approx(2e-7)
        with pytest.raises(InstrumentError, match="-222"):  # the instrument's own refusal
            gate.write("SOUR1:FUNC:PULS:WIDT 1E9")
    finally:
        gate.close()


def test_gate_safe_state_closes_and_a_reset_never_reopens_it(lab):
    gate = QnetlabAomGate("gate", AOM_A, visalib=lab_spec("link"), print_connect_message=False)
    node = lab.lab.nodes["alice"]
    try:
        gate.gate_mode("pulsed")
        gate.period(1e-5)
        gate.pulse_width(1e-6)
        gate.open_gate()
        assert gate.duty_cycle == pytest.approx(0.1) == node.pump.duty_cycle
        lab.faults.power_cycle(AOM_A)
        assert gate.check_reset() is True
        assert gate.gate_mode() == "pulsed" and gate.period() == pytest.approx(1e-5)
        assert gate.ch1.output() == "OFF" and node.pump.duty_cycle == 0.0
        gate.open_gate()
        gate.safe_state()
        assert gate.safety_readback() == "gate off, pulsed" and node.pump.duty_cycle == 0.0
    finally:
        gate.close()


# --- the laser: pymeasure's KeysightN7776C (from Keysight's manual), unchanged ----------------

def test_pymeasure_n7776c_driver_runs_unchanged_on_the_simulated_laser(lab):
    from pymeasure.adapters import VISAAdapter
    from pymeasure.instruments.keysight import KeysightN7776C

    adapter = VISAAdapter(PUMP_A, visa_library=lab_spec("link"), read_termination="\n",
                          write_termination="\n", timeout=500)
    with pytest.warns(FutureWarning, match="SCPI"):  # pymeasure's own notice
        laser = KeysightN7776C(adapter)
    try:
        assert laser.id.startswith("Keysight Technologies,N7776C,")
        laser.output_enabled = True
        assert laser.output_enabled is True
        laser.output_power_dBm = 3.0
        assert laser.output_power_dBm == pytest.approx(3.0)
        assert laser.output_power_mW == pytest.approx(10 ** 0.3, rel=1e-6)  # unit W now
        laser.output_power_mW = 2.0
        assert laser.output_power_mW == pytest.approx(2.0, rel=1e-6)
        laser.wavelength = 1551.25
        assert laser.wavelength == pytest.approx(1551.25)
        laser.locked = True
        assert laser.locked is True
        laser.locked = False

        laser.sweep_wl_start = 1550.0
        laser.sweep_wl_stop = 1550.1
        laser.sweep_step = 0.0001  # nm
        laser.sweep_speed = 1
        laser.sweep_mode = "CONT"
        laser.sweep_twoway = False
        laser.wl_logging = True
        assert laser.valid_sweep_params() is False  # lambda logging needs the STF trigger
        laser.trigger_out = "STF"
        laser.trigger_in = "IGN"
        assert laser.valid_sweep_params() is True
        t0 = lab.clock.now()
        laser.sweep_state = 1
        while laser.sweep_state == 1:
            lab.clock.advance(0.01)
        assert lab.clock.now() - t0 == pytest.approx(SETTLE_S + 0.1e-9 / 1e-9, abs=0.02)
        assert laser.sweep_points == 1001
        wl = laser.get_wl_data()
        np.testing.assert_allclose(wl, 1550e-9 + 1e-13 * np.arange(1001), rtol=0, atol=1e-18)
        laser.sweep_mode = "MAN"
        laser.next_step()
        laser.next_step()
        laser.previous_step()
        assert laser.wavelength == pytest.approx(1550.0001)
        assert laser.check_errors() == []
    finally:
        laser.close()


# --- the laser's own behaviour ------------------------------------------------------------------

def test_power_unit_decides_how_settings_and_readings_are_read(laser):
    laser.write(":SOURce0:POWer:UNIT W")
    assert laser.query(":SOUR0:POW:UNIT?") == "1"
    laser.write(":SOUR0:POW 0.002")  # a bare number is in the present unit: 2 mW
    assert float(laser.query(":SOUR0:POW?")) == pytest.approx(2e-3)
    laser.write(":SOUR0:POW 3DBM")  # a suffix says its own unit
    assert float(laser.query(":SOUR0:POW?")) == pytest.approx(10 ** 0.3 * 1e-3)
    laser.write(":sour0:pow:unit dbm")
    assert float(laser.query(":SOUR0:POW?")) == pytest.approx(3.0)
    laser.write(":SOUR0:POW 20 MW")  # 13.01 dBm: above the laser's maximum
    laser.write(":SOUR0:POW 1 KG")
    assert [e[:4] for e in _errors(laser)] == ["-222", "-131"]
    assert float(laser.query(":SOUR0:POW?")) == pytest.approx(3.0)


def test_lambda_logging_needs_the_manuals_prerequisites(laser):
    laser.write(":SOUR0:WAV:SWE:STAR 1550NM;STOP 1550.5NM;STEP 1PM;:SOUR0:WAV:SWE:LLOG ON")
    assert laser.query(":SOUR0:WAV:SWE:CHEC?").startswith("375,")
    laser.write(":SOURce0:WAVelength:SWEep:STATe START")
    assert laser.query(":SOUR0:WAV:SWE:STAT?") == "0"
    assert [e[:4] for e in _errors(laser)] == ["-200"]
    laser.write(":TRIG0:OUTP STFinished;:SOUR0:WAV:SWE:MODE STEPPED")
    assert laser.query(":SOUR0:WAV:SWE:CHEC?").startswith("376,")
    laser.write(":SOUR0:WAV:SWE:MODE CONT;:SOUR0:AM:STAT ON")
    assert laser.query(":SOUR0:WAV:SWE:CHEC?").startswith("374,")
    laser.write(":SOUR0:AM:STAT OFF")
    assert laser.query(":SOUR0:WAV:SWE:CHEC?") == "0,OK"
    assert laser.query(":TRIG0:OUTP?") == "STF" and laser.query(":SOUR0:WAV:SWE:MODE?") == "CONT"


def test_tuning_and_sweeps_cost_the_products_settling_in_lab_time(lab, laser):
    t0 = lab.clock.now()
    laser.write(":SOUR0:WAV 1552NM")
    assert lab.clock.now() - t0 == pytest.approx(SETTLE_S)
    laser.write(":SOUR0:FREQ 193.1THZ")
    assert lab.clock.now() - t0 == pytest.approx(2 * SETTLE_S)

    def sweep_s(setup: str) -> float:
        laser.write(setup)
        t = lab.clock.now()
        laser.write(":SOUR0:WAV:SWE:STAT STAR")
        while laser.query(":SOUR0:WAV:SWE?") == "1":
            lab.clock.advance(0.001)
        return lab.clock.now() - t

    base = ":SOUR0:WAV:SWE:STAR 1550NM;STOP 1551NM;STEP 10PM;DWEL 5MS;CYCL 1;REP ONEW;"
    stepped = sweep_s(base + "MODE STEP")  # 101 steps of dwell + step settling
    assert stepped == pytest.approx(SETTLE_S + 101 * (0.005 + STEP_SETTLE_S), abs=2e-3)
    cont = sweep_s(base + "MODE CONT;SPE 10NM/S")  # span / speed
    assert cont == pytest.approx(SETTLE_S + 0.1, abs=2e-3)
    twice = sweep_s(base + "MODE CONT;SPE 10NM/S;CYCL 2;REP TWOW")  # 2 cycles, there and back
    assert twice == pytest.approx(SETTLE_S + 4 * 0.1, abs=2e-3)
    assert _errors(laser) == []


def test_pointwise_scan_costs_over_50_times_the_lab_time_of_one_logged_sweep(lab):
    kw = {"visalib": lab_spec("link"), "print_connect_message": False}
    pump, qnu = QnetlabPumpLaser("pump", PUMP_A, **kw), QnetlabQNU("qnu", QNU_A, **kw)
    gate = QnetlabAomGate("gate", AOM_A, **kw)
    try:
        pump.output("on")
        gate.gate_mode("cw")
        gate.open_gate()
        grid = 1550.0 + 0.2e-3 * np.arange(1001)
        t0 = lab.clock.now()
        pointwise = []
        for wl in grid:
            pump.wavelength(wl)
            pointwise.append(qnu.transducer.pd_voltage())
        t_point = lab.clock.now() - t0
        t0 = lab.clock.now()
        pump.sweep.start(grid[0])
        pump.sweep.stop(grid[-1])
        pump.sweep.step(0.2)
        pump.sweep.speed(1.0)
        wavelengths = pump.sweep.run(poll_s=0.05)
        swept = qnu.transducer.pd_log()
        t_sweep = lab.clock.now() - t0
        assert wavelengths.size == swept.size == 1001
        assert t_point >= 1001 * SETTLE_S * (1 - 1e-9)  # every set paid the tuning settle
        assert t_point / t_sweep >= 50
        # both scans see the same cavity dip
        assert grid[int(np.argmin(pointwise))] == pytest.approx(
            wavelengths[int(np.argmin(swept))], abs=0.002)
    finally:
        for inst in (pump, qnu, gate):
            inst.close()


def test_n7778c_is_a_lab_file_option_with_its_own_range(tmp_path):
    source = Path(lab_file("node"))
    text = source.read_text().replace("filename: ../", f"filename: {source.parent.parent}/")
    text = text.replace("    device: pump_laser\n    filename: "
                        f"{source.parent.parent}/pump_laser.yaml\n    x-bind: {{node: alice}}",
                        "    device: pump_laser\n    filename: "
                        f"{source.parent.parent}/pump_laser.yaml\n"
                        "    x-bind: {node: alice, model: N7778C}")
    assert "model: N7778C" in text
    path = tmp_path / "n7778c.yaml"
    path.write_text(text)
    rm = pyvisa.ResourceManager(f"{path}@qnetlab")
    pump = QnetlabPumpLaser("pump78", PUMP_A, visalib=f"{path}@qnetlab",
                            print_connect_message=False)
    try:
        assert pump.IDN()["model"] == "N7778C"
        assert pump.range_nm == (1490.0, 1640.0)
        pump.wavelength(1635.0)  # beyond the N7776C's 1620 nm
        assert pump.wavelength() == pytest.approx(1635.0)
        raw = rm.open_resource(PUMP_A, read_termination="\n", write_termination="\n")
        raw.write(":SOUR0:WAV 1485NM")  # below the N7778C's 1490 nm
        assert raw.query(":SYST:ERR?").startswith("-222,")
        raw.close()
    finally:
        pump.close()
        rm.visalib.reset_state()


def test_a_paused_sweep_holds_and_ends_later_by_the_time_it_was_held(lab, laser):
    laser.write(":SOUR0:WAV:SWE:STAR 1550NM;STOP 1551NM;MODE CONT;SPE 10NM/S;CYCL 1;"
                ":SOUR0:WAV:SWE:STAT STAR")
    t0 = lab.clock.now()
    lab.clock.advance(SETTLE_S + 0.05)  # half way through the 0.1 s sweep
    laser.write(":SOUR0:WAV:SWE PAUS")
    assert laser.query(":SOUR0:WAV:SWE?") == "2"
    lab.clock.advance(10.0)  # held: it does not end while paused
    assert laser.query(":SOUR0:WAV:SWE?") == "2"
    laser.write(":SOUR0:WAV:SWE:STAT PAUS")  # already paused: refused, nothing changes
    assert [e[:4] for e in _errors(laser)] == ["-221"]
    laser.write(":sour0:wav:swe cont")
    assert laser.query(":SOUR0:WAV:SWE?") == "1"
    while laser.query(":SOUR0:WAV:SWE?") == "1":
        lab.clock.advance(0.001)
    assert lab.clock.now() - t0 == pytest.approx(SETTLE_S + 0.1 + 10.0, abs=2e-3)
    laser.write(":SOUR0:WAV:SWE CONT")  # nothing paused to continue
    assert [e[:4] for e in _errors(laser)] == ["-221"]


def test_driver_pauses_and_resumes_a_sweep(lab):
    pump = QnetlabPumpLaser("pump_pause", PUMP_A, visalib=lab_spec("link"),
                            print_connect_message=False)
    try:
        pump.sweep.start(1550.0)
        pump.sweep.stop(1550.5)
        pump.sweep.mode("continuous")
        pump.sweep.speed(1.0)
        pump.sweep.start_sweep()
        pump.sweep.pause()
        assert pump.sweep.state() == "paused" and pump.sweep.running()
        pump.sweep.resume()
        assert pump.sweep.state() == "running"
        pump.sweep.abort()
        assert pump.sweep.state() == "stopped" and not pump.sweep.running()
    finally:
        pump.close()
