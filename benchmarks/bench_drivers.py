"""Driver figures: a qnetlab parameter get against stock QCoDeS's, a hardware sweep against a
pointwise sweep."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyvisa
from qcodes.instrument import VisaInstrument
from qcodes.parameters import Parameter

from qnetlab.drivers import QnetlabPumpLaser, QnetlabQNU
from qnetlab.sim_instruments import lab_spec

LAB = lab_spec("node")
PUMP = "TCPIP0::pump-alice.lab::inst0::INSTR"
QNU = "TCPIP0::qnu-alice.lab::inst0::INSTR"


def _best_us(fn, n: int = 3000, rounds: int = 1) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


class StockPump(VisaInstrument):
    """A stock QCoDeS driver of the pump's power: a plain ``VisaInstrument`` subclass with one
    ``add_parameter(get_cmd=":SOUR0:POW?", get_parser=float)``, as a QCoDeS user writes it."""

    default_terminator = "\n"

    def __init__(self, name: str, address: str, **kwargs: Any) -> None:
        super().__init__(name, address, **kwargs)
        self.power: Parameter = self.add_parameter("power", get_cmd=":SOUR0:POW?",
                                                   get_parser=float)


def get_ratio_vs_qcodes_stock(rounds: int = 7) -> float:
    """``driver.get_ratio_vs_qcodes_stock``: time per qnetlab ``QnetlabPumpLaser.power.get()``
    over time per ``StockPump.power.get()`` (stock QCoDeS ``VisaInstrument`` get path: ``ask``
    -> ``ask_raw`` -> pyvisa ``query``), both 3000 gets of the same ``:SOUR0:POW?`` parsed
    with ``float``, on the same @qnetlab backend and instrument, rounds interleaved, best of
    each. Below 1: the qnetlab driver's get costs less than stock QCoDeS's. Goal <= 0.6."""
    pump = QnetlabPumpLaser("bench_pump", PUMP, visalib=LAB, print_connect_message=False)
    stock = StockPump("bench_stock_pump", PUMP, visalib=LAB)
    try:
        ours, theirs = [], []
        for _ in range(rounds):
            theirs.append(_best_us(stock.power.get))
            ours.append(_best_us(pump.power.get))
        return min(ours) / min(theirs)
    finally:
        stock.close()
        pump.close()


def sweep_speedup_vs_pointwise(points: int = 1001) -> float:
    """``laser.sweep_speedup_vs_pointwise``: a 1001-point wavelength scan with photodiode
    readout done point by point (set ``pump.wavelength``, get ``pd_voltage``; best of 3) over
    the same scan as one hardware sweep (program the sweep, run it, read back its wavelengths
    and the photodiode log; best of 5), wall time over wall time."""
    pyvisa.ResourceManager(LAB).visalib.reset_state()
    pump = QnetlabPumpLaser("bench_pump", PUMP, visalib=LAB, print_connect_message=False)
    qnu = QnetlabQNU("bench_qnu", QNU, visalib=LAB, print_connect_message=False)
    try:
        pump.output("on")
        pump.shutter("open")
        start_nm, step_pm = 1550.0, 0.2
        grid = start_nm + step_pm * 1e-3 * np.arange(points)

        t_point = float("inf")
        pointwise = np.empty(points)
        for _ in range(3):
            t0 = time.perf_counter()
            for i, wl in enumerate(grid):
                pump.wavelength(wl)
                pointwise[i] = qnu.transducer.pd_voltage()
            t_point = min(t_point, time.perf_counter() - t0)

        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            pump.sweep.start(start_nm)
            pump.sweep.stop(grid[-1])
            pump.sweep.step(step_pm)
            wavelengths, _ = pump.sweep.run()
            trace = qnu.transducer.pd_log()
            best = min(best, time.perf_counter() - t0)
        assert wavelengths.size == trace.size == points
        return t_point / best
    finally:
        pump.close()
        qnu.close()
        pyvisa.ResourceManager(LAB).visalib.reset_state()


def run() -> dict[str, float]:
    return {
        "driver.get_ratio_vs_qcodes_stock": round(get_ratio_vs_qcodes_stock(), 3),
        "laser.sweep_speedup_vs_pointwise": round(sweep_speedup_vs_pointwise(), 1),
    }
