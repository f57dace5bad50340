"""Simulated-lab figures: query overhead against stock pyvisa-sim, binary block round trip."""

from __future__ import annotations

import statistics
import time
from importlib.resources import files

import numpy as np
import pyvisa

from qnetlab.sim_instruments import lab_spec

PUMP = "TCPIP0::pump-alice.lab::inst0::INSTR"
POW_Q = "[:SOURce[0]]:POWer[:LEVel][:IMMediate][:AMPLitude]?"  # as the YAML writes it (@sim)


def _per_query_us(inst, query: str, n: int = 3000) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        inst.query(query)
    return (time.perf_counter() - t0) / n * 1e6


def query_ratio_vs_stock(rounds: int = 7) -> float:
    """``sim.query_ratio_vs_stock``: time per query (3000 queries) of the power query in its
    literal YAML spelling (``POW_Q``) through the @qnetlab backend over the same query of the same
    YAML property through stock pyvisa-sim (@sim), rounds interleaved, best of each. 1.0: the
    physics layer costs nothing on a static property; lower is faster."""
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
    """``sim.binary_100k_ms``: median wall milliseconds of one ``query_binary_values`` of the
    pump laser's logged wavelength sweep (a 100,000-point float64 IEEE 488.2 block), write,
    read and decode, over @qnetlab. An absolute time (stock pyvisa-sim cannot return binary
    blocks at all, so there is no baseline to divide by)."""
    rm = pyvisa.ResourceManager(lab_spec("node"))
    rm.visalib.reset_state()
    pump = rm.open_resource(PUMP, read_termination="\n", write_termination="\n")
    for cmd in (":SOUR0:WAV:SWE:MODE CONT", ":SOUR0:WAV:SWE:LLOG 1", ":TRIG0:OUTP STF",
                ":SOUR0:WAV:SWE:STAR 1.55e-06", ":SOUR0:WAV:SWE:STEP 1e-13",
                ":SOUR0:WAV:SWE:STOP 1.5599999e-06", ":SOUR0:WAV:SWE:SPE 2e-7",
                ":SOUR0:WAV:SWE STAR"):  # a continuous sweep with lambda logging, as the N7776C
        pump.write(cmd)
    rm.visalib.clock.advance(1.0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        data = pump.query_binary_values(":SOUR0:READ:DATA? LLOG", datatype="d", container=np.array)
        times.append(time.perf_counter() - t0)
    if data.size != 100_000:
        raise RuntimeError(f"the logged sweep has {data.size} points, expected 100,000; "
                           f"instrument says {pump.query(':SYST:ERR?')}")
    pump.close()
    rm.visalib.reset_state()
    return statistics.median(times) * 1e3


def run() -> dict[str, float]:
    return {
        "sim.query_ratio_vs_stock": round(query_ratio_vs_stock(), 3),
        "sim.binary_100k_ms": round(binary_100k_ms(), 3),
    }
