"""Starting the service: the safety checks on where it binds, the one-server-per-data-dir lock,
TLS, then uvicorn serving the app while the executor runs the lab.

The service refuses to bind a non-loopback address without TLS and without at least one
active API key; TLS is on by default there (a self-signed certificate made on first start),
optional on loopback (``--tls``). ``--client-ca`` turns on mutual TLS: only clients with a
certificate signed by that CA can connect at all.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SWITCH_INTERVAL_S = 0.001


class ServeError(Exception):
    """The service cannot start as asked (one line: why, and what to do)."""


@dataclass
class ServeOptions:
    station: str
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8765
    tls: bool | None = None  # None: on for a non-loopback host, off on loopback
    client_ca: Path | None = None
    pace: float = 1.0
    maintain_every_s: float = 3600.0
    tick_s: float = 1.0  # idle: lab time passes, the watchdog polls, the snapshot is read


def loopback_host(host: str) -> bool:
    """True if ``host`` binds only loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


def check_binding(opts: ServeOptions, active_keys: int) -> bool:
    """Whether TLS is used; :class:`ServeError` if binding this way is not allowed."""
    loopback = loopback_host(opts.host)
    tls = (not loopback) if opts.tls is None else opts.tls
    if opts.client_ca is not None:
        tls = True
    if not loopback and not tls:
        raise ServeError(f"--host {opts.host} is not loopback: the service refuses to serve it "
                         "without TLS (drop --no-tls)")
    if not loopback and active_keys == 0:
        raise ServeError(f"--host {opts.host} is not loopback: the service refuses to serve it "
                         "without an API key; create one with `qnetlab serve keys create "
                         "--role admin --expires 30d`")
    return tls


class ServeLock:
    """One service per data directory (it owns the station and marks dead jobs)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "service" / "serve.lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ServeError(f"data directory {self.path.parent.parent} is already served "
                             f"(pid {holder}); stop that service or use another --data") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def serve(opts: ServeOptions, echo: Any = print) -> None:
    """Run the service until SIGINT/SIGTERM; the lab ends in its safe state."""
    import uvicorn

    from qnetlab import stations
    from qnetlab.sequences.calibration import CalibrationGraph, default_calibrations

    from .app import Service, StatusFastPath, create_app
    from .audit import AuditLog
    from .executor import Executor
    from .lab import Lab
    from .store import ServiceStore

    # The lab thread is CPU-bound while it works; the event loop answers callers between its
    # time slices. A 1 ms switch interval (default 5) keeps a reply from waiting 5 ms per
    # socket operation behind it.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    topology = stations.read_topology(stations.station_file(opts.station))
    store = ServiceStore(opts.data_dir)
    tls = check_binding(opts, store.active_keys())
    lock = ServeLock(opts.data_dir)
    lock.acquire()
    try:
        ssl_args = _ssl_args(opts) if tls else {}
        audit = AuditLog(opts.data_dir)
        lab = Lab(opts.station, opts.data_dir, pace=opts.pace,
                  maintain_every_s=opts.maintain_every_s)
        executor = Executor(store, lab, opts.data_dir, tick_s=opts.tick_s)
        interrupted = executor.start()
        audit.append("service", "start", f"pid {os.getpid()}",
                     f"{len(interrupted)} job(s) left running by a dead process marked "
                     f"interrupted: {[j['id'] for j in interrupted]}")
        svc = Service(store, audit, lab, executor, opts.data_dir, opts.station, topology,
                      CalibrationGraph(default_calibrations(), topology))
        scheme = "https" if tls else "http"
        echo(f"qnetlab serve: {scheme}://{opts.host}:{opts.port}/ (station {opts.station}, "
             f"data {opts.data_dir}{', mutual TLS' if opts.client_ca else ''})")
        config = uvicorn.Config(StatusFastPath(create_app(svc), svc), host=opts.host, port=opts.port,
                                log_level="warning", timeout_graceful_shutdown=3,
                                access_log=False, **ssl_args)
        try:
            uvicorn.Server(config).run()
        except KeyboardInterrupt:  # uvicorn re-raises the SIGINT/SIGTERM it shut down on
            pass
        finally:
            executor.stop()
            audit.append("service", "stop", f"pid {os.getpid()}", "lab in its safe state")
        echo("qnetlab serve: stopped; the lab is in its safe state")
    finally:
        lock.release()


def _ssl_args(opts: ServeOptions) -> dict[str, Any]:
    from .tls import ensure_certificate

    cert, key = ensure_certificate(opts.data_dir, opts.host)
    args: dict[str, Any] = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    if opts.client_ca is not None:
        if not opts.client_ca.is_file():
            raise ServeError(f"--client-ca {opts.client_ca} is not a file")
        args.update(ssl_ca_certs=str(opts.client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return args
