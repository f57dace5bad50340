"""Driver figures: QCoDeS parameter get overhead (the laser sweep figure: bench_laser.py)."""

from __future__ import annotations

import time

import pyvisa

from qnetlab.drivers import QnetlabPumpLaser
from qnetlab.sim_instruments import lab_spec

LAB = lab_spec("node")
PUMP = "TCPIP0::pump-alice.lab::inst0::INSTR"


def _best_us(fn, n: int = 3000, rounds: int = 1) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def get_ratio_vs_raw(rounds: int = 7) -> float:
    """``driver.get_ratio_vs_raw``: time per QCoDeS ``pump.power.get()`` (3000 gets) over time
    per raw pyvisa ``resource.query(":SOUR0:POW?")`` on the same @qnetlab backend and
    instrument, rounds interleaved, best of each: the QCoDeS driver's overhead factor."""
    pump = QnetlabPumpLaser("bench_pump", PUMP, visalib=LAB, print_connect_message=False)
    raw = pyvisa.ResourceManager(LAB).open_resource(PUMP, read_termination="\n",
                                                    write_termination="\n")
    try:
        r, d = [], []
        for _ in range(rounds):
            r.append(_best_us(lambda: raw.query(":SOUR0:POW?")))
            d.append(_best_us(pump.power.get))
        return min(d) / min(r)
    finally:
        raw.close()
        pump.close()


def run() -> dict[str, float]:
    return {
        "driver.get_ratio_vs_raw": round(get_ratio_vs_raw(), 3),
    }
