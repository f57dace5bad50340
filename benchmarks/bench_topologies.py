"""Generated-topology figures: how loading a station scales with the size of the network.

- ``topology.load_chain64_wall_s``: wall time of ``qnetlab.stations.load("chain:64")`` (384
  station components: 64 nodes of five instruments, 63 heralding-station QNUs, the topology),
  the lab and station files already generated, the lab's world built in the load (as in a
  fresh process); QCoDeS reads every parameter of every instrument
  for the snapshot. Goal < 20 s.
- ``topology.load_per_instrument_64_vs_2``: seconds per instrument of that load over seconds
  per instrument of ``stations.load("chain:2")`` (11 instruments) in the same process: 1 means
  loading scales linearly with the network. Goal <= 1.5 (QCoDeS's own ``Station``, which
  re-parses the station file before every instrument, was quadratic).
"""

from __future__ import annotations

import time

from qnetlab import stations


def _load_s(spec: str) -> tuple[float, int]:
    """(wall seconds, instruments) of bringing ``spec`` up; the station is closed again."""
    stations.station_file(spec)  # generate first: generation is not what is timed
    start = time.perf_counter()
    bundle = stations.load(spec)
    elapsed = time.perf_counter() - start
    count = len(bundle.station.components) - 1
    bundle.close()
    return elapsed, count


def run() -> dict[str, float]:
    small_s, small_n = _load_s("chain:2")
    big_s, big_n = _load_s("chain:64")
    return {"topology.load_chain64_wall_s": round(big_s, 2),
            "topology.load_per_instrument_64_vs_2": round((big_s / big_n) / (small_s / small_n),
                                                          3)}
