"""Pump-power scan on one node: the mixing chamber and the transducer against the pump power.

A plain sequence (set, wait on the clock, measure, record), which is what the safety watchdog
guards: run it inside :func:`qnetlab.sequences.safety.guarded` and its waits are interlocked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qnetlab.runstore import RunStore
from qnetlab.sequences.pumps import pumps_emitting
from qnetlab.stations import StationBundle


@dataclass
class PumpScan:
    lab_time: np.ndarray
    power_dbm: np.ndarray
    mxc_k: np.ndarray
    efficiency: np.ndarray
    run_guid: str | None


def pump_power_scan(bundle: StationBundle, node: str, powers_dbm: list[float],
                    dwell_s: float = 120.0, runs: RunStore | None = None) -> PumpScan:
    inst = bundle.node(node)
    pump, fridge, qnu = inst["pump"], inst["fridge"], inst["qnu"]
    runs = runs or RunStore()
    run = runs.run("pump_power_scan", station=bundle.station, clock=bundle.clock, sample=node)
    run.register("lab_time", unit="s")
    for name, unit in (("power", "dBm"), ("mxc_temperature", "K"), ("efficiency", "")):
        run.register(name, unit=unit, setpoints=("lab_time",))
    rows = []
    with run, pumps_emitting(pump, inst["aom"]):
        for power in powers_dbm:
            pump.power(power)
            bundle.clock.sleep(dwell_s)
            row = (bundle.clock.now(), power, fridge.mxc.temperature(),
                   qnu.transducer.efficiency())
            rows.append(row)
            run.add_point(lab_time=row[0], power=row[1], mxc_temperature=row[2],
                          efficiency=row[3])
    data = np.array(rows, float).reshape(-1, 4)
    return PumpScan(data[:, 0], data[:, 1], data[:, 2], data[:, 3], run.guid)
