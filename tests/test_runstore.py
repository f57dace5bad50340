"""The run store: QCoDeS + HDF5 per run, read back by id / GUID / path, survives SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from qnetlab.datadir import data_dir, set_data_dir
from qnetlab.runread import load_run
from qnetlab.runstore import SCHEMA_VERSION


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("QNETLAB_DATA", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    set_data_dir(tmp_path / "explicit")
    try:
        assert data_dir() == tmp_path / "explicit"
        assert data_dir(tmp_path / "arg") == tmp_path / "arg"
    finally:
        set_data_dir(None)
    monkeypatch.delenv("QNETLAB_DATA")
    assert data_dir().name == "qnetlab-data"


def test_run_lands_in_qcodes_and_hdf5_and_reads_back_three_ways(qnetlab_store, sim_station):
    store = qnetlab_store
    pump = sim_station.node("alice")["pump"]
    qnu = sim_station.node("alice")["qnu"]
    run = store.run("pd_vs_power", station=sim_station.station, clock=sim_station.clock,
                    calibration={"alice": {"resonance_nm": 1550.12}}, metadata={"who": "test"})
    run.register(pump.power)
    run.register(qnu.transducer.pd_voltage, setpoints=(pump.power,))
    run.stream("tags", time_ps="i8", channel="u1", units={"time_ps": "ps"})
    with run:
        for p in np.linspace(-5, 5, 11):
            pump.power(p)
            run.add_point((pump.power, p), (qnu.transducer.pd_voltage, qnu.transducer.pd_voltage()))
        run.streams["tags"].append(time_ps=np.arange(10, dtype=np.int64), channel=np.ones(10))
        run.streams["tags"].append(time_ps=np.arange(10, 15), channel=np.zeros(5))
    assert run.status == "completed"
    by_id = load_run(run.run_id, store.data_dir)
    by_guid = load_run(run.guid, store.data_dir)
    by_path = load_run(run.hdf5_path)
    for r in (by_id, by_guid, by_path):
        assert r.guid == run.guid and r.status == "completed" and r.name == "pd_vs_power"
        np.testing.assert_array_equal(r.streams["tags"]["time_ps"], np.r_[np.arange(10), 10:15])
    data = by_id.arrays()["qnu_alice_transducer_pd_voltage"]
    np.testing.assert_allclose(data["pump_alice_power"], np.linspace(-5, 5, 11))
    xr = by_id.xarray()
    assert "qnu_alice_transducer_pd_voltage" in xr and xr.attrs["qnetlab_hdf5"] == \
        str(run.hdf5_path)
    assert by_id.calibration == {"alice": {"resonance_nm": 1550.12}}
    assert "pump_alice" in by_id.snapshot["station"]["instruments"]
    assert by_id.dataset.snapshot["station"]["instruments"]["pump_alice"]
    with h5py.File(run.hdf5_path) as f:
        assert f.attrs["schema"] == "qnetlab.run" and f.attrs["schema_version"] == SCHEMA_VERSION
        ds = f["streams/tags/time_ps"]
        assert ds.chunks is not None and "32001" in ds._filters  # Blosc
        assert ds.attrs["unit"] == "ps"


def test_failed_run_keeps_its_data_and_says_why(qnetlab_store):
    run = qnetlab_store.run("boom")
    run.register("x")
    run.register("y", setpoints=("x",))
    with pytest.raises(RuntimeError), run:
        run.add_point(x=1, y=2)
        raise RuntimeError("instrument on fire")
    r = load_run(run.guid, qnetlab_store.data_dir)
    assert r.status == "failed" and "instrument on fire" in r.attrs["error"]
    assert r.arrays()["y"]["y"].tolist() == [2.0]


def test_misuse_is_refused_clearly(qnetlab_store):
    run = qnetlab_store.run("misuse")
    run.register("x")
    run.stream("s", a="f8", b="f8")
    with pytest.raises(RuntimeError, match="use 'with run:'"):
        run.add_point(x=1)
    with run:
        with pytest.raises(KeyError, match="not registered"):
            run.add_point(z=1)
        with pytest.raises(ValueError, match="different lengths"):
            run.streams["s"].append(a=[1, 2], b=[1])
        with pytest.raises(RuntimeError, match="before the run starts"):
            run.register("late")


def test_add_points_keeps_order_with_add_point_and_commits_batches(tmp_path):
    from qnetlab.runstore import RunStore

    with RunStore(tmp_path, flush_points=5, flush_period_s=60.0) as store:
        run = store.run("batches")
        run.register("i")
        run.register("v", setpoints=("i",))
        with run:
            run.add_point(i=0, v=0.0)
            run.add_point(i=1, v=10.0)
            assert run.add_points(i=np.arange(2, 6), v=10.0 * np.arange(2, 6)) == 4
            # five points pending: committed, readable while the run is still open
            assert load_run(run.guid, store.data_dir).arrays()["v"]["v"].tolist() == \
                [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
            run.add_points(("i", [6, 7]), v=[60.0, 70.0])
            run.add_point(i=8, v=80.0)
        data = load_run(run.guid, store.data_dir).arrays()["v"]
    np.testing.assert_array_equal(data["i"], np.arange(9))
    np.testing.assert_array_equal(data["v"], 10.0 * np.arange(9))


def test_add_points_refuses_bad_columns_in_one_line(qnetlab_store):
    run = qnetlab_store.run("bad_points")
    run.register("x")
    run.register("y", setpoints=("x",))
    run.register("trace", array=True)
    with pytest.raises(RuntimeError, match="use 'with run:'"):
        run.add_points(x=[1.0])
    with run:
        with pytest.raises(KeyError, match=r"\['z'\] not registered"):
            run.add_points(x=[1.0], z=[2.0])
        with pytest.raises(ValueError, match=r"\['trace'\] are array quantities"):
            run.add_points(trace=[1.0, 2.0])
        with pytest.raises(ValueError, match=r"same length per quantity, got shapes "
                                             r"\{'x': \(2,\), 'y': \(1,\)\}"):
            run.add_points(x=[1.0, 2.0], y=[1.0])
        with pytest.raises(ValueError, match="1-D array"):
            run.add_points(x=[[1.0]], y=[[1.0]])
        run.add_points(x=[1.0], y=[3.0])
    data = load_run(run.guid, qnetlab_store.data_dir).arrays()["y"]
    assert data["x"].tolist() == [1.0] and data["y"].tolist() == [3.0]


def test_array_quantities_go_straight_to_qcodes(qnetlab_store):
    run = qnetlab_store.run("trace")
    run.register("wavelength", array=True)
    run.register("reflection", setpoints=("wavelength",), array=True)
    with run:
        run.add_point(wavelength=np.linspace(1550, 1551, 101), reflection=np.ones(101))
    data = load_run(run.run_id, qnetlab_store.data_dir).arrays()["reflection"]
    assert data["reflection"].shape == (1, 101)


CHILD = textwrap.dedent("""
    import sys, numpy as np
    from qnetlab.runstore import RunStore
    store = RunStore(sys.argv[1], flush_period_s=0.0)
    run = store.run("killed")
    run.register("i"); run.register("v", setpoints=("i",))
    run.stream("tags", time_ps="i8", channel="u1")
    with run:
        print("H5", run.hdf5_path, flush=True)
        i = 0
        while True:
            run.add_point(i=i, v=2.0 * i)
            run.streams["tags"].append(time_ps=np.arange(i * 1000, (i + 1) * 1000),
                                       channel=np.full(1000, i % 3))
            run.flush()
            print("FLUSHED", i, flush=True)
            i += 1
