"""The cryostat as two real products: a Lake Shore Model 372 and an Oxford Instruments Triton.

QCoDeS's own drivers are the reference clients: ``LakeshoreModel372`` runs unchanged on
``@qnetlab``; ``OxfordTriton`` (an IPInstrument) runs its own code with only its socket carried by
a VISA session, so every byte it writes (terminator included) and every reply it parses are the
simulated Triton's. qnetlab's drivers add safety limits that cannot be widened.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvisa
import qcodes.validators as vals
import yaml
from qcodes.instrument import IPInstrument
from qcodes.instrument_drivers.Lakeshore import LakeshoreModel372
from qcodes.instrument_drivers.oxford import OxfordTriton
from qcodes.station import Station

from conftest import FRIDGE_A, PUMP_A, TRITON_A
from qnetlab.drivers import QnetlabLakeshore372, QnetlabTriton
from qnetlab.errors import InstrumentError, SafetyLimitError
from qnetlab.sim_instruments import lab_file, lab_spec
from qnetlab.sim_instruments.models.cryostat_triton import TritonModel


class _VisaSocket(IPInstrument):
    """IPInstrument's socket carried by a VISA session: ``_send`` writes exactly the bytes the
    socket would get (command + terminator), ``_recv`` returns each reply as received."""

    resource: Any
    exchanges: list[tuple[str, str]]

    def _connect(self) -> None:
        """No socket: the VISA session is the connection."""

    def _disconnect(self) -> None:
        """No socket to close."""

    def _send(self, cmd: str) -> None:
        self.exchanges.append((cmd, ""))
        self.resource.write_raw((cmd + self._terminator).encode())

    def _recv(self) -> str:
        reply = self.resource.read_raw().decode()
        cmd, _ = self.exchanges[-1]
        self.exchanges[-1] = (cmd, reply)
        return reply


class TritonOnTheLab(OxfordTriton, _VisaSocket):
    """QCoDeS's OxfordTriton, unchanged but for the transport under it."""

    def __init__(self, name: str, resource: Any) -> None:
        self.resource, self.exchanges = resource, []
        super().__init__(name, address="triton-alice.lab", port=33576)


@pytest.fixture
def oxford_triton(lab):
    rm = pyvisa.ResourceManager(lab_spec("link"))
    session = rm.open_resource(TRITON_A, read_termination=None, write_termination="")
    session.timeout = 500
    triton = TritonOnTheLab("oxford_triton", session)
    yield triton
    triton.close()
    session.close()


# --- Lake Shore 372: QCoDeS's stock driver ------------------------------------------------------

def test_stock_lakeshore_372_drives_the_world_heater(lab):
    ls = LakeshoreModel372("ls_stock", FRIDGE_A, visalib=lab_spec("link"), timeout=1)
    heater = lab.lab.nodes["alice"].fridge.heater
    try:
        ls.sample_heater.input_channel(6)
        ls.sample_heater.P(20)
        ls.sample_heater.I(30)
        ls.sample_heater.setpoint(0.02)
        ls.sample_heater.output_range("1mA")
        ls.sample_heater.mode("closed_loop")
        assert (heater.mode, heater.input_channel, heater.range_index) == (5, 6, 4)
        assert (heater.p, heater.i, heater.setpoint_k) == (20.0, 30.0, pytest.approx(0.02))
        assert ls.sample_heater.output_range() == "1mA"
        lab.clock.advance(3600)
        assert ls.ch06.temperature() == pytest.approx(0.02, rel=0.02)
        assert 0 < ls.sample_heater.output() < 100
        ls.sample_heater.output_range("off")
        assert heater.range_index == 0
    finally:
        ls.close()


def _distinct_readings(ls: LakeshoreModel372, clock: Any, seconds: int) -> int:
    readings = []
    for _ in range(seconds):
        readings.append(ls.ch06.temperature())
        clock.advance(1.0)
    return len(set(readings))


