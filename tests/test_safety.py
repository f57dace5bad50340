"""Safety watchdog: every state transition, and a fridge excursion during a pump-power scan."""

from __future__ import annotations

import pytest

from qnetlab.clock import VirtualClock
from qnetlab.runread import load_run
from qnetlab.sequences.pump_scan import pump_power_scan
from qnetlab.sequences.safety import (
    Condition,
    IllegalTransition,
    SequenceAborted,
    State,
    Watchdog,
    default_watchdog,
    guarded,
)


class Switch:
    """A condition the test flips; records the safe and resume actions."""

    def __init__(self) -> None:
        self.ok, self.hard_ok, self.actions = True, True, []

    def watchdog(self, clock, settle_s=10.0, poll_s=1.0) -> Watchdog:
        conds = [Condition("switch", lambda: (self.ok, "switch")),
                 Condition("hard", lambda: (self.hard_ok, "hard"), hard=True)]
        return Watchdog(clock, conds, lambda: self.actions.append("safe"),
                        lambda: self.actions.append("resume"), poll_s=poll_s, settle_s=settle_s)


def kinds(w: Watchdog) -> list[str]:
    return [e["kind"] for e in w.events]


def test_trip_suspends_and_resumes_after_the_settle_time():
    clock, s = VirtualClock(), Switch()
    w = s.watchdog(clock)
    w.sleep(5)
    assert w.state is State.RUNNING and clock.now() == 5
    s.ok = False
    w.poll()
    assert w.state is State.SUSPENDED and s.actions == ["safe"]
    assert kinds(w) == ["suspending", "safe_action", "suspended"]
    s.ok = True
    w.poll()
    clock.advance(9.9)
    w.poll()
    assert w.state is State.SUSPENDED  # not yet clear for the settle time
    clock.advance(0.1)
    w.poll()
    assert w.state is State.RUNNING and s.actions == ["safe", "resume"]
    assert kinds(w)[-2:] == ["resuming", "running"]


def test_a_wait_does_not_return_while_suspended():
    clock, s = VirtualClock(), Switch()
    w = s.watchdog(clock, settle_s=30)
    s.ok = False
    w.poll()

    def clear_later(t: float) -> None:
        if t >= 100:
            s.ok = True

    clock.on_advance(clear_later)
    w.sleep(1)
    assert w.state is State.RUNNING and clock.now() >= 130


def test_tripping_again_while_resuming_suspends_again():
    clock, s = VirtualClock(), Switch()
    w = s.watchdog(clock, settle_s=0)
    s.ok = False
    w.poll()
    s.ok = True
    w.poll()  # clear since now
    w.resume_action = lambda: setattr(s, "ok", False)  # resuming re-triggers the condition
    w.poll()
    assert kinds(w)[-4:] == ["resuming", "suspending", "safe_action", "suspended"]
    assert w.state is State.SUSPENDED


@pytest.mark.parametrize("from_state", [State.RUNNING, State.SUSPENDED])
def test_hard_trip_aborts_from_any_state(from_state):
    clock, s = VirtualClock(), Switch()
    w = s.watchdog(clock)
    if from_state is State.SUSPENDED:
        s.ok = False
        w.poll()
    s.hard_ok = False
    with pytest.raises(SequenceAborted, match="hard interlock trip"):
        w.poll()
    assert w.state is State.ABORTED and s.actions[-1] == "safe"
    with pytest.raises(SequenceAborted):
        w.poll()


def test_illegal_transitions_are_refused():
    w = Switch().watchdog(VirtualClock())
    with pytest.raises(IllegalTransition):
        w.transition(State.RESUMING)
    w.transition(State.ABORTED)
    with pytest.raises(IllegalTransition):
        w.transition(State.RUNNING)


