"""Run files sized by their data and readable by standard tools (issue 16, issue 10 section 4)."""

from __future__ import annotations

import os
import shutil
import subprocess

import h5py
import hdf5plugin
import numpy as np
import pytest

from qnetlab.runread import load_run
from qnetlab.runstore import RunStore


def storage_bytes(path) -> int:
    """Sum of the datasets' storage sizes, as h5py reports them."""
    total = 0
    with h5py.File(path, "r") as f:
        def visit(_name, obj):
            nonlocal total
            if isinstance(obj, h5py.Dataset):
                total += obj.id.get_storage_size()
        f.visititems(visit)
    return total


def tags(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.integers(1, 40_000, n)).astype(np.int64), rng.integers(0, 3, n)


def stream_run(store: RunStore, n: int, block: int):
    times, channels = tags(n, seed=5)
    run = store.run("long_stream")
    run.stream("tags", time_ps="i8", channel="u1", units={"time_ps": "ps"})
    with run:
        for i in range(0, n, block):
            run.streams["tags"].append(time_ps=times[i:i + block], channel=channels[i:i + block])
    return run, times, channels


@pytest.mark.parametrize("n", [300_000, 1_200_000])
def test_a_long_stream_of_small_flushes_ends_within_20_percent_of_its_data(qnetlab_store, n):
    """Every append is flushed (2,000 rows at a time, ~30 per compressed chunk); the overhead
    is a constant (headers), not a chunk per flush, so it holds at both counts and beyond."""
    run, times, channels = stream_run(qnetlab_store, n, block=2_000)
    size, data = os.path.getsize(run.hdf5_path), storage_bytes(run.hdf5_path)
    assert size <= 1.2 * data, f"file {size} B for {data} B of data"
    back = load_run(run.hdf5_path).streams["tags"]
    np.testing.assert_array_equal(back["time_ps"], times)
    np.testing.assert_array_equal(back["channel"], channels)


def test_a_live_file_stays_sized_by_its_data(qnetlab_store):
    """While the run is open, the file grows with its data, not with the number of flushes:
    only whole compressed chunks plus one fixed uncompressed tail (65,536 rows)."""
    times, channels = tags(1_000_000, seed=6)
    run = qnetlab_store.run("live")
    run.stream("tags", time_ps="i8", channel="u1")
    with run:
        for i in range(0, times.size, 1_000):
            run.streams["tags"].append(time_ps=times[i:i + 1_000], channel=channels[i:i + 1_000])
        live = os.path.getsize(run.live_path)
    data = storage_bytes(run.hdf5_path)
    tail_bytes = qnetlab_store.chunk_rows * (8 + 8 + 1)  # the ring: row number + 2 columns
    assert live <= data + tail_bytes + 100_000, f"live file {live} B for {data} B of data"


def test_generation_run_file_within_20_percent_of_its_data(sim_lab, qnetlab_data_dir):
    """A generation run on the never-calibrated link: thousands of polls, each appending a
    herald or two (the worst case for file growth), ends within 20% of its data."""
    from qnetlab import stations
    from qnetlab.sequences.entanglement import generate

    sim_lab("link", seed=3)
    bundle = stations.load("sim_link")
    try:
        runs = RunStore(qnetlab_data_dir)
        gen = generate(bundle, "ab", 3000, runs=runs, max_time_s=6e5)
        runs.close()
    finally:
        bundle.close()
    path = gen.extra["hdf5_path"]
    size, data = os.path.getsize(path), storage_bytes(path)
    assert size <= 1.2 * data, f"file {size} B for {data} B of data"
    heralds = load_run(path).streams["heralds"]
    np.testing.assert_array_equal(heralds["seq"], np.arange(len(gen)) + heralds["seq"][0])
    np.testing.assert_array_equal(heralds["pattern"], gen.pattern)


def test_files_are_in_the_hdf5_1_10_format_that_h5dump_reads(qnetlab_store):
    """Debian's h5dump/h5ls (HDF5 1.10) read a completed run's stream data, Blosc included,
    with HDF5_PLUGIN_PATH pointing at hdf5plugin's filters."""
    h5dump = shutil.which("h5dump")
    if h5dump is None:
        pytest.skip("h5dump not installed (apt-get install hdf5-tools)")
    run, times, _ = stream_run(qnetlab_store, 70_000, block=7_000)
    env = {**os.environ, "HDF5_PLUGIN_PATH": hdf5plugin.PLUGIN_PATH}
    out = subprocess.run([h5dump, "-d", "/streams/tags/time_ps", "-s", "69995", "-c", "5",
                          "-B", str(run.hdf5_path)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "SUPERBLOCK_VERSION 3" in out.stdout
    assert ", ".join(str(t) for t in times[-5:]) in " ".join(out.stdout.split())
    listing = subprocess.run([shutil.which("h5ls") or "h5ls", "-r", str(run.hdf5_path)],
                             capture_output=True, text=True, timeout=60)
    assert "/streams/tags/time_ps    Dataset {70000/Inf}" in listing.stdout


def test_starting_a_run_prints_nothing_on_stdout(qnetlab_store, capfd):
    run = qnetlab_store.run("quiet")
    run.register("x")
    with run:
        run.add_point(x=1.0)
    assert capfd.readouterr().out == ""

