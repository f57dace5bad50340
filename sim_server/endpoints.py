"""What answers on a served socket: an instrument of the lab, or the lab's clock.

An endpoint turns one received message (terminator included) into the replies to send and the
lab time each may leave at; :mod:`.wire` does the socket side for both kinds.
"""

from __future__ import annotations

from typing import Any, Protocol

from pyvisa import constants, errors

from .pacing import PacedClock

Reply = tuple[bytes, float]  # (bytes to send, lab time they may leave at)


class Endpoint(Protocol):
    """One served address: sessions per connection, messages in, replies out."""

    terminator: bytes  # the request terminator (the YAML's query EOM)

    def open(self) -> Any:
        """A session for a new connection; raises ConnectionRefusedError while unavailable."""
        ...

    def alive(self, session: Any) -> bool:
        """False once the instrument dropped the connection (a fault): the socket is reset."""
        ...

    def exchange(self, session: Any, message: bytes) -> list[Reply]:
        ...

    def close(self, session: Any) -> None:
        ...


class InstrumentEndpoint:
    """A resource of the lab: one VISA session of the lab's library per client connection, so
    each connection has its own reply queue (as each TCP connection of a product has)."""

    def __init__(self, library: Any, resource: str, pacer: PacedClock) -> None:
        self.library = library
        self.resource = resource
        self.pacer = pacer
        self.device = library.device(resource)
        self.terminator = bytes(self.device._query_eom) or b"\n"
        self._rm, _ = library.open_default_resource_manager()

    def open(self) -> Any:
        with self.library.lock:
            self.pacer.catch_up()  # a disconnect's duration is lab time
            try:
                sid, _ = self.library.open(self._rm, self.resource)
            except errors.VisaIOError as exc:
                raise ConnectionRefusedError(f"{self.resource}: {exc.description}") from None
            session = self.library.sessions[sid]
            self.device.own_error_queues(session)
            return session, sid

    def alive(self, session: Any) -> bool:
        # no catch-up: a dead session never comes back, whatever the time
        return getattr(session[0], "_qnetlab_generation", 0) == self.device.faults.generation

    def exchange(self, session: Any, message: bytes) -> list[Reply]:
        sess = session[0]
        with self.library.lock:
            self.pacer.catch_up()
            _, status = self.device.write_for(sess, message)
            if status != constants.StatusCode.success:
                raise ConnectionResetError(f"{self.resource}: {status.name}")
            replies = []
            while (reply := self.device.take_reply(sess)) is not None:
                replies.append(reply)
        return replies

    def close(self, session: Any) -> None:
        with self.library.lock:
            self.library.close(session[1])


class ClockEndpoint:
    """The lab-clock socket: ``:SYSTem:TIME?`` answers lab seconds, ``:SYSTem:SPEed?`` the
    speed (lab seconds per wall second), ``*IDN?`` names it. A qnetlab station on the served
    lab reads it (:class:`qnetlab.clock.ServedClock`) so its sequences wait in lab time."""

    terminator = b"\n"
    IDN = b"qnetlab,served lab clock,0,1.0"

    def __init__(self, library: Any, pacer: PacedClock) -> None:
        self.library = library
        self.pacer = pacer

    def open(self) -> Any:
        return None

    def alive(self, session: Any) -> bool:
        return True

    def exchange(self, session: Any, message: bytes) -> list[Reply]:
        with self.library.lock:
            self.pacer.catch_up()
            now = self.pacer.now()
        replies = []
        for part in message.decode("ascii", "replace").strip().split(";"):
            answer = self._answer(part.strip().lstrip(":").upper())
            if answer is not None:
                replies.append((answer + b"\n", now))
        return replies

    def _answer(self, header: str) -> bytes | None:
        if header in ("SYST:TIME?", "SYSTEM:TIME?"):
            return repr(self.pacer.now()).encode()
        if header in ("SYST:SPE?", "SYSTEM:SPEED?", "SYST:SPEED?", "SYSTEM:SPE?"):
            return repr(self.pacer.speed).encode()
        if header == "*IDN?":
            return self.IDN
        if header.endswith("?"):
            return b'-113,"Undefined header"'
        return None

    def close(self, session: Any) -> None:
        return None
