"""Run-store figures: time-tag streaming against h5py written the same way and against a time
tagger's transfer rate, sweep points against plain QCoDeS (per point and batched the same way),
and the run file's size against the data it holds.

Every timing is the best of several rounds, the store and its baseline interleaved in the same
process, so a busy machine shifts both alike; ``store.tags_rate_vs_tagger`` alone divides by a
constant (the tagger's rate), so a busy machine lowers it."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from qcodes.dataset import Measurement, load_or_create_experiment
from qcodes.dataset.sqlite.database import connect

from qnetlab.runstore import LIBVER, STREAM_CHUNK_ROWS, STREAM_COMPRESSION, Run, RunStore

N_TAGS = 20_000_000
#: Tags per append: 12.5 ms of a tagger at its 80 Mtags/s transfer limit.
BLOCK = 1_000_000
#: Swabian Time Tagger X: the highest sustained tag rate it transfers to the host (tags/s).
TAGGER_TAGS_PER_S = 80e6
TAG_ROUNDS = 8
OVERHEAD_PAIRS = 1_000_000
PER_POINT_POINTS = 20_000
BATCHED_POINTS = 200_000


def _tags(n: int = N_TAGS) -> tuple[np.ndarray, np.ndarray]:
    """``n`` time-ordered int64 tags (mean spacing 20 ns) with channel bytes 0-2, seeded."""
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.integers(1, 40_000, n)).astype(np.int64)
    return times, rng.integers(0, 3, n).astype(np.uint8)


def _h5py_like_store(path: Path, times: np.ndarray, channels: np.ndarray) -> float:
    """Wall seconds to append the tags in BLOCK rows with plain h5py, written as the store
    writes: HDF5 1.10 format, SWMR, the store's chunk size and Blosc LZ4 bit-shuffle filter,
    ``File.flush()`` after every append. File creation and closing are not timed."""
    with h5py.File(path, "w", libver=LIBVER) as f:
        columns = [(f.create_dataset(name, (0,), maxshape=(None,), dtype=data.dtype,
                                     chunks=(STREAM_CHUNK_ROWS,), **STREAM_COMPRESSION), data)
                   for name, data in (("time_ps", times), ("channel", channels))]
        f.swmr_mode = True
        f.flush()
        t0 = time.perf_counter()
        for i in range(0, times.size, BLOCK):
            j = min(times.size, i + BLOCK)
            for ds, data in columns:
                ds.resize((j,))
                ds[i:j] = data[i:j]
            f.flush()
        return time.perf_counter() - t0


def _through_store(folder: Path, times: np.ndarray, channels: np.ndarray) -> float:
    """Wall seconds to append the tags in BLOCK rows to a run's stream (each append flushes).
    Opening the run (file creation) and closing it (compaction) are not timed."""
    with RunStore(folder) as store:
        run = store.run("bench_tags")
        run.stream("tags", time_ps="i8", channel="u1")
        with run:
            t0 = time.perf_counter()
            for i in range(0, times.size, BLOCK):
                run.streams["tags"].append(time_ps=times[i:i + BLOCK],
                                           channel=channels[i:i + BLOCK])
            return time.perf_counter() - t0


def tag_stream_walls(rounds: int = TAG_ROUNDS) -> tuple[float, float]:
    """Best wall seconds of writing N_TAGS tags with h5py (as the store writes) and through
    the store, rounds interleaved with the order alternating (neither side always writes
    while the other's dirty pages drain); each round's files are deleted before the next."""
    times, channels = _tags()
    plain: list[float] = []
    ours: list[float] = []
    writers = [(plain, lambda folder: _h5py_like_store(folder / "plain.h5", times, channels)),
               (ours, lambda folder: _through_store(folder / "store", times, channels))]
    for k in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            for walls, write in writers if k % 2 else writers[::-1]:
                walls.append(write(Path(tmp)))
    return min(plain), min(ours)


def tags_write_ratio_vs_h5py(walls: tuple[float, float]) -> float:
    """``store.tags_write_ratio_vs_h5py``: plain h5py time over the store's for the same
    20 M tags appended in 1 M-tag blocks, both with the same filter (Blosc LZ4 bit shuffle),
    chunks, SWMR and a flush per append, both timed from the first append to the last
    (creation and close excluded). 1.0: the store costs nothing over h5py. Goal >= 0.9."""
    plain, ours = walls
    return plain / ours


def tags_rate_vs_tagger(walls: tuple[float, float]) -> float:
    """``store.tags_rate_vs_tagger``: the rate at which the store writes a tag stream to its
    file (tags over the wall time of ``tags_write_ratio_vs_h5py``'s store side: appends of
    1 M tags, each compressed, written and flushed to the OS), over 80 Mtags/s, a Swabian
    Time Tagger X's transfer limit. Goal >= 1: the store keeps up with the fastest tagger."""
    return N_TAGS / walls[1] / TAGGER_TAGS_PER_S


def _qcodes_measurement(exp: object, name: str) -> Measurement:
    meas = Measurement(exp=exp, name=name)
    meas.register_custom_parameter("x")
    meas.register_custom_parameter("y", setpoints=("x",))
    return meas


def _qcodes_per_point(exp: object, xs: np.ndarray) -> float:
    """Wall seconds of a plain QCoDeS run adding each point with its own ``add_result``."""
    meas = _qcodes_measurement(exp, "per_point")
    t0 = time.perf_counter()
    with meas.run() as saver:
        for x in xs:
            saver.add_result(("x", x), ("y", 2.0 * x))
    return time.perf_counter() - t0


def _qcodes_batched(exp: object, xs: np.ndarray, flush_points: int,
                    flush_period_s: float) -> float:
    """Wall seconds of a plain QCoDeS run batched as the store batches: points gathered in
    lists, handed to ``add_result`` as arrays and committed every ``flush_points`` points or
    ``flush_period_s`` seconds, with the same ``write_period``."""
    meas = _qcodes_measurement(exp, "batched")
    meas.write_period = flush_period_s
    t0 = time.perf_counter()
    with meas.run() as saver:
        bx: list[float] = []
        by: list[float] = []
        last = time.perf_counter()
        for x in xs:
            bx.append(x)
            by.append(2.0 * x)
            if len(bx) >= flush_points or time.perf_counter() - last >= flush_period_s:
                saver.add_result(("x", np.asarray(bx)), ("y", np.asarray(by)))
                saver.flush_data_to_database(block=True)
                bx, by, last = [], [], time.perf_counter()
        if bx:
            saver.add_result(("x", np.asarray(bx)), ("y", np.asarray(by)))
    return time.perf_counter() - t0


def _store_run(store: RunStore, name: str) -> Run:
    run = store.run(name)
    run.register("x")
    run.register("y", setpoints=("x",))
    return run


def _store_points(store: RunStore, xs: np.ndarray) -> float:
    """Wall seconds of a store run adding each point with ``add_point`` (its own batching)."""
    run = _store_run(store, "points")
    t0 = time.perf_counter()
    with run:
        for x in xs:
            run.add_point(x=x, y=2.0 * x)
    return time.perf_counter() - t0


def _store_batched(store: RunStore, xs: np.ndarray, flush_points: int,
                   flush_period_s: float) -> float:
    """Wall seconds of a store run batched exactly as :func:`_qcodes_batched` batches (the same
    loop: points gathered in lists, every ``flush_points`` points or ``flush_period_s``
    seconds), each batch handed to ``Run.add_points`` as arrays, which commits it."""
    run = _store_run(store, "batched")
    t0 = time.perf_counter()
    with run:
        bx: list[float] = []
        by: list[float] = []
        last = time.perf_counter()
        for x in xs:
            bx.append(x)
            by.append(2.0 * x)
            if len(bx) >= flush_points or time.perf_counter() - last >= flush_period_s:
                run.add_points(x=np.asarray(bx), y=np.asarray(by))
                bx, by, last = [], [], time.perf_counter()
        if bx:
            run.add_points(x=np.asarray(bx), y=np.asarray(by))
    return time.perf_counter() - t0


def _points_walls(points: int, baseline: Callable[[object, np.ndarray], float],
                  ours: Callable[[RunStore, np.ndarray], float] = _store_points,
                  rounds: int = 3) -> tuple[float, float]:
    """Best wall seconds of ``baseline`` (plain QCoDeS, own database) and of ``ours`` (the
    store) for ``points`` scalar points, rounds interleaved; both times include opening and
    ending the run (for the store: its QCoDeS run, its HDF5 file and its compaction)."""
    xs = np.arange(points, dtype=float)
    q_times, s_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        conn = connect(Path(tmp) / "plain.db")
        exp = load_or_create_experiment("bench", sample_name="plain", conn=conn)
        with RunStore(Path(tmp) / "store") as store:
            for _ in range(rounds):
                q_times.append(baseline(exp, xs))
                s_times.append(ours(store, xs))
        conn.close()
    return min(q_times), min(s_times)


def batching_gain_vs_qcodes_per_point(points: int = PER_POINT_POINTS) -> float:
    """``store.batching_gain_vs_qcodes_per_point``: plain QCoDeS calling ``add_result`` once
    per point, over the store's ``add_point`` (which batches), time for time, 20,000 scalar
    points. What batching gains a user who would otherwise add points one by one. Goal >= 1."""
    plain, ours = _points_walls(points, _qcodes_per_point)
    return plain / ours


def points_ratio_vs_qcodes_batched(points: int = BATCHED_POINTS) -> float:
    """``store.points_ratio_vs_qcodes_batched``: plain QCoDeS over the store, time for time,
    200,000 scalar points gathered by the same loop into batches of the store's
    ``flush_points`` (or every ``flush_period_s``), each batch handed over as arrays and
    committed: QCoDeS's ``add_result`` + ``flush_data_to_database`` against the store's
    ``Run.add_points`` (same write period), whole run from open to end on both sides (the
    store's also creates, flushes and compacts its HDF5 file and runs its flusher thread).
    1.0: the store adds nothing to QCoDeS. Goal >= 0.9."""
    defaults = RunStore.__init__.__kwdefaults__
    flush_points, flush_period_s = defaults["flush_points"], defaults["flush_period_s"]

    def batched(exp: object, xs: np.ndarray) -> float:
        return _qcodes_batched(exp, xs, flush_points, flush_period_s)

    def store_batched(store: RunStore, xs: np.ndarray) -> float:
        return _store_batched(store, xs, flush_points, flush_period_s)

    plain, ours = _points_walls(points, batched, store_batched)
    return plain / ours


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
    """``store.file_overhead_ratio``: run file size over the sum of its datasets' storage sizes
    (h5py), after a generation run of ``pairs`` heralded pairs (``generate`` on the sim_link
    station, calibrated first, default flush settings and poll period); 1.0 means the file
    holds nothing but its data. Not a timing."""
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
    """The store's figures (see each function's docstring)."""
    walls = tag_stream_walls()
    return {
        "store.file_overhead_ratio": round(file_overhead_ratio(), 3),
        "store.tags_write_ratio_vs_h5py": round(tags_write_ratio_vs_h5py(walls), 3),
        "store.tags_rate_vs_tagger": round(tags_rate_vs_tagger(walls), 3),
        "store.batching_gain_vs_qcodes_per_point": round(batching_gain_vs_qcodes_per_point(), 3),
        "store.points_ratio_vs_qcodes_batched": round(points_ratio_vs_qcodes_batched(), 3),
    }
