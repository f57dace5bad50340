"""The socket side of the served lab: a listening socket per address, a thread per connection.

A connection reads bytes, cuts them into messages at the endpoint's terminator, hands each to
the endpoint and sends every reply whole (binary blocks included) once the paced lab clock has
reached the reply's ready time, i.e. after cost / speed wall seconds. When the instrument drops
the connection (a disconnect or reboot fault) the socket is reset (RST), as a product's network
stack does when it restarts.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from .endpoints import Endpoint
from .pacing import PacedClock

log = logging.getLogger("qnetlab.sim_server")
POLL_S = 0.05  # how often an idle connection looks at its stop flag and its instrument


def reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer sees 'connection reset', not an orderly close."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """Make ``sock`` blocking with kernel receive/send timeouts (SO_RCVTIMEO/SO_SNDTIMEO): a
    recv or send is then one system call that gives up after ``seconds`` with
    ``BlockingIOError``, where Python's own ``settimeout`` polls before every call (a second
    system call on each request and each reply)."""
    sock.setblocking(True)
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def listen(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port`` (0: any free port); OSError if taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart despite TIME_WAIT
        sock.bind(("127.0.0.1", port))
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


@dataclass(eq=False)
class Address:
    """One served address: its listening socket, endpoint and live connections."""

    name: str  # the lab file's resource name, or "clock"
    endpoint: Endpoint
    sock: socket.socket
    max_clients: int | None  # None: as many as connect
    connections: set[Connection] = field(default_factory=set)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def accept(self, pacer: PacedClock, stop: threading.Event) -> Connection | None:
        """Accept one waiting client; a connection beyond ``max_clients`` or to an instrument
        that is off the network is closed at once, as the product refuses it."""
        try:
            client, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        self.connections = {c for c in self.connections if c.thread.is_alive()}
        if self.max_clients is not None and len(self.connections) >= self.max_clients:
            reset(client)
            log.info("%s: refused a connection (one client at a time)", self.name)
            return None
        try:
            session = self.endpoint.open()
        except ConnectionRefusedError as exc:
            reset(client)
            log.info("refused: %s", exc)
            return None
        conn = Connection(self, client, session, pacer, stop)
        self.connections.add(conn)
        conn.thread.start()
        return conn


class Connection:
    """One client connection: requests in, replies out, in order, on its own thread."""

    def __init__(self, address: Address, sock: socket.socket, session: Any, pacer: PacedClock,
                 stop: threading.Event) -> None:
        self.address = address
        self.sock = sock
        self.session = session
        self.pacer = pacer
        self.stop = stop
        self.thread = threading.Thread(target=self.run, name=f"qnetlab-served-{address.name}",
                                       daemon=True)

    def run(self) -> None:
        endpoint = self.address.endpoint
        end = endpoint.terminator[-1:]
        buffer = bytearray()
        kernel_timeouts(self.sock, POLL_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        dropped = False
        try:
            while not self.stop.is_set():
                if not endpoint.alive(self.session):
                    dropped = True
                    break
                try:
                    data = self.sock.recv(1 << 16)
                except BlockingIOError:  # POLL_S passed without a request
                    continue
                if not data:
                    break  # the client closed
                buffer += data
                while (cut := buffer.find(end)) >= 0:
                    message = bytes(buffer[:cut]).rstrip(b"\r") + endpoint.terminator
                    del buffer[: cut + 1]
                    if not self._answer(message):
                        dropped = True
                        break
                if dropped:
                    break
        except OSError:
            pass  # the client reset or closed mid-exchange
        finally:
            with contextlib.suppress(Exception):
                endpoint.close(self.session)
            if dropped:
                reset(self.sock)
            else:
                with contextlib.suppress(OSError):
                    self.sock.close()

    def _answer(self, message: bytes) -> bool:
        """Handle one message and send its replies when due; False if the instrument dropped
        the connection meanwhile."""
        endpoint = self.address.endpoint
        try:
            replies = endpoint.exchange(self.session, message)
        except ConnectionResetError:
            return False
        for data, ready in replies:
            waited = False
            while (wait := self.pacer.wall_until(ready)) > 0:
                waited = True
                if self.stop.is_set() or self._interrupted(min(wait, POLL_S)):
                    return True  # shutting down, or a new message: the reply is dropped
                if not endpoint.alive(self.session):
                    return False
            if waited and not endpoint.alive(self.session):
                return False  # dropped while the reply was due
            self._send(data)
        return True

    def _send(self, data: bytes) -> None:
        """Send all of ``data`` however slowly the client reads it (a large block to a busy
        client), until the server stops."""
        view = memoryview(data)
        while view and not self.stop.is_set():
            try:
                sent = self.sock.send(view)
            except BlockingIOError:  # the client's window stayed full for POLL_S
                continue
            view = view[sent:]

    def _interrupted(self, wait_s: float) -> bool:
        """Wait up to ``wait_s`` for a reply that is not due yet; True if the client sent a new
        message meanwhile. The late reply is then dropped, as a device clear drops it
        in-process: a client that timed out and asks again gets the answer to its new
        question, not the stale one."""
        readable, _, _ = select.select([self.sock], [], [], wait_s)
        return bool(readable)
