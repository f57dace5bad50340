"""Crash consistency of the run store: kills during creation, points buffered when the kill
comes, dead runs detected and cleaned up (issue 10, section 3)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import hdf5plugin
import numpy as np
import pytest

from qnetlab.cli import run_cli
from qnetlab.runread import list_runs, load_run, read_hdf5
from qnetlab.runstore import RunStore

BURST = textwrap.dedent("""
    import sys, time, numpy as np
    from qnetlab.runstore import RunStore
    store = RunStore(sys.argv[1])           # default flush settings
    run = store.run("burst")
    run.register("i"); run.register("v", setpoints=("i",))
    run.stream("tags", time_ps="i8", channel="u1")
    with run:
        for i in range(7):
            run.add_point(i=i, v=3.0 * i)
        run.streams["tags"].append(time_ps=np.arange(1234), channel=np.ones(1234))
        print("BURST", store.flush_period_s, flush=True)
        time.sleep(600)                     # no further point: only the flusher can save them
""")


def start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            text=True)


def kill_after_line(proc: subprocess.Popen, prefix: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line or line.startswith(prefix):
            return line
    return ""


def sigkill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()


def test_points_of_a_burst_reach_disk_within_the_default_flush_period(tmp_path):
    proc = start(BURST, str(tmp_path))
    line = kill_after_line(proc, "BURST")
    assert line.startswith("BURST"), "the child did not get to its burst"
    period = float(line.split()[1])
    assert period == 0.5  # the default
    time.sleep(period)  # one flush period after the last point, then the kill
    sigkill(proc)
    (row,) = list_runs(tmp_path)
    assert row["status"] == "dead"
    run = load_run(row["guid"], tmp_path)
    np.testing.assert_array_equal(run.arrays()["v"]["v"], 3.0 * np.arange(7))
    np.testing.assert_array_equal(run.streams["tags"]["time_ps"], np.arange(1234))


BATCH = textwrap.dedent("""
    import sys, time, numpy as np
    from qnetlab.runstore import RunStore
    store = RunStore(sys.argv[1])           # default flush settings: 20,000 points or 0.5 s
    run = store.run("batch")
    run.register("i"); run.register("v", setpoints=("i",))
    with run:
        run.add_points(i=np.arange(300), v=3.0 * np.arange(300))
        print("BATCH", store.flush_period_s, flush=True)
        time.sleep(600)                     # no further point: only the flusher can save them
""")


def test_a_batch_of_add_points_reaches_disk_within_the_flush_period(tmp_path):
    proc = start(BATCH, str(tmp_path))
    line = kill_after_line(proc, "BATCH")
    assert line.startswith("BATCH"), "the child did not get to its batch"
    time.sleep(float(line.split()[1]))  # one flush period after the batch, then the kill
    sigkill(proc)
    (row,) = list_runs(tmp_path)
    assert row["status"] == "dead"
    np.testing.assert_array_equal(load_run(row["guid"], tmp_path).arrays()["v"]["v"],
                                  3.0 * np.arange(300))


KILL_IN_CREATION = textwrap.dedent("""
    import os, signal, sys, h5py
    from qnetlab.runstore import RunStore
    real = h5py.Group.create_group
    def dying(self, name, *a, **k):
        if name == "streams":              # half-way through writing the new file
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, name, *a, **k)
    h5py.Group.create_group = dying
    store = RunStore(sys.argv[1])
    run = store.run("born_dead")
    run.stream("tags", time_ps="i8")
    with run:
        pass
""")


def test_a_kill_while_creating_the_file_leaves_no_broken_file(tmp_path):
    proc = start(KILL_IN_CREATION, str(tmp_path))
    proc.wait(timeout=120)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    for path in (tmp_path / "runs").glob("*/*.h5"):  # a run file, if any, must open
        read_hdf5(path)
    (row,) = list_runs(tmp_path)
    assert row["status"] == "dead"
    assert load_run(row["guid"], tmp_path).status == "dead"
    assert run_cli(["--data", str(tmp_path), "runs", "--clean-dead"]) == 0
    assert not list((tmp_path / "runs").glob("*/.*")), "temporary files left behind"


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from qnetlab.runstore import RunStore
    store = RunStore(sys.argv[1])
    run = store.run("killed_writer")
    run.register("i"); run.register("v", setpoints=("i",))
    run.stream("tags", time_ps="i8", channel="u1")
    with run:
        for i in range(10**9):
            run.add_point(i=i, v=2.0 * i)
            run.streams["tags"].append(time_ps=np.arange(i * 100, (i + 1) * 100),
                                       channel=np.full(100, i % 3))
            if i == 2000:
                print("ROWS", (i + 1) * 100, flush=True)
""")


