"""Operating figures: the whole ``qnetlab demo``, and the interlock's latency in poll periods
from the true temperature crossing to the safe action."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time

import pyvisa

from qnetlab import stations
from qnetlab.sequences.safety import default_watchdog, guarded
from qnetlab.sim_instruments import lab_spec


def demo_wall_s() -> float:
    """``demo.wall_s``: wall seconds of ``python -m qnetlab demo`` in a subprocess (interpreter
    start, bring-up, full calibration, generation, verification, report) into a fresh data
    directory, headless; an absolute time, once."""
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "QNETLAB_DATA": data, "MPLBACKEND": "Agg"}
        t0 = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "qnetlab", "demo"], env=env,
                                capture_output=True, text=True, timeout=600)
        elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"qnetlab demo failed: {result.stderr[-500:]}")
    return elapsed


def true_crossing(history: list[tuple[float, float]], threshold_k: float, after: float
                  ) -> float:
    """First lab time after ``after`` at which the simulated (hidden, true) mixing-chamber
    temperature crosses ``threshold_k`` upwards, interpolated within the physics step."""
    for (t0, v0), (t1, v1) in itertools.pairwise(history):
        if t1 > after and v0 <= threshold_k < v1:
            return t0 + (threshold_k - v0) / (v1 - v0) * (t1 - t0)
    raise RuntimeError(f"the MXC never crossed {threshold_k * 1e3:.1f} mK")


def interlock_latency_polls() -> float:
    """A heat pulse drives the true MXC temperature through the fridge interlock's threshold
    while the sequence is blocked in one long call (transducer efficiency measurements of
    100 s of lab time each, pump emitting); the watchdog polls every 5 s of lab time.
    Times the lab seconds from the true crossing (the simulation's hidden temperature
    history) to the watchdog's safe action (pump output off), divided by the
    poll period: ``interlock.latency_polls_from_crossing``. Goal <= 1; without in-call
    polling the action waits for the sequence's next wait, here after all six measurements
    (about 100 polls)."""
    from qnetlab.sequences.pumps import pumps_emitting
    from qnetlab.sequences.safety import SequenceAborted

    lib = pyvisa.ResourceManager(lab_spec("node")).visalib
    lib.reset_state(11)
    bundle = stations.load("sim_node")
    try:
        inst = bundle.node("alice")
        fridge = lib.lab.nodes["alice"].fridge
        watchdog = default_watchdog(bundle, ceiling_k=0.09, hard_ceiling_k=0.095,
                                    max_rate_k_per_s=1.0, poll_s=5.0)
        inst["qnu"].transducer.measure_time(100.0)
        start = bundle.clock.now()
        lib.faults.excursion("alice", power_w=200e-6, duration_s=3600, start_in_s=30)
        try:
            with guarded(bundle, watchdog) as safe, pumps_emitting(inst["pump"]):
                for _ in range(6):
                    inst["qnu"].transducer.efficiency()
                safe.clock.sleep(1.0)  # the sequence's next safe point
        except SequenceAborted:
            pass
        acted = [e["lab_time"] for e in watchdog.events if e["kind"] == "safe_action"]
        assert acted, "the interlock crossing did not trip the watchdog"
        crossing = true_crossing(list(fridge.history), fridge.interlock_max_k, start)
        return (acted[0] - crossing) / watchdog.poll_s
    finally:
        bundle.close()
        lib.reset_state()


def run() -> dict[str, float]:
    return {
        "demo.wall_s": round(demo_wall_s(), 2),
        "interlock.latency_polls_from_crossing": round(interlock_latency_polls(), 3),
    }
