"""Recovery from the faults real instruments have: timeouts, disconnects, garbled replies,
resets; and a clean stop, with data kept, when recovery fails."""

from __future__ import annotations

import json

import pytest

from qnetlab.drivers.base import RecoveryPolicy
from qnetlab.errors import RecoveryFailed
from qnetlab.runread import list_runs, load_run
from qnetlab.sequences.pump_scan import pump_power_scan

PUMP = "TCPIP0::pump-alice.lab::inst0::INSTR"


@pytest.fixture
def events(sim_station):
    seen: list[dict] = []
    with sim_station.bundle.recovery_listener(seen.append):
        yield seen


@pytest.fixture
def pump(sim_station):
    return sim_station.node("alice")["pump"]


def test_timeout_is_retried_after_clearing_the_late_reply(sim_station, pump, events):
    pump.power(3.0)
    sim_station.lab.faults.delay(PUMP, 30.0, count=1)
    t0 = sim_station.clock.now()
    assert pump.power() == 3.0
    assert [e["kind"] for e in events] == ["recovery: InstrumentTimeout"]
    assert sim_station.clock.now() - t0 >= 1.0  # the backoff waited on the lab clock


def test_recovery_events_go_only_to_the_hooks_of_their_own_instrument_and_block(sim_station,
                                                                                pump):
    """No module-global listener list: a hook on one instrument hears only that instrument,
    and a station's listener is gone once its block ends (nothing leaks to the next run)."""
    fridge = sim_station.node("alice")["fridge"]
    on_fridge: list[dict] = []
    fridge.on_recovery.append(on_fridge.append)
    during: list[dict] = []
    with sim_station.bundle.recovery_listener(during.append):
        sim_station.lab.faults.garble(PUMP)
        pump.power()
    sim_station.lab.faults.garble(PUMP)
    pump.power()
    assert [e["instrument"] for e in during] == ["pump_alice"]
    assert on_fridge == [] and pump.on_recovery == []


def test_disconnect_is_recovered_by_reconnecting(sim_station, pump, events):
    sim_station.lab.faults.disconnect(PUMP, duration_s=20)
    pump.power(4.0)
    assert pump.power() == 4.0
    kinds = [e["kind"] for e in events]
    assert "recovery: reconnected" in kinds and "recovery: InstrumentConnectionError" in kinds


def test_garbled_reply_is_asked_again(sim_station, pump, events):
    pump.power(2.5)
    sim_station.lab.faults.garble(PUMP)
    assert pump.power() == 2.5
    assert [e["kind"] for e in events] == ["recovery: garbled_reply"]


def test_reset_instrument_gets_its_settings_back_but_stays_dark(sim_station, pump, events):
    pump.wavelength(1550.2)
    pump.power(5.0)
    pump.sweep.mode("stepped")
    pump.output("on")
    assert pump.emitting()
    sim_station.lab.faults.power_cycle(PUMP)
    assert pump.check_reset() is True
    assert pump.wavelength() == pytest.approx(1550.2) and pump.power() == 5.0
    assert pump.sweep.mode() == "stepped"
    # emission never comes back by itself: output off, nothing emitted
    assert pump.output() is False
    assert pump.power_actual() == -99.0
    assert events[-1]["kind"] == "recovery: reset" and "settings re-applied" in \
        events[-1]["detail"] and "emission and heating left off" in events[-1]["detail"]
    assert pump.check_reset() is False


def test_fridge_reset_does_not_turn_heaters_back_on(sim_station, events):
    fridge = sim_station.node("alice")["fridge"]
    address = fridge.address
    fridge.sample_heater.setpoint(0.03)
    fridge.sample_heater.output_range("1mA")
    fridge.sample_heater.manual_output(20.0)
    sim_station.lab.faults.power_cycle(address)
    assert fridge.check_reset() is True
    assert fridge.sample_heater.setpoint() == pytest.approx(0.03)  # a setpoint does not heat
    assert fridge.sample_heater.output_range() == "off"
    assert fridge.sample_heater.manual_output() == 0.0


def test_recovery_gives_up_after_its_attempts_and_says_how(sim_station, pump):
    pump.recovery = RecoveryPolicy(attempts=2, backoff_s=(1.0,))
    sim_station.lab.faults.disconnect(PUMP)  # for good
    with pytest.raises(RecoveryFailed) as exc:
        pump.power()
    message = str(exc.value)
    assert "pump_alice" in message and "after 2 recovery attempts" in message
    assert "connection lost" in message


def test_sequence_stops_cleanly_when_recovery_fails_and_logs_recoveries(sim_station,
                                                                        qnetlab_store):
    pump = sim_station.node("alice")["pump"]
    pump.recovery = RecoveryPolicy(attempts=2, backoff_s=(1.0,))
    with sim_station.bundle.recovery_listener(qnetlab_store.log_event):
        sim_station.lab.faults.delay(PUMP, 30.0, count=1)  # recovered: logged in the run
        clock = sim_station.clock

        def unplug(t: float) -> None:
            if t > 300 and not getattr(unplug, "done", False):
                unplug.done = True
                sim_station.lab.faults.disconnect(PUMP)

        clock.inner.on_advance(unplug) if hasattr(clock, "inner") else clock.on_advance(unplug)
        with pytest.raises(RecoveryFailed, match="pump_alice"):
            pump_power_scan(sim_station.bundle, "alice", [0, 1, 2, 3, 4, 5], dwell_s=120,
                            runs=qnetlab_store)
    (row,) = [r for r in list_runs(qnetlab_store.data_dir) if r["name"] == "pump_power_scan"]
    run = load_run(row["guid"], qnetlab_store.data_dir)
    assert run.status == "failed" and "pump_alice" in run.attrs["error"]
    assert run.arrays()["power"]["power"].size >= 2  # what was taken is kept
    kinds = [e["kind"] for e in json.loads(run.dataset.metadata["qnetlab_events"])]
    assert "recovery: InstrumentTimeout" in kinds


def test_watchdog_notices_a_reset_during_a_sequence(sim_station, qnetlab_store, events):
    from qnetlab.sequences.safety import default_watchdog, guarded

    lab, bundle = sim_station.lab, sim_station.bundle
    watchdog = default_watchdog(bundle, poll_s=5.0, on_event=qnetlab_store.log_event)

    def glitch(t: float) -> None:
        if t > 250 and not getattr(glitch, "done", False):
            glitch.done = True
            lab.faults.power_cycle(PUMP)

    lab.clock.on_advance(glitch)
    with guarded(bundle, watchdog) as safe:
        scan = pump_power_scan(safe, "alice", [1, 2, 3, 4], dwell_s=120, runs=qnetlab_store)
    assert any(e["kind"] == "recovery: reset" for e in events)
    pump = bundle.node("alice")["pump"]
    assert pump.power() == 4.0  # settings that cannot emit are back ...
    assert pump.output() is False and pump.power_actual() == -99.0  # ... emission is not
    assert scan.efficiency.size == 4
    run = load_run(scan.run_guid, qnetlab_store.data_dir)
    logged = json.loads(run.dataset.metadata["qnetlab_events"])
    assert any(e["kind"] == "instrument_reset" and "pump_alice" in e["detail"]
               for e in logged)  # the reset is recorded in the run
