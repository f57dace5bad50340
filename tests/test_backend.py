"""The @qnetlab backend: errors, binary blocks, whole-reply reads, threads, reset, faults."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import pyvisa
from hypothesis import given
from hypothesis import strategies as st
from pyvisa import constants

from conftest import FRIDGE_A, PUMP_A, QNU_A, TRITON_A
from pyvisa_qnetlab import ieee_block


def test_backend_is_discovered_by_pyvisa():
    assert "qnetlab" in pyvisa.highlevel.list_backends()


def test_unknown_query_queues_error_and_answers_at_once(link):
    _lib, op = link
    pump = op(PUMP_A)
    t0 = time.perf_counter()
    assert pump.query(":SOUR0:BOGUS?") == "ERROR"
    assert time.perf_counter() - t0 < 1.0  # no VISA timeout wait
    assert pump.query(":SYST:ERR?") == '-113,"Undefined header; :SOUR0:BOGUS?"'
    assert pump.query(":SYST:ERR?") == '+0,"No error"'


def test_unknown_write_queues_error_without_reply(link):
    _, op = link
    pump = op(PUMP_A)
    pump.write(":SOUR0:NONSENSE 3")
    assert pump.query("*OPC?") == "1"  # no stray reply in between
    assert pump.query(":SYST:ERR?").startswith("-113,")


def test_out_of_range_set_names_value_and_limit_and_changes_nothing(link):
    _, op = link
    pump = op(PUMP_A)
    pump.write(":SOUR0:POW 20")
    err = pump.query(":SYST:ERR?")
    assert err.startswith('-222,"Data out of range')
    assert "20.0" in err and "13.0" in err and ":SOUR0:POW 20" in err
    assert float(pump.query(":SOUR0:POW?")) == 0.0


def test_lakeshore_errors_set_esr_bits(link):
    _, op = link
    fridge = op(FRIDGE_A)
    assert fridge.query("*ESR?") == "0"
    fridge.write("RANGE 0,12")
    assert int(fridge.query("*ESR?")) & 16  # execution error (data out of range)
    fridge.write("BOGUS 1")
    assert int(fridge.query("*ESR?")) & 32  # command error
    assert fridge.query("*ESR?") == "0"  # reading clears the register


def test_cls_clears_queue_and_overflow_reports_350(link):
    _, op = link
    qnu = op(QNU_A)
    for _ in range(15):
        qnu.write("NOPE")
    errors = [qnu.query("SYST:ERR?") for _ in range(11)]
    assert errors[9].startswith("-350,") and errors[10].startswith("0,")
    qnu.write("NOPE")
    qnu.write("*CLS")
    assert qnu.query("SYST:ERR?").startswith("0,")


def test_binary_block_round_trip_is_exact_and_fast(link):
    lib, op = link
    pump, qnu = op(PUMP_A), op(QNU_A)
    pump.write(":SOUR0:WAV:SWE:STAR 1.5500e-06")
    pump.write(":SOUR0:WAV:SWE:STOP 1.5600e-06")
    pump.write(":SOUR0:WAV:SWE:STEP 1e-13")
    pump.write(":SOUR0:WAV:SWE:SPE 2e-7")
    pump.write(":TRIG0:OUTP STF;:SOUR0:WAV:SWE:LLOG 1")  # lambda logging's prerequisites
    pump.write(":SOUR0:WAV:SWE STAR")
    lib.clock.advance(1.0)
    assert pump.query(":SOUR0:WAV:SWE?") == "0"
    t0 = time.perf_counter()
    wl = pump.query_binary_values(":SOUR0:READ:DATA? LLOG", datatype="d", container=np.array)
    elapsed = time.perf_counter() - t0
    assert wl.size == 100_001
    np.testing.assert_array_equal(wl, 1.55e-6 + 1e-13 * np.arange(100_001))
    assert elapsed < 3.0  # whole-reply reads (stock pyvisa-sim takes seconds)
    pd = qnu.query_binary_values("XDUC:PD:LOG:DATA?", datatype="d", container=np.array)
    assert pd.size == wl.size


def test_read_bytes_honours_count(link):
    _, op = link
    pump = op(PUMP_A)
    pump.write("*IDN?")
    head = pump.read_bytes(8)
    assert head == b"Keysight"
    assert pump.read() == " Technologies,N7776C,DE50000510,V2.022"


def test_ieee_block_header():
    assert ieee_block(b"abc") == b"#13abc"
    assert ieee_block(np.zeros(2), "<f8")[:4] == b"#216"


def test_two_threads_on_one_instrument_get_their_own_replies(link):
    _lib, op = link
    a, b = op(PUMP_A), op(PUMP_A)
    bad = []

    def hammer(inst, query, expected):
        for _ in range(1500):
            reply = inst.query(query)
            if reply != expected:
                bad.append(reply)

    t1 = threading.Thread(target=hammer, args=(a, ":SOUR0:POW?", "+0.00000000E+00"))
    t2 = threading.Thread(target=hammer, args=(b, ":TRIG0:OUTP?", "DIS"))
    t1.start(), t2.start()
    t1.join(), t2.join()
    assert bad == []


def test_reset_state_restores_defaults_without_breaking_sessions(link):
    lib, op = link
    pump = op(PUMP_A)
    pump.write(":SOUR0:POW 5")
    lib.clock.advance(100)
    lib.reset_state()
    assert float(pump.query(":SOUR0:POW?")) == 0.0
    assert lib.clock.now() == 0.0


class TestNoLeakBetweenTests:
    def test_a_changes_state(self, link):
        lib, op = link
        op(PUMP_A).write(":SOUR0:POW 7")
        lib.clock.advance(10)

    def test_b_sees_fresh_state(self, link):
        lib, op = link
        assert float(op(PUMP_A).query(":SOUR0:POW?")) == 0.0
        assert lib.clock.now() == 0.0


def test_reply_delay_longer_than_timeout_is_a_real_visa_timeout(link):
    lib, op = link
    pump = op(PUMP_A)
    pump.timeout = 200
    lib.faults.delay(PUMP_A, 5.0, count=1)
    t0, wall = lib.clock.now(), time.perf_counter()
    with pytest.raises(pyvisa.VisaIOError) as exc:
        pump.query("*IDN?")
    assert exc.value.error_code == constants.StatusCode.error_timeout
    assert lib.clock.now() - t0 == pytest.approx(0.2)
    assert time.perf_counter() - wall < 2.0  # lab time, not wall time
    pump.clear()  # drop the late reply, as a driver recovering would
    assert pump.query(":SOUR0:POW:STAT?") == "0"


def test_reply_delay_shorter_than_timeout_costs_lab_time(link):
    lib, op = link
    pump = op(PUMP_A)
    lib.faults.delay(PUMP_A, 0.3, count=1)
    t0 = lib.clock.now()
    assert pump.query(":SOUR0:POW?") == "+0.00000000E+00"
    assert lib.clock.now() - t0 == pytest.approx(0.3)


def test_disconnect_kills_sessions_until_reopened(link, link_rm):
    lib, op = link
    qnu = op(QNU_A)
    lib.faults.disconnect(QNU_A, duration_s=30)
    with pytest.raises(pyvisa.VisaIOError) as exc:
        qnu.query("*IDN?")
    assert exc.value.error_code == constants.StatusCode.error_connection_lost
    with pytest.raises(pyvisa.VisaIOError):
        link_rm.open_resource(QNU_A)
    lib.clock.advance(31)
    again = op(QNU_A)
    assert again.query("*IDN?").startswith("QNETLAB,QNU-1")
    with pytest.raises(pyvisa.VisaIOError):
        qnu.query("*IDN?")  # the old session stays dead


def test_garbled_reply(link):
    lib, op = link
    pump = op(PUMP_A)
    lib.faults.garble(PUMP_A)
    assert pump.query("*IDN?") != "Keysight Technologies,N7776C,DE50000510,V2.022"
    assert pump.query("*IDN?") == "Keysight Technologies,N7776C,DE50000510,V2.022"


def test_power_cycle_restores_defaults_and_sets_pon(link):
    lib, op = link
    pump = op(PUMP_A)
    pump.write(":SOUR0:POW 5")
    pump.write(":SOUR0:POW:STAT 1")
    lib.faults.power_cycle(PUMP_A)
    assert int(pump.query("*ESR?")) & 128
    assert pump.query(":SOUR0:POW:STAT?") == "0"
    assert float(pump.query(":SOUR0:POW?")) == 0.0


def test_fridge_excursion_trips_interlock_and_cuts_the_pump(link):
    lib, op = link
    pump, gas = op(PUMP_A), op(TRITON_A)
    for cmd in (":SOUR0:POW 5", ":SOUR0:POW:STAT 1"):
        pump.write(cmd)
    assert float(pump.query(":SOUR0:POW:ACT?")) == 5.0
    lib.faults.excursion("alice", power_w=300e-6, duration_s=600)
    lib.clock.advance(600)
    assert gas.query("READ:SYS:INTLK:STAT").endswith(("TRIP_TEMP", "TRIP_RATE"))
    # the interlock line, wired to the laser's remote interlock input, switched it off
    assert pump.query(":SOUR0:POW:STAT?") == "0"
    assert float(pump.query(":SOUR0:POW:ACT?")) == -99.0
    pump.write(":SOUR0:POW:STAT 1")  # refused while the line is open
    assert pump.query(":SYST:ERR?").startswith("-200") and pump.query(":SOUR0:POW:STAT?") == "0"
    assert gas.query("SET:SYS:INTLK:RST").endswith("INVALID")  # still hot
    lib.clock.advance(3 * 3600)
    assert gas.query("SET:SYS:INTLK:RST").endswith(":VALID")
    # clearing the interlock does not bring the light back: only an explicit switch-on does
    assert pump.query(":SOUR0:POW:STAT?") == "0" and float(pump.query(":SOUR0:POW:ACT?")) == -99
    pump.write(":SOUR0:POW:STAT 1")
    assert float(pump.query(":SOUR0:POW:ACT?")) == 5.0


def test_simulator_fault_becomes_an_instrument_error_not_a_crash(link, caplog):
    lib, op = link
    qnu = op(QNU_A)
    dev = lib.device(QNU_A)

    def broken():
        raise ZeroDivisionError("boom")

    dev.exact_handlers[b"TAG:REC:STAT?"] = broken
    assert qnu.query("TAG:REC:STAT?") == "ERROR"
    assert "simulator fault" in qnu.query("SYST:ERR?")
    assert "boom" in caplog.text


@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_fuzz_power_setter_accepts_only_the_documented_range(value):
    rm = pyvisa.ResourceManager(__import__("qnetlab.sim_instruments").sim_instruments.lab_spec(
        "node"))
    rm.visalib.reset_state()
    pump = rm.open_resource(PUMP_A, read_termination="\n", write_termination="\n")
    try:
        pump.write(f":SOUR0:POW {value!r}")
        err = pump.query(":SYST:ERR?")
        now = float(pump.query(":SOUR0:POW?"))
        if -10.0 <= value <= 13.0:
            assert err.startswith("+0,")
            assert now == pytest.approx(value, abs=1e-3)
        else:
            assert err.startswith("-222,")
            assert now == 0.0
    finally:
        pump.close()


def test_clocks():
    from qnetlab.clock import Clock, VirtualClock, WallClock, clock_of

    v = VirtualClock()
    seen = []
    v.on_advance(seen.append)
    v.sleep(3600)
    assert v.now() == 3600 and seen == [3600]
    v.advance_to(10)  # never backwards
    assert v.now() == 3600
    with pytest.raises(ValueError, match="seconds"):
        v.advance(float("nan"))
    w = WallClock()
    assert isinstance(w, Clock) and isinstance(v, Clock)
    assert abs(w.now() - time.time()) < 1  # absolute: ages survive a process restart
    assert isinstance(clock_of(object()), WallClock)
