"""Entanglement generation end to end: pairs per wall second, and how cost grows with pairs.

Set-up (not timed): the built-in two-node link (seed 22) comes up and is calibrated by the
calibration graph into a temporary data directory, as ``qnetlab demo`` does, so the link runs
at the demo's operating point (single-click, about 280 heralds per lab second).

Timed: one call of ``generate(bundle, "ab", N, bases=("X", "Y", "Z"), runs=...)`` with its
default poll period (2 lab seconds): the CREATE, every poll of both nodes, reading the pairs,
streaming them into the run's HDF5 file and QCoDeS dataset, and opening and closing the run.
Each N is timed ``ROUNDS`` times on the same lab (one after the other) and the best is kept.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

import pyvisa

from qnetlab import stations
from qnetlab.runstore import RunStore
from qnetlab.sequences.calibration import CalibrationStore, calibrate
from qnetlab.sequences.entanglement import generate
from qnetlab.sim_instruments import lab_spec

SMALL, LARGE = 100_000, 1_000_000
ROUNDS = 2
MAX_TIME_S = 86400.0  # 1 M pairs take about 3600 lab seconds at the demo's operating point


def _timed_generate(bundle: stations.StationBundle, runs: RunStore, pairs: int,
                    calibration: dict) -> float:
    """Wall seconds of one ``generate`` of ``pairs`` pairs (it must deliver them all)."""
    t0 = time.perf_counter()
    gen = generate(bundle, "ab", pairs, bases=("X", "Y", "Z"), runs=runs,
                   max_time_s=MAX_TIME_S, calibration=calibration)
    elapsed = time.perf_counter() - t0
    if len(gen) != pairs or gen.state != "DONE":
        raise RuntimeError(f"generate delivered {len(gen)}/{pairs} pairs ({gen.state})")
    return elapsed


def generation_walls() -> dict[int, float]:
    """Best wall time of ``generate`` for SMALL and LARGE pairs, on one calibrated link."""
    lib = pyvisa.ResourceManager(lab_spec("link")).visalib
    lib.reset_state(22)
    bundle = stations.load("sim_link")
    try:
        with tempfile.TemporaryDirectory() as data:
            with contextlib.redirect_stdout(io.StringIO()):
                report = calibrate(bundle, data_dir=data)
            if not report.ok:
                raise RuntimeError(report.table())
            calibration = CalibrationStore(data).as_dict()
            runs = RunStore(Path(data))
            best = {n: min(_timed_generate(bundle, runs, n, calibration) for _ in range(ROUNDS))
                    for n in (SMALL, LARGE)}
            runs.close()
        return best
    finally:
        bundle.close()
        lib.reset_state()


def run() -> dict[str, float]:
    """``entangle.pairs_per_s_wall``: LARGE pairs over the best wall time of generating them.
    ``entangle.cost_ratio_1m_vs_100k``: best wall time for LARGE pairs over that for SMALL
    (linear cost gives 10), both measured in this process."""
    best = generation_walls()
    return {
        "entangle.pairs_per_s_wall": float(f"{LARGE / best[LARGE]:.3g}"),
        "entangle.cost_ratio_1m_vs_100k": round(best[LARGE] / best[SMALL], 2),
    }
