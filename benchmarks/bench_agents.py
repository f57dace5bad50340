"""Site agents on Ray against site agents in this process.

``network.ray_wall_ratio_vs_inprocess``: wall time of one full calibration (the default
calibration graph, every target, fresh data directory) of the served three-node chain as four
sites (alice, bob, carol; both heralding stations on site ``hub``) with one Ray actor per site
(a local Ray instance started here: 2 CPUs, one ``site:<name>`` resource per site, no
dashboard), divided by the wall time of the same calibration with the four agents in this
process. Both reach the instruments over TCP from a served lab (``qnetlab sim serve
qnetlab.sim_instruments.labs:chain.yaml --speed 5000 --seed 20261126``, a fresh process for
each run, so both calibrate the same world); only the ``calibrate`` call is timed (bringing the
agents up is not). Goal <= 2.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import yaml

SPEED = "5000"
SEED = "20261126"
CHAIN_LAB = "qnetlab.sim_instruments.labs:chain.yaml"
SITES = ("alice", "bob", "carol", "hub")


@contextlib.contextmanager
def _served_chain(folder: Path) -> Iterator[Path]:
    """A served chain lab in a process of its own; the four-site station file that reaches
    it (both heralding stations on site 'hub')."""
    out = folder / "served.station.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "qnetlab", "sim", "serve", CHAIN_LAB,
                             "--speed", SPEED, "--seed", SEED, "--station-out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not out.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"qnetlab sim serve {CHAIN_LAB} did not start")
            time.sleep(0.05)
        raw = yaml.safe_load(out.read_text())
        for herald in raw["instruments"]["network"]["init"]["heralds"].values():
            herald["site"] = "hub"
        path = folder / "four_sites.station.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        yield path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _calibration_wall_s(cluster: str | None) -> float:
    from qnetlab.agents import load_agents
    from qnetlab.sequences.calibration import calibrate

    with tempfile.TemporaryDirectory() as tmp, _served_chain(Path(tmp)) as station:
        bundle = load_agents(station, cluster=cluster)
        try:
            t0 = time.perf_counter()
            report = calibrate(bundle, data_dir=Path(tmp) / "data")
            wall = time.perf_counter() - t0
        finally:
            bundle.close()
    if not report.ok:
        raise RuntimeError(f"calibration on {cluster or 'in-process'} agents failed:\n"
                           f"{report.table()}")
    return wall


def run() -> dict[str, float]:
    import ray

    inprocess = _calibration_wall_s(None)
    os.environ.setdefault("RAY_AUTH_TOKEN", uuid.uuid4().hex)  # token auth on, nothing saved
    ray.init(num_cpus=2, resources={f"site:{s}": 1 for s in SITES}, include_dashboard=False,
             namespace="qnetlab", log_to_driver=False)
    try:
        on_ray = _calibration_wall_s("auto")
    finally:
        ray.shutdown()
    print(f"four-site chain calibration: in-process agents {inprocess:.1f} s, Ray actors "
          f"{on_ray:.1f} s", file=sys.stderr)
    return {"network.ray_wall_ratio_vs_inprocess": on_ray / inprocess}
