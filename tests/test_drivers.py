"""The QCoDeS drivers on stock @sim and on @qnetlab: parameters, errors, timeouts, safety, fuzzing."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import pyvisa
import qcodes.validators as vals
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qcodes.parameters import Parameter

from conftest import AOM_A, FRIDGE_A, PUMP_A, QNU_A, STATION, TRITON_A
from qnetlab.drivers import (
    HardLimitParameter,
    QnetlabAomGate,
    QnetlabLakeshore372,
    QnetlabPumpLaser,
    QnetlabQNU,
    QnetlabTriton,
)
from qnetlab.errors import InstrumentError, InstrumentTimeout, SafetyLimitError
from qnetlab.sim_instruments import lab_file, lab_spec

DRIVERS = {"qnu": (QnetlabQNU, QNU_A), "pump": (QnetlabPumpLaser, PUMP_A),
           "aom": (QnetlabAomGate, AOM_A), "fridge": (QnetlabLakeshore372, FRIDGE_A),
           "gas": (QnetlabTriton, TRITON_A)}


def _make(kind: str, backend: str):
    cls, address = DRIVERS[kind]
    visalib = lab_spec("link") if backend == "qnetlab" else f"{lab_file('link')}@sim"
    return cls(f"{kind}_{backend}", address, visalib=visalib, timeout=0.5,
               print_connect_message=False)


# Stock @sim matches literal strings only; the pump laser's YAML is written in the manual's
# notation (``[:SOURce[0]]:WAVelength``), so on @sim it loads (tests/test_scpi.py) but no driver
# can speak SCPI to it: the laser connects on @qnetlab only.
@pytest.mark.parametrize(("kind", "backend"), [("qnu", "sim"), ("qnu", "qnetlab"),
                                               ("fridge", "sim"), ("fridge", "qnetlab"),
                                               ("gas", "sim"), ("gas", "qnetlab"),
                                               ("pump", "qnetlab"), ("aom", "qnetlab")])
def test_driver_connects_and_snapshots_cleanly(lab, kind, backend, caplog):
    inst = _make(kind, backend)
    try:
        t0 = time.perf_counter()
        snap = inst.snapshot(update=True)
        assert time.perf_counter() - t0 < 2.0
        assert "Could not update" not in caplog.text
        assert snap["name"] == inst.name and snap["parameters"]["IDN"]["value"]["vendor"]
    finally:
        inst.close()


def test_wavelength_and_frequency_stay_consistent(lab):
    pump = _make("pump", "qnetlab")
    pump.wavelength(1552.5)
    assert pump.frequency() == pytest.approx(299_792_458 / 1552.5e-9, rel=1e-9)
    pump.frequency(193.1e12)
    assert pump.wavelength() == pytest.approx(299_792_458 / 193.1e12 * 1e9, rel=1e-9)
    pump.power(3.0)
    assert pump.power_mw() == pytest.approx(10 ** 0.3, rel=1e-4)
    pump.power_mw(2.5)
    assert pump.power() == pytest.approx(10 * math.log10(2.5), abs=1e-4)


def test_power_hard_limit_survives_a_widened_validator(lab):
    pump = _make("pump", "qnetlab")
    pump.power.vals = vals.Numbers(-10, 13)  # what a station file's `limits:` does
    with pytest.raises(SafetyLimitError, match="hard safety limit"):
        pump.power(12.0)
    pump.power_mw.vals = vals.Numbers(0, 100)
    with pytest.raises(SafetyLimitError):
        pump.power_mw(15.0)
    assert pump.power() == 0.0
    with pytest.raises(ValueError, match="exceeds the hard safety limit"):
        QnetlabPumpLaser("pump_hot", PUMP_A, visalib=lab_spec("link"), max_power_dbm=12,
                         print_connect_message=False)
    narrow = QnetlabPumpLaser("pump_narrow", PUMP_A, visalib=lab_spec("link"),
                              max_power_dbm=3, print_connect_message=False)
    with pytest.raises(ValueError, match=r"between -10\.0 and 3"):
        narrow.power(5)


def test_heater_range_and_setpoint_are_capped(lab):
    fridge, gas = _make("fridge", "qnetlab"), _make("gas", "qnetlab")
    with pytest.raises(ValueError, match="100mA"):
        fridge.sample_heater.output_range("100mA")
    fridge.sample_heater.setpoint.vals = vals.Numbers(0, 10)
    with pytest.raises(SafetyLimitError):
        fridge.sample_heater.setpoint(2.0)
    with pytest.raises(SafetyLimitError):
        gas.interlock_max_temperature.vals = vals.Numbers(0, 1)
        gas.interlock_max_temperature(0.5)


def test_invalid_value_names_parameter_value_and_range_and_sends_nothing(lab, monkeypatch):
    qnu = _make("qnu", "qnetlab")
    sent = []
    monkeypatch.setattr(qnu, "_send", lambda cmd: sent.append(cmd))
    with pytest.raises(ValueError) as exc:
        qnu.transducer.bias(7.5)
    text = str(exc.value)
    assert "7.5" in text and "-5" in text and "5" in text and "transducer.bias" in text
    assert sent == []


def test_instrument_refusal_raises_with_the_instruments_message(lab):
    qnu = _make("qnu", "qnetlab")
    with pytest.raises(InstrumentError) as exc:
        qnu.link2.phase(1.0)  # LINK2 of alice is not connected
    assert exc.value.command == "LINK2:PHAS 1.000000"
    assert exc.value.messages[0].startswith('-221,"Settings conflict; LINK2 is not connected')
    station = QnetlabQNU("station", STATION, visalib=lab_spec("link"), print_connect_message=False)
    with pytest.raises(InstrumentError, match="heralding station without a transducer"):
        station.transducer.efficiency()


def test_lakeshore_side_errors_come_from_esr(lab):
    fridge = _make("fridge", "qnetlab")
    with pytest.raises(InstrumentError, match=r"\*ESR\? = 16 \(execution error\)"):
        fridge.write("INSET 6,1,500,3,0,1")  # dwell out of range


def test_timeout_names_instrument_and_command_and_does_not_hang(lab):
    pump = _make("pump", "qnetlab")
    pump.recovery = None  # the bare behaviour; tests/test_recovery.py covers the retries
    lab.faults.delay(PUMP_A, 30.0, count=1)
    wall = time.perf_counter()
    with pytest.raises(InstrumentTimeout) as exc:
        pump.power()
    assert time.perf_counter() - wall < 3.0  # the 30 s delay is lab time
    assert exc.value.instrument == "pump_qnetlab" and exc.value.command == ":SOUR0:POW?"
    assert "0.5 s" in str(exc.value)
    pump.device_clear()
    assert pump.power() == 0.0


def test_check_queries_surfaces_errors_on_gets(lab):
    qnu = QnetlabQNU("strict", QNU_A, visalib=lab_spec("link"), check_queries=True,
                     print_connect_message=False)
    lab.device(QNU_A).push_error("execution_error", "injected")
    with pytest.raises(InstrumentError, match="injected"):
        qnu.engine.protocol()


def test_laser_hardware_sweep_returns_arrays_with_the_photodiode_log(lab):
    pump, qnu = _make("pump", "qnetlab"), _make("qnu", "qnetlab")
    pump.sweep.start(1550.0)
    pump.sweep.stop(1550.3)
    pump.sweep.step(0.5)
    pump.output("on")
    _make("aom", "qnetlab").open_gate()  # the AOM (default: closed) lets the pump through
    wl = pump.sweep.run()
    pd = qnu.transducer.pd_log()
    assert wl.shape == pd.shape == (601,)
    np.testing.assert_allclose(wl, pump.sweep.wavelength_axis(), atol=1e-9)
    res_nm = lab.lab.truth()["nodes"]["alice"]["resonance_nm"]
    assert wl[np.argmin(pd)] == pytest.approx(res_nm, abs=0.002)
    pump.sweep.stop(1549.0)
    with pytest.raises(ValueError, match="368"):
        pump.sweep.start_sweep()


def test_link_requests_through_the_driver(lab):
    qnu = _make("qnu", "qnetlab")
    assert qnu.link1.peer() == "bob" and qnu.link_to("bob") is qnu.link1
    request = qnu.link1.create(5, max_time_s=3600, bases_here=("X", "Z"))
    status = qnu.link1.wait(request, timeout_s=4000, poll_s=10)
    assert status.state == "DONE" and status.delivered == 5
    results = qnu.link1.results(request)
    assert len(results) == 5 and set(results.basis_index) <= {0, 1}
    assert set(np.unique(results.outcome)) <= {-1.0, 1.0}
    with pytest.raises(ValueError, match="basis 'Q'"):
        qnu.link1.create(5, bases_here=("Q",))


def test_tagger_records_and_reads_the_stream_in_chunks(lab):
    station = QnetlabQNU("station", STATION, visalib=lab_spec("link"), print_connect_message=False)
    station.tagger.record(0.5)
    times, _channels = station.tagger.read_tags(chunk=7000)
    assert times.size == station.tagger.tag_count() and np.all(np.diff(times) >= 0)
    station.tagger.n_bins(100)
    station.tagger.bin_width(1000)
    hist = station.tagger.histogram()
    assert hist.shape == station.tagger.time_bins().shape == (100,)


def test_wait_until_stable_uses_the_lab_clock(lab):
    fridge = _make("fridge", "qnetlab")
    t0, wall = fridge.clock.now(), time.perf_counter()
    value = fridge.wait_until_stable("mxc", band_k=0.0005, hold_s=600, poll_s=30)
    assert value == pytest.approx(0.008, rel=0.05)
    assert fridge.clock.now() - t0 >= 600 and time.perf_counter() - wall < 2
    lab.faults.excursion("alice", 200e-6, 3600)
    with pytest.raises(TimeoutError, match="not stable"):
        fridge.wait_until_stable("mxc", band_k=0.0002, hold_s=900, timeout_s=1200, poll_s=30,
                                 target_k=0.008)


# --- fuzzing: every settable parameter ----------------------------------------------------------

#: On the Lake Shore, what qnetlab adds or guards on top of QCoDeS's LakeshoreModel372 (the
#: sample heater's capped range and setpoint, its PID and manual output, the still); QCoDeS's own
#: parameters are QCoDeS's to test.
LAKESHORE_FUZZED = {"still_heater", "output_range", "setpoint", "manual_output", "P", "I", "D"}


def _settables(inst) -> list[Parameter]:
    if isinstance(inst, QnetlabLakeshore372):
        return [p for p in (*inst.parameters.values(), *inst.sample_heater.parameters.values())
                if p.name in LAKESHORE_FUZZED]
    out, seen = [], set()

    def walk(node):
        if getattr(node, "peer", None) is not None and node.peer() == "NONE":
            return  # an unconnected link refuses settings (tested on its own)
        for p in node.parameters.values():
            if p.settable and p.name not in ("timeout",) and not p.name.startswith("_") and \
                    id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        for sub in node.submodules.values():
            if hasattr(sub, "parameters"):
                walk(sub)

    walk(inst)
    return out


def _strategies(p: Parameter) -> tuple[st.SearchStrategy, st.SearchStrategy]:
    v = p.vals
    if isinstance(v, vals.Enum):
        good = list(v._values)
        return st.sampled_from(good), st.text(max_size=8).filter(lambda s: s not in good)
    if isinstance(v, vals.Ints):
        lo, hi = v._min_value, v._max_value
        return (st.integers(lo, hi),
                st.one_of(st.integers(max_value=lo - 1), st.integers(min_value=hi + 1)))
    if isinstance(v, vals.Numbers):
        lo, hi = float(v._min_value), float(v._max_value)
        if isinstance(p, HardLimitParameter):
            lo, hi = max(lo, p.hard_min), min(hi, p.hard_max)
        return (st.floats(lo, hi, allow_nan=False),
                st.one_of(st.floats(max_value=lo - max(1.0, abs(lo) * 1e-3)),
                          st.floats(min_value=hi + max(1.0, abs(hi) * 1e-3)),
                          st.just(float("nan"))))
    if isinstance(v, vals.Strings):
        return (st.text(alphabet="abcdefgh", min_size=1, max_size=15),
                st.text(alphabet="abc", min_size=16, max_size=20))
    raise AssertionError(f"no strategy for {p.full_name} with {v!r}")


def _same(p: Parameter, a, b) -> bool:
    if p.val_mapping is not None:  # on/off mappings accept several spellings of one value
        return p.val_mapping[a] == p.val_mapping[b]
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=1e-4, abs_tol=2e-4)
    return a == b


@pytest.fixture
def fuzz_drivers():
    lib = pyvisa.ResourceManager(lab_spec("link")).visalib
    lib.reset_state()
    made = {k: _make(k, "qnetlab") for k in DRIVERS}
    yield lib, made
    for inst in made.values():
        inst.close()
    lib.reset_state()


# The AOM gate's parameters are QCoDeS's stock Keysight33522B ones, most without validators;
# its own hard limits are tested in tests/test_products_pump.py.
FUZZED = [k for k in DRIVERS if k != "aom"]


@pytest.mark.parametrize("kind", FUZZED)
@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_every_settable_parameter(fuzz_drivers, kind, data):
    lib, made = fuzz_drivers
    inst = made[kind]
    params = _settables(inst)
    p = data.draw(st.sampled_from(params), label="parameter")
    good, bad = _strategies(p)
    sent: list[str] = []
    original = inst._send

    def spy(cmd):
        sent.append(cmd)
        original(cmd)

    inst._send = spy
    try:
        value = data.draw(bad, label="invalid")
        with pytest.raises(ValueError):
            p.set(value)
        assert sent == [], f"{p.full_name}={value!r} reached the instrument: {sent}"
        value = data.draw(good, label="valid")
        p.set(value)
        assert _same(p, value, p.get()), (p.full_name, value, p.get())
    finally:
        inst._send = original
        lib.faults.clear()


def test_fuzz_covers_every_settable_parameter(fuzz_drivers):
    _, made = fuzz_drivers
    for inst in (made[k] for k in FUZZED):
        for p in _settables(inst):
            _strategies(p)  # raises if a parameter has no validator the fuzzer understands
        assert len(_settables(inst)) >= (3 if isinstance(inst, QnetlabTriton) else 5)


STATION_YAML = """
instruments:
  qnu_alice:
    type: qnetlab.drivers.QnetlabQNU
    address: TCPIP0::qnu-alice.lab::inst0::INSTR
    init: {visalib: "qnetlab.sim_instruments.labs:link.yaml@qnetlab", timeout: 1}
  pump_alice:
    type: qnetlab.drivers.QnetlabPumpLaser
    address: TCPIP0::pump-alice.lab::inst0::INSTR
    init: {visalib: "qnetlab.sim_instruments.labs:link.yaml@qnetlab", timeout: 1}
    parameters:
      power: {initial_value: 2.0, limits: [-10, 8]}
  fridge_alice:
    type: qnetlab.drivers.QnetlabLakeshore372
    address: TCPIP0::fridge-alice.lab::7777::SOCKET
    init: {visalib: "qnetlab.sim_instruments.labs:link.yaml@qnetlab", timeout: 1}
  triton_alice:
    type: qnetlab.drivers.QnetlabTriton
    address: TCPIP0::triton-alice.lab::33576::SOCKET
    init: {visalib: "qnetlab.sim_instruments.labs:link.yaml@qnetlab", timeout: 1}
  ls372_alice:
    type: qcodes.instrument_drivers.Lakeshore.LakeshoreModel372
    address: TCPIP0::fridge-alice.lab::7777::SOCKET
    init: {visalib: "qnetlab.sim_instruments.labs:link.yaml@qnetlab", timeout: 1}
