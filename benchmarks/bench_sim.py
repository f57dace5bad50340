"""Simulated-lab figures: query overhead against stock pyvisa-sim, binary blocks, attempt rate."""

from __future__ import annotations

import statistics
import time
from importlib.resources import files

import numpy as np
import pyvisa

from qnetlab.sim_instruments import lab_spec
from qnetlab.sim_instruments.physics.heralding import (
    HeraldSetup,
    NodeOptics,
    false_state,
    probabilities,
    sample_heralds,
    sample_outcomes,
    true_state,
)

PUMP = "TCPIP0::pump-alice.lab::inst0::INSTR"
POW_Q = "[:SOURce[0]]:POWer[:LEVel][:IMMediate][:AMPLitude]?"  # as the YAML writes it (@sim)


def _per_query_us(inst, query: str, n: int = 3000) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        inst.query(query)
    return (time.perf_counter() - t0) / n * 1e6


def query_ratio_vs_stock(rounds: int = 7) -> float:
    """@qnetlab over stock @sim, same YAML property (POW_Q, literally), interleaved, best of rounds."""
    stock_rm = pyvisa.ResourceManager(f"{files('qnetlab.sim_instruments') / 'pump_laser.yaml'}@sim")
    stock = stock_rm.open_resource("TCPIP0::pump.lab::inst0::INSTR", read_termination="\n",
                                   write_termination="\n")
    ours_rm = pyvisa.ResourceManager(lab_spec("node"))
    ours = ours_rm.open_resource(PUMP, read_termination="\n", write_termination="\n")
    s, q = [], []
    for _ in range(rounds):
        s.append(_per_query_us(stock, POW_Q))
        q.append(_per_query_us(ours, POW_Q))
    stock.close(), ours.close()
    return min(q) / min(s)


def binary_100k_ms(repeats: int = 15) -> float:
    """Round trip of a 100,000-point float64 IEEE block (the laser's wavelength log)."""
    rm = pyvisa.ResourceManager(lab_spec("node"))
    rm.visalib.reset_state()
    pump = rm.open_resource(PUMP, read_termination="\n", write_termination="\n")
    for cmd in (":SOUR0:WAV:SWE:STAR 1.55e-06", ":SOUR0:WAV:SWE:STEP 1e-13",
                ":SOUR0:WAV:SWE:STOP 1.5599999e-06", ":SOUR0:WAV:SWE:SPE 2e-7", ":SOUR0:WAV:SWE STAR"):
        pump.write(cmd)
    rm.visalib.clock.advance(1.0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        data = pump.query_binary_values(":SOUR0:READ:DATA? LLOG", datatype="d", container=np.array)
        times.append(time.perf_counter() - t0)
    assert data.size == 100_000, data.size
    pump.close()
    rm.visalib.reset_state()
    return statistics.median(times) * 1e3


def attempts_per_s(p: float = 1e-4, heralds: int = 200_000) -> float:
    """Simulated entanglement attempts per wall second at success probability ``p``."""
    eta = p / (2 * 0.05)
    node = NodeOptics(eta=eta, alpha=0.05, noise_click=0.0, t2_s=1.0)
    setup = HeraldSetup("SING", node, NodeOptics(**vars(node)), 0.0, 0.9, 0.0, 0.1, 2e-5, 2e-5)
    assert abs(probabilities(setup).total - p) / p < 0.01
    rng = np.random.default_rng(1)
    states = [true_state(setup, +1), true_state(setup, -1), false_state(setup)]
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        rec = sample_heralds(setup, heralds, rng, 0.0, 1e18)  # attempts-to-success, per herald
        index = np.where(rec.false, 2, np.where(rec.sign > 0, 0, 1))
        dirs = np.eye(3)[rng.integers(0, 3, size=rec.times_s.size)]
        sample_outcomes(states, index, dirs, dirs, rng)  # joint outcomes in random Pauli bases
        best = max(best, rec.attempts.sum() / (time.perf_counter() - t0))
    return best


def run() -> dict[str, float]:
    return {
        "sim.query_ratio_vs_stock": round(query_ratio_vs_stock(), 3),
        "sim.binary_100k_ms": round(binary_100k_ms(), 3),
        "sim.attempts_per_s": float(f"{attempts_per_s():.3g}"),
    }