def test_a_killed_run_shows_dead_and_clean_dead_makes_its_file_whole(tmp_path, capsys):
    proc = start(WRITER, str(tmp_path))
    assert kill_after_line(proc, "ROWS").startswith("ROWS")
    sigkill(proc)
    (row,) = list_runs(tmp_path)
    assert row["status"] == "dead" and row["pid"] == proc.pid and row["host"]
    path, live = row["hdf5"], row["hdf5"] + ".live"
    assert not os.path.exists(path)  # until the run is finalised, its file has its live name
    with pytest.raises(OSError, match="h5clear"):  # the SWMR-write flag a killed writer leaves
        h5py.File(live, "r").close()
    before = read_hdf5(path)["streams"]["tags"]  # ... does not stop our readers
    assert before["time_ps"].size >= 200_100
    np.testing.assert_array_equal(before["time_ps"], np.arange(before["time_ps"].size))
    assert run_cli(["--data", str(tmp_path), "runs"]) == 0
    assert " dead " in capsys.readouterr().out
    for ref in ("1", live):  # a report by id or by the live file's path
        report = tmp_path / "killed.html"
        assert run_cli(["--data", str(tmp_path), "report", ref, "--out", str(report)]) == 0
        assert "dead" in report.read_text() and "killed_writer" in report.read_text()
    assert run_cli(["--data", str(tmp_path), "runs", "--clean-dead"]) == 0
    assert "marked run 1 (killed_writer" in capsys.readouterr().out
    assert not os.path.exists(live)
    with h5py.File(path, "r") as f:  # a plain open works now: nothing to h5clear
        assert f.attrs["status"] == "dead" and "tails" not in f
        np.testing.assert_array_equal(f["streams/tags/time_ps"][()], before["time_ps"])
    run = load_run(row["guid"], tmp_path)
    assert run.status == "dead" and run.dataset.completed
    assert list_runs(tmp_path)[0]["status"] == "dead"
    assert run_cli(["--data", str(tmp_path), "runs", "--clean-dead"]) == 0
    assert "0 dead run(s) cleaned up" in capsys.readouterr().out  # each run cleaned once
    h5dump = shutil.which("h5dump")
    if h5dump:
        env = {**os.environ, "HDF5_PLUGIN_PATH": hdf5plugin.PLUGIN_PATH}
        out = subprocess.run([h5dump, "-H", path], env=env, capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr


LOOP = textwrap.dedent("""
    import sys, numpy as np
    from qnetlab.runstore import RunStore
    store = RunStore(sys.argv[1])           # default settings
    for k in range(10**6):
        run = store.run(f"loop{k}")
        run.register("i"); run.register("v", setpoints=("i",))
        run.stream("tags", time_ps="i8", channel="u1")
        with run:
            for i in range(200):
                run.add_point(i=i, v=float(i))
                run.streams["tags"].append(time_ps=np.arange(i * 500, (i + 1) * 500),
                                           channel=np.full(500, i % 3))
""")


def test_kills_at_random_moments_leave_every_file_and_run_readable(tmp_path):
    """Writers killed at seeded random moments (start-up, database creation, file creation,
    writing, closing); then every run loads, every file opens, and after --clean-dead every
    file is an ordinary HDF5 file that h5py and h5dump open without h5clear."""
    delays = np.random.default_rng(2024).uniform(0.5, 4.0, size=6)
    for delay in delays:
        proc = start(LOOP, str(tmp_path))
        time.sleep(delay)
        sigkill(proc)
    rows = list_runs(tmp_path)
    assert rows and {r["status"] for r in rows} <= {"completed", "dead"}
    assert len({r["run_id"] for r in rows}) == len(rows)
    for row in rows:
        run = load_run(row["guid"], tmp_path)
        n = run.streams["tags"]["time_ps"].size if run.streams else 0
        np.testing.assert_array_equal(run.streams["tags"]["time_ps"] if n else [], np.arange(n))
    for path in (tmp_path / "runs").glob("*/*.h5"):  # right after the kills: every .h5 is
        with h5py.File(path, "r") as f:               # closed and opens plainly
            assert f.attrs["status"] in ("completed", "dead")
    assert run_cli(["--data", str(tmp_path), "runs", "--clean-dead"]) == 0
    assert {r["status"] for r in list_runs(tmp_path)} <= {"completed", "dead"}
    assert not list((tmp_path / "runs").glob("*/*.live"))
    assert not list((tmp_path / "runs").glob("*/.*")), "temporary files left behind"
    h5dump = shutil.which("h5dump")
    env = {**os.environ, "HDF5_PLUGIN_PATH": hdf5plugin.PLUGIN_PATH}
    for path in (tmp_path / "runs").glob("*/*.h5"):
        with h5py.File(path, "r") as f:
            assert f.attrs["status"] in ("completed", "dead")
        if h5dump:
            out = subprocess.run([h5dump, "-H", str(path)], env=env, capture_output=True,
                                 timeout=60)
            assert out.returncode == 0, out.stderr


def test_a_run_killed_before_its_results_table_is_finalised_as_dead(tmp_path):
    """QCoDeS creates a run's row and its results table in two steps; a process killed between
    them leaves a run that QCoDeS loads as an in-memory dataset with a "No raw data stored"
    warning. Opening the directory, listing and --clean-dead take it as a dead run."""
    from qcodes.dataset import load_or_create_experiment, new_data_set

    from qnetlab.datadir import open_database

    conn = open_database(tmp_path)
    exp = load_or_create_experiment("qnetlab", sample_name="s", conn=conn)
    guid = new_data_set("killed_between_steps", exp_id=exp.exp_id, conn=conn).guid
    conn.execute("UPDATE runs SET result_table_name=NULL WHERE guid=?", (guid,))
    conn.commit()
    conn.close()
    with RunStore(tmp_path) as store:  # pytest turns the QCoDeS warning into an error
        assert [r["guid"] for r in store.recovered] == [guid]
    assert [(r["name"], r["status"]) for r in list_runs(tmp_path)] == [
        ("killed_between_steps", "dead")]
    assert run_cli(["--data", str(tmp_path), "runs", "--clean-dead"]) == 0
