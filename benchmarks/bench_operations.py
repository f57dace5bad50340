"""Operating figures: the whole ``qnetlab demo``, and the interlock's reaction in poll periods."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import pyvisa

from qnetlab import stations
from qnetlab.runstore import RunStore
from qnetlab.sequences.pump_scan import pump_power_scan
from qnetlab.sequences.safety import default_watchdog, guarded
from qnetlab.sim_instruments import lab_spec


def demo_wall_s() -> float:
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "QNETLAB_DATA": data, "MPLBACKEND": "Agg"}
        t0 = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "qnetlab", "demo"], env=env,
                                capture_output=True, text=True, timeout=600)
        elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"qnetlab demo failed: {result.stderr[-500:]}")
    return elapsed


def interlock_reaction_polls() -> float:
    """A fridge excursion during a pump-power scan: polls from the last clear reading to the
    safe action (pump off, shutter closed)."""
    lib = pyvisa.ResourceManager(lab_spec("node")).visalib
    lib.reset_state(11)
    bundle = stations.load("sim_node")
    try:
        with tempfile.TemporaryDirectory() as data:
            runs = RunStore(data)
            watchdog = default_watchdog(bundle, ceiling_k=0.02, poll_s=5.0, settle_s=300.0,
                                        on_event=runs.log_event)
            lib.faults.excursion("alice", power_w=40e-6, duration_s=900, start_in_s=400)
            with guarded(bundle, watchdog) as safe:
                pump_power_scan(safe, "alice", [0, 1, 2, 3, 4, 5, 6, 7, 8], dwell_s=120,
                                runs=runs)
            runs.close()
        assert watchdog.last_trip is not None, "the excursion did not trip the watchdog"
        return float(watchdog.last_trip["reaction_polls"])
    finally:
        bundle.close()
        lib.reset_state()


def run() -> dict[str, float]:
    return {
        "demo.wall_s": round(demo_wall_s(), 2),
        "interlock.reaction_polls": round(interlock_reaction_polls(), 3),
    }
