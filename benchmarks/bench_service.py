"""Service figures: `qnetlab serve` on loopback, run in a process of its own as a user runs it.

- ``service.status_p99_ms``: the 99th percentile of the wall time of ``GET /api/status``
  (anonymous, loopback), from send to the whole JSON body received, with 50 clients
  (asyncio + httpx, one connection each) asking back to back, 40 times each (2,000 samples),
  after one warm-up round. Goal <= 50 ms.
- ``service.request_overhead_ratio``: the wall time of a 1,000-pair entanglement request
  (link ab of the built-in sim_link as never calibrated, bases X,Y,Z, up to a lab day)
  through the API (``POST /api/requests?wait``,
  from send to the finished job's reply) over the same request through the Python API
  (``generate`` on a station brought up in this process, guarded by the same watchdog
  (``default_watchdog``, poll 5 s) as the service and the CLI use), both on a fresh data
  directory and the same seeded lab, median of 3 alternating repetitions. Goal <= 1.2.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
CLIENTS, ROUNDS, REPEATS, PAIRS = 50, 40, 3, 1000
MAX_TIME_S = 86400.0  # lab seconds: the never-calibrated link makes ~0.2 pairs/s
REQUEST = {"link": "ab", "pairs": PAIRS, "bases": ["X", "Y", "Z"], "max_time_s": MAX_TIME_S}


def _service(data: Path) -> object:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from test_service_harness import make_keys, start

    return start(data, "--pace", "0", "--maintain-every", "0", keys=make_keys(data))


async def _status_latencies(url: str) -> list[float]:
    async def client(out: list[float]) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=300.0) as c:
            await c.get("/api/status")  # warm-up: connection made
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                r = await c.get("/api/status")
                r.raise_for_status()
                out.append(time.perf_counter() - t0)

    out: list[float] = []
    await asyncio.gather(*(client(out) for _ in range(CLIENTS)))
    return out


def status_p99_ms(url: str) -> float:
    samples = sorted(asyncio.run(_status_latencies(url)))
    return 1e3 * samples[int(0.99 * (len(samples) - 1))]


def _python_request(bundle: object, runs: object) -> float:
    from qnetlab.sequences.entanglement import generate
    from qnetlab.sequences.safety import default_watchdog, guarded

    watchdog = default_watchdog(bundle, poll_s=5.0)
    t0 = time.perf_counter()
    with guarded(bundle, watchdog) as safe:
        gen = generate(safe, "ab", PAIRS, bases=("X", "Y", "Z"), runs=runs,
                       name="service.request", max_time_s=MAX_TIME_S)
    wall = time.perf_counter() - t0
    assert len(gen) == PAIRS
    return wall


def _api_request(served: object) -> float:
    with served.client("operator") as c:
        t0 = time.perf_counter()
        job = c.post("/api/requests", params={"wait": 600}, json=REQUEST).json()
        wall = time.perf_counter() - t0
    assert job["state"] == "done" and job["result"]["delivered_pairs"] == PAIRS, job
    return wall


def request_overhead_ratio(served: object, folder: Path) -> float:
    from qnetlab import stations
    from qnetlab.runstore import RunStore

    bundle = stations.load("sim_link")
    try:
        runs = RunStore(folder)
        api, python = [], []
        for _ in range(REPEATS):
            python.append(_python_request(bundle, runs))
            api.append(_api_request(served))
    finally:
        bundle.close()
    return statistics.median(api) / statistics.median(python)


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        data, local = Path(folder) / "served", Path(folder) / "local"
        data.mkdir()
        local.mkdir()
        served = _service(data)
        try:
            return {"service.status_p99_ms": status_p99_ms(served.url),
                    "service.request_overhead_ratio": request_overhead_ratio(served, local)}
        finally:
            served.stop()


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    print(run())
