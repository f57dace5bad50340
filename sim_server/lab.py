"""``ServedLab``: every resource of a lab file on a TCP port of 127.0.0.1, one world behind."""

from __future__ import annotations

import selectors
import threading
from dataclasses import dataclass
from typing import Any

from pyvisa import rname

from pyvisa_qnetlab import private_library

from .endpoints import ClockEndpoint, InstrumentEndpoint
from .pacing import PacedClock
from .wire import POLL_S, Address, listen, log

JOIN_S = 5.0


@dataclass(frozen=True)
class ServedResource:
    """Where a resource of the lab file is served."""

    resource: str  # the lab file's resource name (canonical)
    port: int
    max_clients: int | None

    @property
    def address(self) -> str:
        """The VISA address a client opens (raw socket, pyvisa-py ``@py``)."""
        return f"TCPIP0::127.0.0.1::{self.port}::SOCKET"


def _int_option(resource: str, key: str, value: Any, low: int, high: int, allowed: str) -> int:
    """An ``x-serve`` integer (pyvisa-sim's loader keeps scalars as strings), range-checked."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = None
    if isinstance(value, bool) or number is None or not low <= number <= high:
        raise ValueError(f"{resource}: x-serve.{key}={value!r}: must be {allowed}")
    return number


def _max_clients(resource: str, options: dict[str, Any]) -> int | None:
    value = options.get("max_clients")
    if value is None:
        return None
    return _int_option(resource, "max_clients", value, 1, 1 << 30, "an integer >= 1")


def _bind(resource: str, declared: Any, next_port: list[int] | None) -> Any:
    """A listening socket: the declared port when free, else the next free one from
    ``--port-base`` (``next_port``), else any free port."""
    if declared is not None:
        port = _int_option(resource, "port", declared, 1, 65535, "a TCP port 1..65535")
        try:
            return listen(port)
        except OSError:
            log.info("%s: port %d is taken, assigning another", resource, port)
    while next_port is not None and next_port[0] < 65536:
        port = next_port[0]
        next_port[0] += 1
        try:
            return listen(port)
        except OSError:
            continue
    return listen(0)


class ServedLab:
    """A lab file served over TCP: ``with ServedLab(lab, speed=100) as served: ...``.

    Args:
        lab: a lab file path or ``package.module:file.yaml``.
        speed: lab seconds per wall second (1: real time).
        port_base: assign ports from here upwards (default: any free port).
        declared_ports: use the lab file's ``x-serve: {port: N}`` where free (a CI fixture
            turns this off so that it never takes a well-known port).
        seed: the world's seed (default: the lab file's).
        profile: the device profile of the world (default: the lab file's; an unknown name is
            a one-line ValueError listing the profiles).
    """

    def __init__(self, lab: str, *, speed: float = 1.0, port_base: int | None = None,
                 declared_ports: bool = True, seed: int | None = None,
                 profile: str | None = None) -> None:
        if port_base is not None and not 1 <= port_base <= 65535:
            raise ValueError(f"port_base={port_base!r}: must be a TCP port 1..65535")
        self.library = private_library(lab)
        if seed is not None or profile is not None:
            self.library.reset_state(seed if seed is not None else self.library.lab.seed,
                                     profile)
        self.pacer = PacedClock(self.library.clock, speed)
        self._port_base = port_base
        self._declared_ports = declared_ports
        self._stop = threading.Event()
        self._addresses: list[Address] = []
        self._thread: threading.Thread | None = None
        self.clock_port = 0

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> ServedLab:
        """Open every port and start accepting; the ports are known when this returns."""
        next_port = [self._port_base] if self._port_base is not None else None
        try:
            for resource, options in self.library.serve_options().items():
                declared = options.get("port") if self._declared_ports else None
                max_clients = _max_clients(resource, options)
                sock = _bind(resource, declared, next_port)
                endpoint = InstrumentEndpoint(self.library, resource, self.pacer)
                self._addresses.append(Address(resource, endpoint, sock, max_clients))
            clock = ClockEndpoint(self.library, self.pacer)
            self._addresses.append(Address("clock", clock, _bind("clock", None, next_port), None))
        except BaseException:
            self._close_listeners()
            raise
        self.clock_port = self._addresses[-1].port
        self._thread = threading.Thread(target=self._accept_loop, name="qnetlab-served-accept",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection and join every thread (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JOIN_S)
        self._close_listeners()
        for address in self._addresses:
            for conn in list(address.connections):
                conn.thread.join(JOIN_S)
            address.connections.clear()

    def __enter__(self) -> ServedLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _close_listeners(self) -> None:
        for address in self._addresses:
            address.sock.close()

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            for address in self._addresses:
                selector.register(address.sock, selectors.EVENT_READ, address)
            while not self._stop.is_set():
                for key, _ in selector.select(POLL_S):
                    try:
                        key.data.accept(self.pacer, self._stop)
                    except OSError as exc:
                        log.warning("%s: accept failed: %s", key.data.name, exc)

    # --- what clients and tests see -----------------------------------------------------------
    @property
    def resources(self) -> list[ServedResource]:
        """Every served instrument with its port (the lab-clock socket not included)."""
        return [ServedResource(a.name, a.port, a.max_clients) for a in self._addresses
                if a.name != "clock"]

    def address_of(self, resource: str) -> str:
        """The ``TCPIP0::127.0.0.1::<port>::SOCKET`` address serving a lab file resource."""
        canonical = rname.to_canonical_name(resource)
        for served in self.resources:
            if served.resource == canonical:
                return served.address
        raise KeyError(f"resource {resource!r} is not served (served: "
                       f"{[s.resource for s in self.resources]})")

    def resource_at(self, address: str) -> str:
        """The lab file resource served at ``address`` (e.g. a station instrument's)."""
        for served in self.resources:
            if served.address == address:
                return served.resource
        raise KeyError(f"{address!r} is not an address of this served lab")

    @property
    def faults(self) -> Any:
        """The lab's fault injector (``library.faults``): acts on the sockets too.

        The lab clock is caught up with the paced time first (it only moves when a request
        comes), so a fault's start and duration count from the served lab's present, not from
        its last request."""
        with self.library.lock:
            self.pacer.catch_up()
        return self.library.faults

    @property
    def speed(self) -> float:
        return self.pacer.speed

    def connections(self) -> int:
        """Open client connections (all addresses)."""
        return sum(1 for a in self._addresses for c in list(a.connections) if c.thread.is_alive())