def test_fridge_excursion_during_a_pump_scan(sim_station, qnetlab_store):
    lab = sim_station.lab
    bundle = sim_station.bundle
    pump = bundle.node("alice")["pump"]
    seen = {}

    def on_event(event):
        qnetlab_store.log_event(event)
        if event["kind"] == "suspended":
            seen["emitting"] = pump.power_actual()
            seen["output"] = pump.output()
        if event["kind"] == "running" and "output" in seen:
            seen["resumed with output"] = pump.output()

    watchdog = default_watchdog(bundle, ceiling_k=0.02, poll_s=5.0, settle_s=300.0,
                                on_event=on_event)
    lab.faults.excursion("alice", power_w=40e-6, duration_s=900, start_in_s=400)  # ~33 mK
    with guarded(bundle, watchdog) as safe_bundle:
        scan = pump_power_scan(safe_bundle, "alice", [0, 1, 2, 3, 4, 5, 6, 7, 8],
                               dwell_s=120, runs=qnetlab_store)
    assert kinds(watchdog)[:5] == ["suspending", "safe_action", "suspended", "resuming",
                                   "running"]
    assert watchdog.last_trip["reaction_polls"] <= 1.0
    assert seen == {"emitting": -99.0, "output": False, "resumed with output": True}
    assert len(scan.power_dbm) == 9 and list(scan.power_dbm) == list(range(9))  # nothing lost
    gaps = scan.lab_time[1:] - scan.lab_time[:-1]
    suspended_at = watchdog.events[2]["lab_time"]
    resumed_at = watchdog.events[4]["lab_time"]
    assert resumed_at - suspended_at >= 300
    assert gaps.max() >= resumed_at - suspended_at  # the gap shows in the data
    run = load_run(scan.run_guid)
    marked = [e["kind"] for e in __import__("json").loads(
        run.dataset.metadata["qnetlab_events"])]
    assert "suspended" in marked and "running" in marked
    assert pump.output() is False  # the scan switches its laser off when it ends


def test_hard_trip_aborts_the_scan_with_its_data_kept(sim_station, qnetlab_store):
    lab, bundle = sim_station.lab, sim_station.bundle
    watchdog = default_watchdog(bundle, poll_s=5.0, on_event=qnetlab_store.log_event)
    lab.faults.excursion("alice", power_w=3e-3, duration_s=3600, start_in_s=250)
    with pytest.raises(SequenceAborted), guarded(bundle, watchdog) as safe_bundle:
        pump_power_scan(safe_bundle, "alice", [0, 1, 2, 3, 4, 5], dwell_s=120,
                        runs=qnetlab_store)
    assert watchdog.state is State.ABORTED
    assert bundle.node("alice")["pump"].power_actual() == -99.0
    runs = [r for r in __import__("qnetlab.runread", fromlist=["list_runs"]).list_runs(
        qnetlab_store.data_dir) if r["name"] == "pump_power_scan"]
    run = load_run(runs[0]["guid"], qnetlab_store.data_dir)
    assert run.status == "aborted" and run.arrays()["power"]["power"].size >= 2


def test_remote_node_health_trips_the_link(sim_station):
    from qnetlab.sequences.safety import remote_health

    lab, bundle = sim_station.lab, sim_station.bundle
    clock, actions = bundle.clock, []
    cond = remote_health(bundle, "alice", ceiling_k=0.02)
    w = Watchdog(clock, [cond], lambda: actions.append("safe"), lambda: actions.append("resume"),
                 poll_s=5.0, settle_s=60.0)
    w.sleep(30)
    assert w.state is State.RUNNING
    lab.faults.excursion("alice", power_w=40e-6, duration_s=600)
    w.sleep(600)
    assert actions and actions[0] == "safe"
    assert any("alice: interlock OK, MXC" in e["detail"] for e in w.events)


def _true_crossing(history, threshold_k: float, after: float) -> float:
    for (t0, v0), (t1, v1) in zip(history, list(history)[1:], strict=False):
        if t1 > after and v0 <= threshold_k < v1:
            return t0 + (threshold_k - v0) / (v1 - v0) * (t1 - t0)
    raise AssertionError(f"the MXC never crossed {threshold_k}")