""")


def test_a_run_killed_with_sigkill_leaves_readable_files(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    h5_path, flushed = None, -1
    deadline = time.monotonic() + 60
    while flushed < 20 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break  # the child died on its own: the asserts below say so
        if line.startswith("H5 "):
            h5_path = line.split(" ", 1)[1].strip()
        elif line.startswith("FLUSHED"):
            flushed = int(line.split()[1])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL and flushed >= 20
    run = load_run(h5_path)
    assert run.status == "dead"  # never closed and its process is gone: the reader can tell
    tags = run.streams["tags"]
    assert tags["time_ps"].size >= (flushed + 1) * 1000
    np.testing.assert_array_equal(tags["time_ps"][: (flushed + 1) * 1000],
                                  np.arange((flushed + 1) * 1000))
    points = run.arrays()["v"]
    assert points["i"].size >= flushed + 1
    np.testing.assert_array_equal(points["v"][: flushed + 1], 2.0 * np.arange(flushed + 1))


@pytest.mark.parametrize("rows", [40_000, (1 << 16) + 1000, 3 << 16])
def test_stream_rows_are_what_was_appended_even_if_the_caller_reuses_its_arrays(
        qnetlab_store, rows):
    """A tagger loop refills one buffer per block: rows already appended (whole chunks written
    straight from the caller's arrays, or held back in the tail) keep the values they had."""
    run = qnetlab_store.run("reused_buffer")
    run.stream("tags", time_ps="i8", channel="u1")
    times, channels = np.empty(rows, np.int64), np.empty(rows, np.uint8)
    expected = []
    with run:
        for block in range(3):
            times[:] = np.arange(rows) + block * rows
            channels[:] = block
            run.streams["tags"].append(time_ps=times, channel=channels)
            expected.append(times.copy())
        times[:] = -1  # the caller's buffer changes after the last append
        channels[:] = 9
    stored = load_run(run.hdf5_path).streams["tags"]
    np.testing.assert_array_equal(stored["time_ps"], np.concatenate(expected))
    np.testing.assert_array_equal(stored["channel"], np.repeat(np.arange(3, dtype=np.uint8), rows))
