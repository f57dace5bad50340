"""Crash consistency with real processes killed by SIGKILL: a calibration step killed in the
middle of its commit leaves nothing and is redone once; demos killed at random moments leave
files that h5py, h5dump and QCoDeS read, and a rerun on the same data directory succeeds with
nothing recorded twice."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from qcodes.instrument import Instrument

from conftest import hdf5_refusals
from qnetlab.runread import list_runs, load_run
from qnetlab.sequences.calibration import CalibrationStore, calibrate, load_calibrated

DETECTOR_TIMING = {"det1_delay_ps", "det2_delay_ps", "herald_window_ps", "arrival_sigma_ps"}

# Calibrates the seeded link and SIGKILLs itself when SQLite starts the third record insert of
# the heralding station "mid", i.e. inside detector_timing:mid's commit with two rows written.
KILL_IN_COMMIT = textwrap.dedent("""
    import os, signal, sys, pyvisa
    from qnetlab.sim_instruments import lab_spec
    from qnetlab import stations
    from qnetlab.sequences.calibration import CalibrationStore, calibrate
    pyvisa.ResourceManager(lab_spec("link")).visalib.reset_state(22)
    bundle = stations.load("sim_link")
    store = CalibrationStore(sys.argv[1])
    inserts = []
    def trace(sql):
        if sql.startswith("INSERT INTO records") and "'mid'" in sql:
            inserts.append(sql)
            if len(inserts) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
    store._conn.set_trace_callback(trace)
    calibrate(bundle, data_dir=sys.argv[1], store=store)
    print("FINISHED", flush=True)
""")


def duplicates(data: Path) -> list[tuple]:
    """Calibration records stored twice: same quantity, target and lab time, or one step (its
    source run) recording a quantity twice."""
    with sqlite3.connect(data / "calibration.db") as conn:
        same_time = conn.execute(
            "SELECT quantity, target, lab_time, COUNT(*) FROM records "
            "GROUP BY quantity, target, lab_time HAVING COUNT(*) > 1").fetchall()
        same_step = conn.execute(
            "SELECT quantity, target, source_run, COUNT(*) FROM records WHERE source_run IS "
            "NOT NULL GROUP BY quantity, target, source_run HAVING COUNT(*) > 1").fetchall()
    return same_time + same_step


def test_kill_inside_a_step_commit_leaves_nothing_and_the_rerun_redoes_it(
        sim_lab, qnetlab_data_dir):
    proc = subprocess.run([sys.executable, "-c", KILL_IN_COMMIT, str(qnetlab_data_dir)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    store = CalibrationStore(qnetlab_data_dir)
    assert not [k for k in store.state() if k[1] == "mid"]  # none of the step's records
    assert not [r for q in DETECTOR_TIMING for r in store.history(q, "mid")]
    assert ("detector_timing", "mid") not in store.node_states()
    done_before = {k for k, st in store.node_states().items() if st.last_outcome}
    assert ("pump_operating_point", "bob") in done_before  # the kill came late in the graph

    lab = sim_lab("link", seed=22)
    Instrument.close_all()
    bundle, _ = load_calibrated("sim_link", qnetlab_data_dir)
    try:
        report = calibrate(bundle, data_dir=qnetlab_data_dir)
    finally:
        bundle.close()
    assert report.ok, report.table()
    assert report.result("detector_timing", "mid").status == "calibrated", report.table()
    for cal, target in done_before:
        assert report.result(cal, target).status == "fresh", report.table()
    for quantity in DETECTOR_TIMING:
        assert len(store.history(quantity, "mid")) == 1, quantity
    for quantity, target in store.state():
        assert len(store.history(quantity, target)) == 1, (quantity, target)
    assert not duplicates(qnetlab_data_dir)
    assert lab.clock.now() > 0


def _qnetlab(data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "qnetlab", "--data", str(data), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "MPLBACKEND": "Agg"}



def _wait_for_recording(data: Path, proc: subprocess.Popen, live: bool = False,
                        timeout_s: float = 120) -> None:
    """Wait until the demo records runs (its ``runs/`` folder exists): start-up is over; with
    ``live``, until a run is open (its file, ``*.h5.live``, exists)."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and not (
            list(data.glob("runs/*/*.h5.live")) if live else (data / "runs").is_dir()):
        assert time.monotonic() < deadline, "the demo recorded no run"
        time.sleep(0.02)


def test_demos_killed_at_random_moments_leave_readable_data_and_a_rerun_succeeds(tmp_path):
    """Four `qnetlab demo` runs with default settings on one data directory, each SIGKILLed
    at a seeded random moment (each resumes what the previous one left): the first at any
    moment from its start, the next two while the demo records its runs, the last one while a
    run is open. Right after each kill (before anything reruns) every ``*.h5`` opens plainly
    and with ``h5dump -H``."""
    data = tmp_path / "data"
    rng = random.Random(10)
    for k in range(4):
        proc = subprocess.Popen(_qnetlab(data, "demo"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=_env())
        if k:
            _wait_for_recording(data, proc, live=k == 3)
        delay = rng.uniform(1.0, 7.0) if k == 0 else rng.uniform(0.0, 3.0) if k < 3 else 0.0
        time.sleep(delay)  # wall time: a real process, a real kill
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert hdf5_refusals(data) == [], f"after kill {k}"
    assert list(data.glob("runs/*/*.h5.live")), "the last kill fell outside a run"
    for run in list_runs(data):
        load_run(run["guid"], data)  # QCoDeS loads every run, with its HDF5 file if any
    rerun = subprocess.run(_qnetlab(data, "demo", "--no-report"), capture_output=True,
                           text=True, env=_env(), timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Traceback" not in rerun.stderr
    assert hdf5_refusals(data) == []
    assert not list(data.glob("runs/*/*.live"))  # the rerun finalised the dead runs' files
    assert not duplicates(data)
    runs = list_runs(data)
    assert len({r["guid"] for r in runs}) == len(runs)
    for run in runs:
        load_run(run["guid"], data)
