"""Data-center figures (issue 14): the dynamic switch scheduler against the static baseline.

Both runs use the same simulated data center, ``dc:16,4``: 16 QPUs, 4 heralding
stations and a 32-port (16 x 16) optical switch, world seed 14, target-2030 profile, and the
same seeded stream of requests (``WINDOW_S`` of lab time, ``REQUESTS`` arrivals uniform in it,
random QPU pairs, 10..80 pairs each, minimum fidelity 0.6 / 0.7 / 0.75, maximum time 1..6 s,
priority 0..2). The data center is driven at the level of the simulated QNU link-layer model
(``qnetlab.sim_instruments.fabric.SimFabric``: the world's switch physics, heralding statistics
and states, sampled as the QNU's ``:LINK:CREATE`` samples them, without SCPI and VISA in between:
sixteen full instrument stacks cannot run a minute of lab time in well under a second). Every
link is calibrated before the window (``DataCenter.calibrate``, not timed in the figures).
"""

from __future__ import annotations

import time

import numpy as np

from qnetlab.datacenter import Create, DataCenter, DynamicScheduler, StaticScheduler
from qnetlab.sim_instruments.fabric import SimFabric

WINDOW_S = 60.0
REQUESTS = 600
SLOT_S = 0.5  # the static cycle's slot
REPEATS = 5


def stream(nodes: list[str], seed: int = 2026) -> list[tuple[float, Create]]:
    """The seeded request stream: (arrival lab time, CREATE)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(REQUESTS):
        a, b = (str(x) for x in rng.choice(nodes, 2, replace=False))
        out.append((float(rng.uniform(0, WINDOW_S)), Create(
            a, b, pairs=int(rng.integers(10, 81)),
            min_fidelity=float(rng.choice([0.6, 0.7, 0.75])),
            max_time_s=float(rng.uniform(1.0, 6.0)), priority=int(rng.integers(0, 3)))))
    return out


def simulate(policy: str) -> tuple[DataCenter, SimFabric, float]:
    """One run of the window under ``policy``; returns the data center, its fabric and the
    wall seconds of ``run`` (arrivals, decisions, patching, generation and delivery)."""
    fab = SimFabric.from_spec("dc:16,4", seed=14)
    sched = (StaticScheduler(fab.nodes, fab.stations, slot_s=SLOT_S) if policy == "static"
             else DynamicScheduler())
    dc = DataCenter(fab, sched)
    dc.calibrate()
    for at, create in stream(fab.nodes):
        dc.submit(create, at=at)
    t0 = time.perf_counter()
    dc.run(WINDOW_S)
    return dc, fab, time.perf_counter() - t0


def served(dc: DataCenter) -> int:
    """Requests that got every pair within their maximum time, each at its minimum fidelity."""
    return sum(o.completed for o in dc.outcomes.values())


def fidelity_met(dc: DataCenter, fab: SimFabric) -> float:
    met = total = 0
    for outcome in dc.outcomes.values():
        for ok in outcome.oks:
            sign = 1 if ok.bell_state == "Psi+" else -1
            met += fab.true_fidelity(ok.pair_id, sign, 0.0) >= outcome.create.min_fidelity
            total += 1
    return met / total if total else 0.0


def run() -> dict[str, float]:
    """``dc.served_ratio_vs_static``: requests completed (all pairs within max time, each OK at
    its minimum fidelity) by the dynamic scheduler over those completed by the static baseline
    (a fixed round-robin cycle of QPU-pair matchings, 0.5 s slots), same stream and window.
    ``dc.fidelity_met_fraction``: of every pair the dynamic run delivered, the fraction whose
    hidden TRUE fidelity (``SimFabric.true_fidelity``: its heralded state from the world's true
    parameters at its herald) meets its request's minimum. ``dc.decision_ms``: wall ms per
    ``DynamicScheduler.choose`` call (every decision of the dynamic run, idle ones included).
    ``dc.sim_speedup``: lab seconds of the dynamic run (the 60 s window plus any service that
    ran past it) over the wall seconds of its ``DataCenter.run``. The dynamic run is repeated
    ``REPEATS`` times (the same seeded run each time) and the one with the least wall time
    gives ``decision_ms`` and ``sim_speedup`` (other processes on a shared machine only slow a
    run down)."""
    static, _, _ = simulate("static")
    runs = [simulate("dynamic") for _ in range(REPEATS)]  # identical (seeded): best wall time
    dynamic, fab, wall = min(runs, key=lambda r: r[2])
    return {
        "dc.served_ratio_vs_static": served(dynamic) / max(served(static), 1),
        "dc.fidelity_met_fraction": fidelity_met(dynamic, fab),
        "dc.decision_ms": dynamic.log.ms_per_decision,
        "dc.sim_speedup": dynamic.clock.now() / wall,
    }


def draw(path: str, window: tuple[float, float] = (20.0, 30.0)) -> None:
    """Both schedules of the same stream side by side, ``window`` of lab time, as a PNG."""
    from matplotlib.figure import Figure

    from qnetlab.datacenter.timeline import timeline

    fig = Figure(figsize=(10, 5.5))
    for i, policy in enumerate(("static", "dynamic")):
        dc, fab, _ = simulate(policy)
        ax = fig.add_subplot(2, 1, i + 1)
        timeline(dc.log, fab.stations, ax=ax, window=window,
                 title=f"{policy}: {served(dc)} of {REQUESTS} requests served (colour: "
                       "priority; dark: switch reconfiguring; x: dead patch)")
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 2 and sys.argv[1] == "--timeline":
        draw(sys.argv[2])
    else:
        print(run())
