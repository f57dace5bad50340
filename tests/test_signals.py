"""SIGTERM and SIGHUP stop ``qnetlab`` like Ctrl-C: every emitter and heater safe, the run
marked interrupted, one line, exit 128 + signal. Real processes receive real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qnetlab.cli import operating
from qnetlab.runread import list_runs


def _start(data: Path) -> subprocess.Popen:
    env = {**os.environ, "QNETLAB_DATA": str(data), "MPLBACKEND": "Agg"}
    # an uncalibrated link collects pairs slowly: the run lasts long enough to be signalled
    return subprocess.Popen([sys.executable, "-m", "qnetlab", "entangle", "--pairs", "50000",
                             "--max-time", "500000"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_a_run_file(data: Path, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not list(data.rglob("*.h5*")):  # a run file: live (.h5.live) or closed
        assert proc.poll() is None, f"qnetlab ended before its run started: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no run started"
        time.sleep(0.1)
    time.sleep(1.0)  # well inside the run: heralds are being collected


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_mid_run_leaves_the_lab_safe_and_the_run_interrupted(tmp_path, sig, code):
    data = tmp_path / "data"
    proc = _start(data)
    try:
        _wait_for_a_run_file(data, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-2000:]
    ours = [line for line in err.splitlines() if line.startswith("qnetlab:")]
    assert len(ours) == 1 and "Traceback" not in err, err[-2000:]
    line = ours[0]
    assert line.startswith(f"qnetlab: aborted by {signal.Signals(sig).name}")
    # the process read its instruments back after making them safe (the simulated lab lives
    # inside it, so its own teardown line is where the end state can be seen)
    for node in ("alice", "bob"):
        assert f"pump_{node}: output off, -99 dBm emitted" in line
        assert f"aom_{node}: gate off" in line
    for fridge in ("fridge_alice", "fridge_bob"):
        assert f"{fridge}: MXC heater off (off)" in line
    statuses = [r["status"] for r in list_runs(data)]
    assert statuses == ["interrupted"]


def test_any_end_of_an_operated_sequence_makes_emitters_and_heaters_safe(sim_station,
                                                                         qnetlab_store):
    bundle = sim_station.bundle
    pump, fridge = bundle.node("alice")["pump"], bundle.node("alice")["fridge"]
    idle = fridge.still_idle_percent
    with pytest.raises(KeyboardInterrupt) as stop, operating(bundle, qnetlab_store):
        pump.output("on")
        fridge.sample_heater.output_range("1mA")
        fridge.sample_heater.mode("open_loop")
        fridge.sample_heater.manual_output(20.0)
        fridge.still_heater(idle + 10)
        assert pump.emitting()
        raise KeyboardInterrupt
    assert pump.power_actual() == -99.0 and pump.output() is False
    assert bundle.node("alice")["aom"].ch1.output() == "OFF"
    assert fridge.sample_heater.output_range() == "off" and fridge.sample_heater.mode() == "off"
    assert fridge.still_heater() == pytest.approx(idle)
    assert stop.value.safe_state["pump_alice"].startswith("output off, -99 dBm emitted")


def test_a_swallowed_signal_stops_the_sequence_at_its_next_wait_and_never_twice(sim_station,
                                                                               qnetlab_store):
    from qnetlab.cli import SignalStop, _SignalStopper

    stopper = _SignalStopper()
    try:
        stopper(signal.SIGTERM, None)
    except SignalStop:
        pass  # e.g. raised inside a __del__, where Python only prints it
    bundle = sim_station.bundle
    previous = signal.signal(signal.SIGTERM, stopper)
    try:
        with pytest.raises(SignalStop) as stop, operating(bundle, qnetlab_store) as safe:
            safe.clock.sleep(10.0)  # the sequence's next wait is its safe point
        assert stop.value.signum == signal.SIGTERM
        assert set(stop.value.safe_state) >= {"pump_alice", "pump_bob"}
        stopper(signal.SIGTERM, None)  # a second signal during/after the cleanup: no raise
        stopper.check()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_for_an_open_run(data: Path, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    """Until a run is open (its live file exists), well after the calibration started."""
    deadline = time.monotonic() + timeout_s
    while len(list(data.rglob("*.h5*"))) < 3 or not list(data.rglob("*.h5.live")):
        assert proc.poll() is None, f"qnetlab ended before: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no run open"
        time.sleep(0.005)


def test_sigterm_during_calibrate_on_the_default_agents_stops_safely(tmp_path):
    """``qnetlab calibrate`` goes through in-process site agents by default (its runs'
    snapshots name the agents' sites); a SIGTERM mid-calibration still makes every site safe
    (the one read-back line) and marks the open runs interrupted."""
    from qnetlab.runread import load_run

    data = tmp_path / "data"
    env = {**os.environ, "QNETLAB_DATA": str(data), "MPLBACKEND": "Agg"}
    proc = subprocess.Popen([sys.executable, "-m", "qnetlab", "calibrate", "--force"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_an_open_run(data, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    ours = [line for line in err.splitlines() if line.startswith("qnetlab:")]
    assert len(ours) == 1 and "Traceback" not in err, err[-2000:]
    assert ours[0].startswith("qnetlab: aborted by SIGTERM; open runs marked interrupted")
    for node in ("alice", "bob"):
        assert f"pump_{node}: output off, -99 dBm emitted" in ours[0]
        assert f"aom_{node}: gate off" in ours[0]
        assert f"fridge_{node}: MXC heater off (off)" in ours[0]
    runs = list_runs(data)
    statuses = {r["status"] for r in runs}
    # a run open at the signal is marked interrupted (one that the step closed before the
    # stop point is completed); none is left open or dead
    assert runs and statuses <= {"completed", "interrupted"}, statuses
    snapshot = load_run(runs[-1]["guid"], data).dataset.snapshot["station"]
    assert set(snapshot["qnetlab_agents"]) == {"alice", "bob", "mid"}


def test_a_swallowed_signal_stops_a_sequence_on_agents_at_its_next_wait(sim_lab, qnetlab_store):
    """On site agents ``operating`` gives the same guarantees as on a station: the pending
    stop is checked at the sequence's next wait (through the sites' own watchdogs) and every
    site is made safe, read back by instrument."""
    from qnetlab.agents import load_agents
    from qnetlab.cli import SignalStop, _SignalStopper

    sim_lab("link")
    bundle = load_agents("sim_link")
    stopper = _SignalStopper()
    try:
        stopper(signal.SIGTERM, None)
    except SignalStop:
        pass  # swallowed where it landed
    previous = signal.signal(signal.SIGTERM, stopper)
    try:
        bundle.node("alice")["pump"].output("on")
        with pytest.raises(SignalStop) as stop, operating(bundle, qnetlab_store) as safe:
            safe.clock.sleep(10.0)
        assert stop.value.safe_state["pump_alice"].startswith("output off, -99 dBm emitted")
        assert bundle.node("alice")["pump"].output() is False
        bundle.clock.sleep(10.0)  # outside the block the sites' watchdogs no longer stop it
    finally:
        signal.signal(signal.SIGTERM, previous)
        bundle.close()
