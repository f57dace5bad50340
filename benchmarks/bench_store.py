"""Run-store figures: time-tag streaming against plain h5py, sweep points against QCoDeS, and
the run file's size against the data it holds."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from qcodes.dataset import Measurement, load_or_create_experiment
from qcodes.dataset.sqlite.database import connect

from qnetlab.runstore import STREAM_CHUNK_ROWS, RunStore

N_TAGS = 10_000_000
BLOCK = 1_000_000
OVERHEAD_PAIRS = 1_000_000


def _tags() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.integers(1, 40_000, N_TAGS)).astype(np.int64)
    return times, rng.integers(0, 3, N_TAGS).astype(np.uint8)


def _plain_h5py(path: Path, times: np.ndarray, channels: np.ndarray) -> float:
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        dt = f.create_dataset("time_ps", (0,), maxshape=(None,), dtype="i8",
                              chunks=(STREAM_CHUNK_ROWS,))
        dc = f.create_dataset("channel", (0,), maxshape=(None,), dtype="u1",
                              chunks=(STREAM_CHUNK_ROWS,))
        for i in range(0, N_TAGS, BLOCK):
            j = min(N_TAGS, i + BLOCK)
            dt.resize((j,))
            dt[i:j] = times[i:j]
            dc.resize((j,))
            dc[i:j] = channels[i:j]
    return time.perf_counter() - t0


def _through_store(folder: Path, times: np.ndarray, channels: np.ndarray) -> float:
    store = RunStore(folder)
    run = store.run("bench_tags")
    run.stream("tags", time_ps="i8", channel="u1")
    with run:
        t0 = time.perf_counter()
        for i in range(0, N_TAGS, BLOCK):
            run.streams["tags"].append(time_ps=times[i:i + BLOCK], channel=channels[i:i + BLOCK])
        elapsed = time.perf_counter() - t0
    store.close()
    return elapsed


def tags_write_ratio_vs_h5py(rounds: int = 3) -> float:
    """Store throughput over plain chunked h5py (uncompressed) for 10 M tags, best of rounds."""
    times, channels = _tags()
    plain, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(rounds):
            plain.append(_plain_h5py(Path(tmp) / f"plain{k}.h5", times, channels))
            ours.append(_through_store(Path(tmp) / f"store{k}", times, channels))
    return min(plain) / min(ours)


def points_ratio_vs_qcodes(points: int = 20_000, rounds: int = 3) -> float:
    """Scalar sweep points: plain QCoDeS ``add_result`` time over the store's, best of rounds."""
    xs = np.arange(points, dtype=float)
    q_times, s_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        conn = connect(Path(tmp) / "plain.db")
        exp = load_or_create_experiment("bench", sample_name="plain", conn=conn)
        store = RunStore(Path(tmp) / "store")
        for _ in range(rounds):
            meas = Measurement(exp=exp, name="plain")
            meas.register_custom_parameter("x")
            meas.register_custom_parameter("y", setpoints=("x",))
            t0 = time.perf_counter()
            with meas.run() as saver:
                for x in xs:
                    saver.add_result(("x", x), ("y", 2.0 * x))
            q_times.append(time.perf_counter() - t0)
            run = store.run("points")
            run.register("x")
            run.register("y", setpoints=("x",))
            t0 = time.perf_counter()
            with run:
                for x in xs:
                    run.add_point(x=x, y=2.0 * x)
            s_times.append(time.perf_counter() - t0)
        store.close()
        conn.close()
    return min(q_times) / min(s_times)


def storage_bytes(path: str | os.PathLike[str]) -> int:
    """Sum of ``Dataset.id.get_storage_size()`` over every dataset of an HDF5 file."""
    total = 0

    def visit(_name: str, obj: object) -> None:
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            total += obj.id.get_storage_size()

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return total


def file_overhead_ratio(pairs: int = OVERHEAD_PAIRS, seed: int = 7) -> float:
    """Run file size over the sum of its datasets' storage sizes (h5py), after a generation
    run of ``pairs`` heralded pairs (``generate`` on the sim_link station, calibrated first,
    default flush settings and poll period); 1.0 means the file holds nothing but its data."""
    import pyvisa

    from qnetlab import stations
    from qnetlab.sequences.calibration import CalibrationStore, calibrate
    from qnetlab.sequences.entanglement import generate
    from qnetlab.sim_instruments import lab_spec

    lib = pyvisa.ResourceManager(lab_spec("link")).visalib
    lib.reset_state(seed)
    bundle = stations.load("sim_link")
    try:
        with tempfile.TemporaryDirectory() as data:
            if not calibrate(bundle, data_dir=data).ok:
                raise RuntimeError("calibration of sim_link failed")
            with RunStore(data) as runs:
                gen = generate(bundle, "ab", pairs, runs=runs, max_time_s=6e5,
                               calibration=CalibrationStore(data).as_dict())
            path = gen.extra["hdf5_path"]
            return os.path.getsize(path) / storage_bytes(path)
    finally:
        bundle.close()
        lib.reset_state()


def run() -> dict[str, float]:
    return {
        "store.file_overhead_ratio": round(file_overhead_ratio(), 3),
        "store.tags_write_ratio_vs_h5py": round(tags_write_ratio_vs_h5py(), 3),
        "store.points_ratio_vs_qcodes": round(points_ratio_vs_qcodes(), 3),
    }