def test_stock_lakeshore_372_sets_the_scanner(lab):
    """With QCoDeS's INSET group narrowing the scan to the MXC (1 s dwell, 3 s pause), its
    reading refreshes every 4 s instead of once per 30 s cycle of five channels."""
    ls = LakeshoreModel372("ls_scan", FRIDGE_A, visalib=lab_spec("link"), timeout=1)
    try:
        lab.faults.excursion("alice", 300e-6, 600)  # a warming MXC: each visit reads anew
        assert _distinct_readings(ls, lab.clock, 40) <= 3
        for ch in (ls.ch01, ls.ch02, ls.ch05, ls.ch07):
            ch.enabled(False)
        ls.ch06.dwell(1)
        ls.ch06.pause(3)
        assert (ls.ch06.enabled(), ls.ch06.dwell(), ls.ch06.pause()) == (True, 1, 3)
        assert _distinct_readings(ls, lab.clock, 40) >= 9
    finally:
        ls.close()


# --- Oxford Triton: QCoDeS's OxfordTriton -------------------------------------------------------

def test_triton_resource_terminators_are_what_oxford_triton_writes_and_reads():
    spec = yaml.safe_load((Path(lab_file("link")).parent.parent / "triton.yaml").read_text())
    eom = spec["devices"]["triton"]["eom"]["TCPIP SOCKET"]
    written = inspect.signature(OxfordTriton.__init__).parameters["terminator"].default
    assert eom["q"] == written == "\r\n"
    assert eom["r"] == "\n"  # OxfordTriton strips whatever ends the reply


def test_oxford_triton_runs_unchanged_against_the_simulated_triton(lab, oxford_triton):
    triton, fridge = oxford_triton, lab.lab.nodes["alice"].fridge
    assert triton.get_idn() == {"vendor": "OXFORD INSTRUMENTS", "model": "TRITON",
                                "serial": "SN-ALICE", "firmware": "2.5"}
    assert triton.magnet_available is False  # no vector magnet: READ:SYS:VRM:ACTN is INVALID
    assert set(triton.chan_alias) == {"PT1", "PT2", "COOL", "STIL", "MC"}  # SORB: NONE
    values = {name: p.get() for name, p in triton.parameters.items() if p.gettable}
    assert values["MC"] == values["T5"] == pytest.approx(fridge.mxc_k, rel=1e-4)
    assert values["PT1"] == pytest.approx(fridge.stage_k["50K"], rel=1e-4)
    assert values["T9"] is None and values["P6"] is None  # not fitted: NOT_FOUND
    assert values["P1"] == pytest.approx(fridge.ovc_mbar * 1e3, rel=1e-3)  # its mB x 1e3
    assert values["action"] == "Circulating" and values["status"] == "Circulating"
    assert re.fullmatch(r"\d\d:\d\d:\d\d", values["time"])
    assert (values["comp_state"], values["turb1_state"], values["turb1_speed"]) == \
           ("on", "on", 820.0)
    assert (values["T1_state"], values["T9_state"]) == ("on", "off")  # T6..T16 unused
    assert (values["pid_control_channel"], values["pid_mode"]) == (5, "off")
    assert values["pid_setpoint"] == pytest.approx(fridge.heater.setpoint_k)
    bad = [(c, r) for c, r in triton.exchanges if r.rstrip().endswith("INVALID")]
    assert bad == [("READ:SYS:VRM:ACTN", "INVALID\n")]
    assert all(r.endswith("\n") and not r.endswith("\r\n") for _, r in triton.exchanges)


def test_oxford_triton_sets_pumps_and_is_denied_the_heater(lab, oxford_triton):
    triton, fridge = oxford_triton, lab.lab.nodes["alice"].fridge
    setpoint = fridge.heater.setpoint_k
    triton.turb1_state("off")
    triton.comp_state("off")
    triton.T2_state("off")
    triton.pid_setpoint(0.2)
    replies = [r.rstrip() for c, r in triton.exchanges if c.startswith("SET:")]
    assert replies == ["STAT:SET:DEV:TURB1:PUMP:SIG:STATE:OFF:VALID",
                       "STAT:SET:DEV:COMP:PUMP:SIG:STATE:OFF:VALID",
                       "STAT:SET:DEV:T2:TEMP:MEAS:ENAB:OFF:VALID",
                       "STAT:SET:DEV:T5:TEMP:LOOP:TSET:0.2:DENIED"]
    assert (triton.turb1_speed(), triton.comp_state(), triton.T2_state()) == (0.0, "off", "off")
    assert fridge.pulse_tube_on is False
    assert fridge.heater.setpoint_k == setpoint  # heating is the Lake Shore's