"""


def test_qcodes_station_with_the_three_drivers_and_lakeshore_372(lab, caplog):
    from qcodes.station import Station

    station = Station(default=False)
    station.load_config(STATION_YAML)
    wall = time.perf_counter()
    for name in ("qnu_alice", "pump_alice", "fridge_alice", "triton_alice", "ls372_alice"):
        station.load_instrument(name)
    snap = station.snapshot(update=True)
    assert time.perf_counter() - wall < 5.0
    assert "Could not update" not in caplog.text
    assert set(snap["instruments"]) == {"qnu_alice", "pump_alice", "fridge_alice", "triton_alice",
                                        "ls372_alice"}
    pump = station.components["pump_alice"]
    assert pump.power() == 2.0
    with pytest.raises(ValueError):
        pump.power(9.0)  # the station narrowed the limit
    ls, fridge = station.components["ls372_alice"], station.components["fridge_alice"]
    assert ls.ch06.temperature() == pytest.approx(fridge.mxc.temperature(), rel=1e-6)


def test_a_qcodes_driver_class_runs_under_qnetlab_io_by_multiple_inheritance(lab, capsys):
    """QnetlabVisaInstrument is cooperative: mixed with QCoDeS's own LakeshoreModel372, the
    QCoDeS driver's parameters (queried already in its ``__init__``) go through qnetlab's I/O,
    error checks and lab clock."""
    from qcodes.instrument_drivers.Lakeshore import LakeshoreModel372

    from qnetlab.drivers.base import QnetlabVisaInstrument, StandardEventStatus

    class Lakeshore(QnetlabVisaInstrument, LakeshoreModel372):
        error_reporting = StandardEventStatus()
        default_terminator = "\r\n"

    ls = Lakeshore("ls_coop", FRIDGE_A, visalib=lab_spec("link"), timeout=0.5)
    assert "Connected to: LSCI 372" in capsys.readouterr().out  # *IDN? inside QCoDeS's __init__
    assert 0.0 < ls.ch06.temperature() < 1.0
    assert ls.clock.now() == lab.clock.now()  # the lab's virtual clock, not wall time
    with pytest.raises(InstrumentError, match=r"BOGUS 1.*command error"):
        ls.write("BOGUS 1")
