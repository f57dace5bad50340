"""Served-lab figures: the lab over TCP (``qnetlab sim serve``) as a driver on ``@py`` sees it.

The served lab runs in a process of its own (as a user runs it), so client and server do not
share one interpreter lock; the baseline echo server does too.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from qnetlab.clock import ServedClock
from qnetlab.drivers import QnetlabQNU

SPEED = 10_000.0  # lab seconds per wall second: a 20 s tag recording takes 2 ms
POINTS = 1_000_000
ECHO = """
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept(); conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while data := conn.recv(65536):
    conn.sendall(data)
"""


def _serve(folder: Path) -> tuple[subprocess.Popen, dict]:
    out = folder / "served.station.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "qnetlab", "sim", "serve", "--speed",
                             str(SPEED), "--station-out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not out.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("qnetlab sim serve did not start")
        time.sleep(0.05)
    return proc, yaml.safe_load(out.read_text())["instruments"]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _qnu(spec: dict, name: str, clock: ServedClock | None = None) -> QnetlabQNU:
    return QnetlabQNU(name, spec["address"], visalib="@py", timeout=30, clock=clock,
                      print_connect_message=False)


def _per_call_us(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def _echo_server() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def query_ratio_vs_socket(instruments: dict, n: int = 1000, rounds: int = 9) -> float:
    """``served.query_ratio_vs_socket``: time per ``qnu.transducer.measure_time.get()`` (a
    qnetlab driver parameter get, ``XDUC:MEAS:TIME?``, which costs no lab time) on ``@py`` over
    TCP to the served lab, over time per round trip of the same 16-byte request through a bare
    loopback socket echo server in a process of its own (client socket with the OS defaults,
    as pyvisa-py opens it). Both connections stay open and the rounds alternate (1000 calls
    each, 9 rounds of each), all processes on one CPU (:func:`one_cpu`), so both sides see the
    same machine state; the ratio of the best round of each."""
    qnu = _qnu(instruments["qnu_alice"], "bench_served_qnu")
    proc, port = _echo_server()
    message = b"XDUC:MEAS:TIME?\n"
    try:
        with socket.create_connection(("127.0.0.1", port)) as sock:

            def echo() -> None:
                sock.sendall(message)
                got = b""
                while not got.endswith(b"\n"):
                    got += sock.recv(65536)

            served, bare = [], []
            for _ in range(rounds):
                served.append(_per_call_us(qnu.transducer.measure_time.get, n))
                bare.append(_per_call_us(echo, n))
    finally:
        qnu.close()
        proc.kill()
        proc.wait()
    return min(served) / min(bare)


def binary_1m_ms(instruments: dict, rounds: int = 3) -> float:
    """``served.binary_1m_ms``: wall ms for the heralding station's QNU driver to read a
    1,000,000-point block of 8-byte values over TCP on ``@py`` (the first 1,000,000 time tags
    of a 21 s recording, ``TAG:STR:TIME? 0,1000000``: an IEEE-488.2 block of 8 MB read to its
    declared length by the driver's binary reader), best of 3; the recording itself is not
    timed."""
    clock = instruments["lab_clock"]["init"]
    qnu = _qnu(instruments["herald_mid"], "bench_served_herald",
               ServedClock(clock["host"], clock["port"]))  # waits in the served lab's time
    try:
        qnu.tagger.record(21.0)
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            raw = qnu._query_binary(f"TAG:STR:TIME? 0,{POINTS}")
            best = min(best, time.perf_counter() - t0)
            if len(raw) != 8 * POINTS:
                raise RuntimeError(f"read {len(raw)} bytes, expected {8 * POINTS}")
        return best * 1e3
    finally:
        qnu.close()


@contextlib.contextmanager
def one_cpu() -> Iterator[None]:
    """Run this process and the servers it starts (they inherit it) on one CPU, then restore.

    On this kind of machine a round trip between processes on two CPUs costs about three times
    one on the same CPU (idle-state exits, cross-CPU wake-ups), and where the scheduler puts
    each process changes from run to run: the echo baseline alone measured 16 or 47 us in the
    same minute. On one CPU both the served lab and the echo baseline see the same scheduling,
    so the ratio compares the work, not the placement."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder, one_cpu():
        proc, instruments = _serve(Path(folder))
        try:
            return {"served.query_ratio_vs_socket": query_ratio_vs_socket(instruments),
                    "served.binary_1m_ms": binary_1m_ms(instruments)}
        finally:
            _stop(proc)


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    print(run())