def test_triton_paths_are_case_sensitive_and_replies_cost_lab_time(lab, open_on):
    rm = pyvisa.ResourceManager(lab_spec("link"))
    triton = open_on(rm)(TRITON_A)
    t0 = lab.clock.now()
    assert triton.query("READ:DEV:T5:TEMP:SIG:TEMP").startswith("STAT:DEV:T5:TEMP:SIG:TEMP:")
    assert lab.clock.now() - t0 == pytest.approx(TritonModel.REPLY_S)
    assert triton.query("read:dev:t5:temp:sig:temp") == "INVALID"
    assert triton.query("READ:DEV:T5:TEMP:SIG:TEMP:") == "INVALID"


# --- qnetlab's drivers: limits that cannot be widened, the interlock ---------------------------

STATION_YAML = """
instruments:
  fridge_alice:
    type: qnetlab.drivers.QnetlabLakeshore372
    address: TCPIP0::fridge-alice.lab::7777::SOCKET
    init: {visalib: "qnetlab.sim_instruments.labs:link.yaml@qnetlab", timeout: 1,
           print_connect_message: false}
    parameters:
      sample_heater.setpoint: {limits: [0.0, 5.0]}
  triton_alice:
    type: qnetlab.drivers.QnetlabTriton
    address: TCPIP0::triton-alice.lab::33576::SOCKET
    init: {visalib: "qnetlab.sim_instruments.labs:link.yaml@qnetlab", timeout: 1,
           print_connect_message: false}
    parameters:
      interlock_max_temperature: {limits: [0.0, 1.0]}
"""


def _spy(inst: Any, sent: list[str]) -> None:
    """Record what ``inst`` sends (the instance attribute goes when the instrument closes)."""
    original = inst._send
    inst._send = lambda cmd: (sent.append(cmd), original(cmd))[1]


def test_station_limits_cannot_widen_the_hard_limits(lab):
    station = Station(default=False)
    station.load_config(STATION_YAML)
    fridge = station.load_instrument("fridge_alice")
    gas = station.load_instrument("triton_alice")
    world = lab.lab.nodes["alice"].fridge
    try:
        sent: list[str] = []
        _spy(fridge, sent)
        _spy(gas, sent)
        with pytest.raises(SafetyLimitError, match=r"sample_heater_setpoint"):
            fridge.sample_heater.setpoint(2.0)
        fridge.sample_heater.output_range.vals = vals.Enum(*fridge.sample_heater.RANGES)
        with pytest.raises(SafetyLimitError, match="hard safety cap"):
            fridge.sample_heater.output_range("100mA")
        with pytest.raises(SafetyLimitError, match=r"interlock_max_temperature"):
            gas.interlock_max_temperature(0.5)
        assert sent == [] and world.interlock_max_k == 0.05 and world.heater.range_index == 0
        with pytest.raises(InstrumentError, match=r"TMAX:0\.5:INVALID"):
            gas.triton_set("SET:SYS:INTLK:TMAX:0.5")  # the Triton refuses it too
        gas.interlock_max_temperature(0.03)  # narrowing is allowed
        assert world.interlock_max_k == 0.03
    finally:
        fridge.close()
        gas.close()


