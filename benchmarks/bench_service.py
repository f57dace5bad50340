"""Service figures: `qnetlab serve` on loopback, run in a process of its own as a user runs it.

- ``service.status_p99_ms``: the 99th percentile of the wall time of ``GET /api/status``
  (anonymous, loopback), from send to the whole JSON body received, with 50 clients (one
  keep-alive connection each, a lean asyncio HTTP/1.1 client) asking back to back, 40 times
  each (2,000 samples), after one warm-up request each. Goal <= 50 ms.
- ``service.request_overhead_ratio``: the wall time of a 1,000-pair entanglement request
  (link ab of the built-in sim_link as never calibrated, bases X,Y,Z, up to a lab day)
  through the API (``POST /api/requests?wait``,
  from send to the finished job's reply) over the same request through the Python API
  (``generate`` on the station's in-process site agents brought up in this process
  (``load_agents``), each site guarded by its own watchdog (poll 5 s), as the service and the
  CLI bring the station up), both on a fresh data directory and the same seeded lab, median
  of 5 alternating repetitions, both processes on one CPU. Goal <= 1.2.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIENTS, ROUNDS, REPEATS, PAIRS = 50, 40, 5, 1000
MAX_TIME_S = 86400.0  # lab seconds: the never-calibrated link makes ~0.2 pairs/s
REQUEST = {"link": "ab", "pairs": PAIRS, "bases": ["X", "Y", "Z"], "max_time_s": MAX_TIME_S}


def _service(data: Path) -> object:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from test_service_harness import make_keys, start

    return start(data, "--pace", "0", "--maintain-every", "0", keys=make_keys(data))


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """One keep-alive ``GET /api/status``: the whole body read (Content-Length)."""
    writer.write(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    body = await reader.readexactly(length)
    if status != b"200":
        raise RuntimeError(f"status endpoint answered {status!r}: {body[:200]!r}")
    return body


async def _status_latencies(port: int) -> list[float]:
    """50 clients, each on its own connection; a lean HTTP/1.1 client, so that the figure is
    the server's (a full client library would spend as much CPU as the server per call)."""
    async def client(out: list[float]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await _get(reader, writer)  # warm-up
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                await _get(reader, writer)
                out.append(time.perf_counter() - t0)
        finally:
            writer.close()

    out: list[float] = []
    await asyncio.gather(*(client(out) for _ in range(CLIENTS)))
    return out


def status_p99_ms(port: int) -> float:
    samples = sorted(asyncio.run(_status_latencies(port)))
    return 1e3 * samples[int(0.99 * (len(samples) - 1))]


def _python_request(bundle: object, runs: object) -> float:
    from qnetlab.sequences.entanglement import generate

    t0 = time.perf_counter()
    with bundle.guarded() as safe:  # waits go through each site's own watchdog, as in the service
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
    from qnetlab.agents import load_agents
    from qnetlab.runstore import RunStore

    bundle = load_agents("sim_link")
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
    sys.path.insert(0, str(HERE))
    from bench_served import one_cpu  # the same one-CPU placement as the served figures

    figures = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in ("status", "served", "local"):
            (Path(folder) / name).mkdir()
        served = _service(Path(folder) / "status")
        try:
            figures["service.status_p99_ms"] = status_p99_ms(served.port)
        finally:
            served.stop()
        with one_cpu():
            served = _service(Path(folder) / "served")
            try:
                figures["service.request_overhead_ratio"] = request_overhead_ratio(
                    served, Path(folder) / "local")
            finally:
                served.stop()
    return figures


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    print(run())