def test_watchdog_acts_within_one_poll_of_the_true_crossing_inside_a_long_call(sim_station):
    from qnetlab.sequences.pumps import pumps_emitting

    lab, bundle = sim_station.lab, sim_station.bundle
    inst = bundle.node("alice")
    pump, qnu = inst["pump"], inst["qnu"]
    truth = lab.library.lab.nodes["alice"].fridge
    watchdog = default_watchdog(bundle, ceiling_k=0.09, hard_ceiling_k=0.095,
                                max_rate_k_per_s=1.0, poll_s=5.0)
    qnu.transducer.measure_time(100.0)
    start = bundle.clock.now()
    lab.library.faults.excursion("alice", power_w=200e-6, duration_s=3600, start_in_s=30)
    done_at, readings = [], []
    with pytest.raises(SequenceAborted, match="fridge interlock TRIP_TEMP"), \
            guarded(bundle, watchdog) as safe, pumps_emitting(pump):
        for _ in range(6):  # 600 s of lab time in six blocking calls, no wait in between
            readings.append(qnu.transducer.efficiency())
            done_at.append(bundle.clock.now())
        safe.clock.sleep(1.0)  # the next safe point: the hard trip surfaces here
    (acted,) = [e["lab_time"] for e in watchdog.events if e["kind"] == "safe_action"]
    crossing = _true_crossing(truth.history, truth.interlock_max_k, start)
    assert 0 <= acted - crossing <= watchdog.poll_s  # within one poll of the true crossing
    assert acted < done_at[-1] - 100  # while a measurement was still blocking
    assert any("interlock TRIP_TEMP" in e["detail"] for e in watchdog.events)
    assert pump.output() is False and pump.power_actual() == -99.0
    # the session that was mid-exchange was never written into: it is still in step
    assert all(0 <= r < 1 for r in readings) and qnu.transducer.measure_time() == 100.0


def test_virtual_clock_alarm_fires_at_its_period_inside_one_long_advance():
    clock, seen = VirtualClock(), []
    alarm = clock.every(5.0, lambda t: seen.append((t, clock.now())))
    clock.advance(23.0)
    assert seen == [(5.0, 5.0), (10.0, 10.0), (15.0, 15.0), (20.0, 20.0)]
    assert clock.now() == 23.0
    clock.advance(2.0)
    assert seen[-1] == (25.0, 25.0)
    alarm.cancel()
    clock.advance(100.0)
    assert len(seen) == 5


def test_an_alarm_that_lets_time_pass_is_not_reentered_and_does_not_burst():
    clock, seen = VirtualClock(), []

    def slow(t: float) -> None:
        seen.append(t)
        clock.advance(12.0)  # e.g. a recovery backoff inside the poll

    clock.every(5.0, slow)
    clock.advance(30.0)
    # not re-entered at 10 and 15 (time it let pass itself); then due one period after
    assert seen == [5.0, 22.0] and clock.now() == 34.0


def test_on_hardware_a_watchdog_thread_acts_while_the_sequence_is_blocked():
    import threading

    from qnetlab.clock import WallClock
    from qnetlab.sequences.safety import watch_in_calls

    s, blocked, acted_during_block = Switch(), threading.Event(), []
    watchdog = s.watchdog(WallClock(), poll_s=0.02)
    stop = watch_in_calls(watchdog)
    try:
        s.ok = False  # trips while the sequence sits in one long blocking call
        blocked.wait(1.0)  # the "instrument call": no wait of the sequence, no poll of its own
        acted_during_block.extend(s.actions)
    finally:
        stop()
    assert acted_during_block == ["safe"] and watchdog.state is State.SUSPENDED
    s.hard_ok = False
    watchdog.poll_in_call()  # a hard trip in the thread never raises there ...
    assert watchdog.state is State.ABORTED
    with pytest.raises(SequenceAborted):  # ... it surfaces at the sequence's next poll
        watchdog.poll()