def test_interlock_trips_and_stays_tripped_until_reset_when_cold(lab, open_on):
    spec = lab_spec("link")
    fridge = QnetlabLakeshore372("fridge_t", FRIDGE_A, visalib=spec, print_connect_message=False)
    gas = QnetlabTriton("triton_t", TRITON_A, visalib=spec, print_connect_message=False)
    pump = open_on(pyvisa.ResourceManager(spec))(PUMP_A)
    try:
        gas.interlock_max_temperature(0.03)
        lab.faults.excursion("alice", power_w=300e-6, duration_s=600)
        lab.clock.advance(600)
        assert gas.interlock_state() in ("TRIP_TEMP", "TRIP_RATE")
        assert pump.query(":SOUR0:POW:STAT?") == "0"  # the line switched the laser off
        with pytest.raises(InstrumentError, match="RST:INVALID"):
            gas.reset_interlock()  # still hot
        lab.clock.advance(3 * 3600)
        assert fridge.mxc.temperature() < 0.01
        lab.faults.power_cycle(TRITON_A)  # a Triton restart neither clears nor raises it
        fridge.write("*RST")
        tripped = gas.interlock_state()
        assert tripped in ("TRIP_TEMP", "TRIP_RATE")
        pump.write(":SOUR0:POW:STAT 1")  # the laser refuses to switch on while the line is open
        assert pump.query(":SOUR0:POW:STAT?") == "0"
        assert gas.interlock_max_temperature() == 0.03
        gas.reset_interlock()
        assert gas.interlock_state() == "OK"
        pump.write(":SYST:ERR?;:SOUR0:POW:STAT 1")
        assert pump.query(":SOUR0:POW:STAT?") == "1"  # now it may, when asked
    finally:
        fridge.close()
        gas.close()


def test_lakeshore_waits_for_its_setpoint_on_the_lab_clock(lab, monkeypatch):
    """QCoDeS's blocking_t / wait_until_set_point_reached, on the lab clock (no wall sleep)."""
    fridge = QnetlabLakeshore372("fridge_w", FRIDGE_A, visalib=lab_spec("link"),
                                 print_connect_message=False)
    monkeypatch.setattr("time.sleep", lambda s: pytest.fail(f"wall-time sleep of {s} s"))
    try:
        heater = fridge.sample_heater
        heater.input_channel(6)
        heater.P(20)
        heater.I(30)
        heater.range_limits([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0])  # 30 mK: 1mA
        heater.mode("closed_loop")
        heater.wait_cycle_time(10)
        heater.wait_tolerance(0.05)  # the bridge reads with 0.2 % noise
        heater.wait_equilibration_time(60)
        t0 = fridge.clock.now()
        heater.blocking_t(0.03)
        assert heater.output_range() == "1mA"
        assert fridge.mxc.temperature() == pytest.approx(0.03, rel=heater.wait_tolerance())
        assert fridge.clock.now() - t0 >= heater.wait_equilibration_time()
    finally:
        fridge.close()


def test_lakeshore_safe_state_turns_the_heaters_off_and_reset_does_not_reheat(lab):
    fridge = QnetlabLakeshore372("fridge_s", FRIDGE_A, visalib=lab_spec("link"),
                                 print_connect_message=False)
    heater = lab.lab.nodes["alice"].fridge.heater
    try:
        fridge.sample_heater.output_range("1mA")
        fridge.sample_heater.mode("open_loop")
        fridge.sample_heater.manual_output(20.0)
        lab.clock.advance(10)
        assert fridge.sample_heater.output() == 20.0 and heater.power_w() > 0
        lab.faults.power_cycle(FRIDGE_A)
        assert fridge.check_reset() is True
        lab.clock.advance(10)
        assert fridge.sample_heater.output_range() == "off" and fridge.sample_heater.output() == 0
        assert heater.power_w() == 0
        fridge.sample_heater.output_range("1mA")
        fridge.sample_heater.mode("open_loop")
        fridge.sample_heater.manual_output(20.0)
        lab.clock.advance(10)
        lab.lab.sync()  # the world's heater, brought up to the clock
        assert heater.power_w() > 0
        fridge.safe_state()
        lab.clock.advance(10)
        assert fridge.sample_heater.mode() == "off" and fridge.sample_heater.output() == 0
        assert heater.power_w() == 0
        assert np.isclose(fridge.still_heater(), fridge.still_idle_percent)
    finally:
        fridge.close()
