"""Calibration figures: a fully fresh maintain (no I/O), a full link calibration, lab/wall."""

from __future__ import annotations

import tempfile
import time

import pyvisa

from qnetlab import stations
from qnetlab.runstore import RunStore
from qnetlab.sequences.calibration import (
    CalContext,
    CalibrationGraph,
    CalibrationStore,
    Calibrator,
    calibrate,
    default_calibrations,
)
from qnetlab.sim_instruments import lab_spec


def run() -> dict[str, float]:
    """Calibrate the built-in two-node link (seed 22) from scratch into a temporary data
    directory, then maintain it while every calibration is fresh.

    - ``calibration.link_full_wall_s``: wall seconds of that full ``calibrate`` (every
      calibration of the graph, with its runs, fits and figures); an absolute time.
    - ``calibration.sim_speedup``: lab seconds the full calibration took on the virtual clock
      over its wall seconds (how much faster than real time the simulated lab calibrates).
    - ``calibration.maintain_fresh_ms_per_node``: best of 20 ``Calibrator.maintain()`` calls
      after a warm-up, all calibrations fresh (no instrument I/O, only the freshness checks),
      in wall milliseconds per graph node; an absolute time.
    """
    lib = pyvisa.ResourceManager(lab_spec("link")).visalib
    lib.reset_state(22)
    bundle = stations.load("sim_link")
    try:
        with tempfile.TemporaryDirectory() as data:
            lab0, t0 = lib.clock.now(), time.perf_counter()
            report = calibrate(bundle, data_dir=data)
            wall = time.perf_counter() - t0
            lab_time = lib.clock.now() - lab0
            assert report.ok, report.table()

            store, runs = CalibrationStore(data), RunStore(data)
            graph = CalibrationGraph(default_calibrations(), bundle.topology)
            calibrator = Calibrator(graph, CalContext(bundle, runs, store))
            calibrator.maintain()  # warm-up
            best = float("inf")
            for _ in range(20):
                t1 = time.perf_counter()
                fresh = calibrator.maintain()
                best = min(best, time.perf_counter() - t1)
            assert all(r.status == "fresh" for r in fresh.results), fresh.table()
            per_node_ms = best / len(fresh.results) * 1e3
            store.close()
            runs.close()
    finally:
        bundle.close()
        lib.reset_state()
    return {
        "calibration.maintain_fresh_ms_per_node": round(per_node_ms, 3),
        "calibration.link_full_wall_s": round(wall, 2),
        "calibration.sim_speedup": round(lab_time / wall, 0),
    }
