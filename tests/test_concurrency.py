"""Several real processes on one data directory: one calibrates, the others wait for it with a
message naming the holder, then find its work fresh; nothing is recorded twice, nothing is read
half-finished, no process fails or prints a traceback."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from qnetlab.runstore import RunStore
from qnetlab.sequences.calibration import CalibrationStore
from qnetlab.sequences.calibration.lock import CalibrationLock

# Calibrates the seeded link, printing one line per node and, at the end, the calibration state
# it works with (what a demo would use to entangle).
CALIBRATE = textwrap.dedent("""
    import sys, pyvisa
    from qnetlab.sim_instruments import lab_spec
    from qnetlab import stations
    from qnetlab.sequences.calibration import CalibrationStore, calibrate
    pyvisa.ResourceManager(lab_spec("link")).visalib.reset_state(22)
    bundle = stations.load("sim_link")
    store = CalibrationStore(sys.argv[1])
    report = calibrate(bundle, data_dir=sys.argv[1], store=store,
                       progress=lambda r: print("NODE", r.status, r.key, flush=True))
    pump = bundle.node("alice")["pump"].wavelength()
    live = store.current("pump_wavelength_nm", "alice").value
    print("OK" if report.ok else "NOT OK", "pump", pump, "live", live, flush=True)
""")

WAITING = re.compile(r"^qnetlab: waiting for the calibration of .+, held by pid (\d+) on host "
                     r"\S+ since \S+$", re.M)


def _env() -> dict[str, str]:
    return {**os.environ, "MPLBACKEND": "Agg"}


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())


def _records(data: Path) -> list[tuple]:
    with sqlite3.connect(data / "calibration.db") as conn:
        return conn.execute("SELECT quantity, target, lab_time, source_run FROM records").fetchall()


def _assert_no_duplicates(data: Path) -> None:
    rows = _records(data)
    assert rows, "nothing was calibrated"
    keys = [(q, t) for q, t, _, _ in rows]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


def test_processes_calibrating_one_data_dir_wait_for_each_other(qnetlab_data_dir):
    data = qnetlab_data_dir
    RunStore(data)  # the QCoDeS database exists: this test is about the calibration store
    procs = [_start([sys.executable, "-c", CALIBRATE, str(data)]) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        assert "\nOK pump" in out, out
    pids = {p.pid for p in procs}
    measured = [out for out, _ in outs if "NODE calibrated" in out]
    assert len(measured) == 1  # exactly one process calibrated; the others found it fresh
    waited = [err for _, err in outs if WAITING.search(err)]
    assert len(waited) == 2, [err for _, err in outs]
    for err in waited:
        assert int(WAITING.search(err).group(1)) in pids  # the holder is named
    for out, _ in outs:
        if out not in measured:
            nodes = [ln for ln in out.splitlines() if ln.startswith("NODE")]
            assert nodes and all(ln.split()[1] == "fresh" for ln in nodes), out
        pump, live = re.search(r"pump (\S+) live (\S+)", out).groups()
        assert abs(float(pump) - float(live)) < 1e-6  # the waiters applied the fresh values
    _assert_no_duplicates(data)


def test_a_reader_never_sees_half_a_step(qnetlab_data_dir):
    """A step written in one transaction is seen whole or not at all by another connection,
    even while the writer is between two of its records."""
    writer, reader = CalibrationStore(qnetlab_data_dir), CalibrationStore(qnetlab_data_dir)
    with writer.transaction():
        writer.record("det1_delay_ps", "mid", 100.0, lab_time=1.0)
        assert reader.as_dict() == {}  # the first record is not visible alone
        writer.record("det2_delay_ps", "mid", 200.0, lab_time=1.0)
    assert reader.as_dict() == {"mid": {"det1_delay_ps": 100.0, "det2_delay_ps": 200.0}}


def test_the_lock_names_its_holder_and_is_freed_when_the_holder_dies(tmp_path):
    with subprocess.Popen(
            [sys.executable, "-c", "import sys; from qnetlab.sequences.calibration.lock import "
             "CalibrationLock; CalibrationLock(sys.argv[1]).acquire(); print('held', "
             "flush=True); sys.stdin.read()", str(tmp_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout.readline().strip() == "held"
        lock = CalibrationLock(tmp_path)
        assert lock.holder()["pid"] == holder.pid
        assert f"pid {holder.pid} on host" in lock.describe_holder()
        holder.kill()  # SIGKILL: no cleanup runs, the kernel frees the lock
        holder.wait(timeout=30)
    messages: list[str] = []
    with CalibrationLock(tmp_path, on_wait=messages.append) as mine:
        assert mine.holder()["pid"] == os.getpid()
    assert messages == []  # a dead holder's lock is free at once


def test_concurrent_demos_on_a_new_data_dir(tmp_path):
    """Three `qnetlab demo` processes started together on one new data directory."""
    data = tmp_path / "data"
    procs = [_start([sys.executable, "-m", "qnetlab", "--data", str(data), "demo",
                     "--no-report"]) for _ in range(3)]
    outs = [p.communicate(timeout=400) for p in procs]
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err and "database is locked" not in err, err[-3000:]
    assert sum(bool(WAITING.search(err)) for _, err in outs) >= 1
    _assert_no_duplicates(data)
    from qnetlab.runread import list_runs, load_run

    runs = list_runs(data)
    assert len({r["guid"] for r in runs}) == len(runs)
    for run in runs:
        assert run["status"] == "completed", run
        load_run(run["guid"], data)
