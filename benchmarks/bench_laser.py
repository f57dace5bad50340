"""Laser figure: lab time of a pointwise wavelength scan against one hardware sweep."""

from __future__ import annotations

import numpy as np
import pyvisa

from qnetlab.drivers import QnetlabAomGate, QnetlabPumpLaser, QnetlabQNU
from qnetlab.sim_instruments import lab_spec

LAB = lab_spec("node")
PUMP = "TCPIP0::pump-alice.lab::inst0::INSTR"
AOM = "TCPIP0::aom-alice.lab::5025::SOCKET"
QNU = "TCPIP0::qnu-alice.lab::inst0::INSTR"


def _pointwise(pump, qnu, grid: np.ndarray) -> float:
    """Lab seconds to set each wavelength (the product's tuning settle each time) and read the
    transducer's photodiode there."""
    t0 = pump.clock.now()
    for wl in grid:
        pump.wavelength(wl)
        qnu.transducer.pd_voltage()
    return pump.clock.now() - t0


def _swept(pump, qnu, grid: np.ndarray, step_pm: float) -> float:
    """Lab seconds to program one continuous sweep with lambda logging, run it (polled on the
    lab clock) and read back the wavelength log and the photodiode log."""
    t0 = pump.clock.now()
    pump.sweep.start(grid[0])
    pump.sweep.stop(grid[-1])
    pump.sweep.step(step_pm)
    pump.sweep.speed(1.0)
    wavelengths = pump.sweep.run()
    trace = qnu.transducer.pd_log()
    assert wavelengths.size == trace.size == grid.size
    return pump.clock.now() - t0


def sweep_lab_speedup_vs_pointwise(points: int = 1001) -> float:
    """``laser.sweep_lab_speedup_vs_pointwise``: lab time (the simulated lab's virtual clock)
    of a 1,001-point wavelength scan done point by point (set ``pump.wavelength``, which costs
    the N7776C's tuning settle, then read the photodiode ``pd_voltage``) over the lab time of
    the same scan (0.2 pm steps) as one continuous hardware sweep at 1 nm/s with lambda
    logging (program, run, poll to its end on the lab clock, read the wavelength and
    photodiode logs), both in this process on the built-in node lab. Goal >= 50."""
    pyvisa.ResourceManager(LAB).visalib.reset_state()
    pump = QnetlabPumpLaser("bench_pump", PUMP, visalib=LAB, print_connect_message=False)
    gate = QnetlabAomGate("bench_aom", AOM, visalib=LAB, print_connect_message=False)
    qnu = QnetlabQNU("bench_qnu", QNU, visalib=LAB, print_connect_message=False)
    try:
        pump.output("on")
        gate.gate_mode("cw")
        gate.open_gate()
        start_nm, step_pm = 1550.0, 0.2
        grid = start_nm + step_pm * 1e-3 * np.arange(points)
        return _pointwise(pump, qnu, grid) / _swept(pump, qnu, grid, step_pm)
    finally:
        for inst in (pump, gate, qnu):
            inst.close()
        pyvisa.ResourceManager(LAB).visalib.reset_state()


def run() -> dict[str, float]:
    return {"laser.sweep_lab_speedup_vs_pointwise": round(sweep_lab_speedup_vs_pointwise(), 1)}
