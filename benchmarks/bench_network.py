"""Network figures: the concurrent calibration of a 16-node chain against a 2-node link."""

from __future__ import annotations

import tempfile
import time

from qnetlab import stations
from qnetlab.sequences.calibration import calibrate

CHAIN = "chain:16"  # generated topology (qnetlab.stations.load("chain:16"))
LINK = "sim_link"


def _calibrate(bundle: stations.StationBundle) -> tuple[float, float]:
    """(lab-time makespan, wall seconds) of a full concurrent calibration of a loaded station
    from scratch into a temporary data directory (the station's load is not timed); closes
    the station."""
    try:
        with tempfile.TemporaryDirectory() as data:
            t0 = time.perf_counter()
            report = calibrate(bundle, data_dir=data)
            wall = time.perf_counter() - t0
    finally:
        bundle.close()
    if not report.ok:
        raise RuntimeError(f"calibration did not complete:\n{report.table()}")
    return report.makespan_s, wall


def run() -> dict[str, float]:
    """Calibrate the 2-node link (``sim_link``) and the 16-node chain (``chain:16``) from
    scratch, concurrently (the default), each on its lab's seed.

    - ``network.makespan_ratio_16_vs_2``: lab-time makespan (first step's start to last
      step's end on the virtual clock) of the 16-node chain over that of the 2-node link, both
      measured here. Goal <= 1.5 (one step after another it is about 8 or more).
    - ``network.calibrate_16_wall_s``: wall seconds of the 16-node chain's calibration
      in-process (every calibration with its runs, fits and figures; station load not
      included); an absolute time. Goal <= 60 s.
    """
    chain = stations.load(CHAIN)
    chain_makespan, chain_wall = _calibrate(chain)
    link_makespan, _ = _calibrate(stations.load(LINK))
    return {"network.makespan_ratio_16_vs_2": chain_makespan / link_makespan,
            "network.calibrate_16_wall_s": chain_wall}
