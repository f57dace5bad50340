"""Per-session I/O: each VISA session (each client connection of a served lab) has its own
reply queue, with the lab time each reply is ready at; reads are whole messages with lab-time
timeouts; sessions opened before a disconnect are dead.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from pyvisa import constants

from qnetlab.clock import wait_releasing

StatusCode = constants.StatusCode


class SessionIO:
    """Reply queues and reads of a :class:`~pyvisa_qnetlab.device.PhysDevice`."""

    _ready_at: deque[float]

    def _enqueue(self, reply: bytes) -> None:
        """Queue a reply for the session in use, as the device's faults let it out."""
        reply, delay = self.faults.on_reply(reply, self.rng)
        self._output_buffers.append(bytearray(reply))
        self._ready_at.append(self.clock.now() + delay)

    def clear_output(self, session: Any = None) -> None:
        """viClear / flush: drop pending replies (of one session, or all) and partial input."""
        with self.lock:
            targets = [session] if session is not None else list(self._sessions)
            for sess in targets:
                sess._qnetlab_out.clear()
                sess._qnetlab_ready.clear()
            self._output_buffers.clear()
            self._ready_at.clear()
            self._input_buffer = bytearray()

    def attach(self, session: Any) -> None:
        """Give a session its own reply queue: replies go back to the session that asked."""
        session._qnetlab_out = deque()
        session._qnetlab_ready = deque()
        session._qnetlab_generation = self.faults.generation
        self._sessions.add(session)

    def _use(self, session: Any) -> None:
        self._output_buffers = session._qnetlab_out
        self._ready_at = session._qnetlab_ready
        own = getattr(session, "_qnetlab_errors", None)
        for name, queue in self._error_queues.items():
            queue._queue = own[name] if own is not None else self._shared_errors[name]

    def session_ok(self, session: Any) -> bool:
        f = self.faults
        if f.offline and f.offline_until is not None and self.clock.now() >= f.offline_until:
            f.offline = False
        return not f.offline and getattr(session, "_qnetlab_generation", 0) == f.generation

    def read_for(self, session: Any, count: int) -> tuple[bytes, StatusCode]:
        """A whole-message read with lab-time timeouts (see module docstring)."""
        timeout_ms, _ = session.get_attribute(constants.ResourceAttribute.timeout_value)
        timeout_s = 1e9 if timeout_ms in (None, constants.VI_TMO_INFINITE) else timeout_ms / 1000
        with self.lock:
            while True:
                if not self.session_ok(session):
                    return b"", StatusCode.error_connection_lost
                self._use(session)
                if not self._output_buffers:
                    if self._input_buffer and self.scpi is not None:
                        self.push_error("query_unterminated", "read before the message ended")
                    self._wait(timeout_s)
                    return b"", StatusCode.error_timeout
                wait = self._ready_at[0] - self.clock.now()
                if wait > timeout_s:
                    self._wait(timeout_s)
                    return b"", StatusCode.error_timeout
                if wait <= 0:
                    return self._take(count)
                self._wait(wait)  # the lab's lock may have been let go: look again

    def _take(self, count: int) -> tuple[bytes, StatusCode]:
        """Up to ``count`` bytes of the first queued reply (which is ready)."""
        buf = self._output_buffers[0]
        chunk = bytes(buf[:count])
        del buf[:count]
        if buf:
            return chunk, StatusCode.success_max_count_read
        self._output_buffers.popleft()
        self._ready_at.popleft()
        return chunk, StatusCode.success

    def _wait(self, seconds: float) -> None:
        """Lab time passing while a read waits: a discrete-event participant lets the lab's
        lock go meanwhile (:func:`qnetlab.clock.wait_releasing`)."""
        wait_releasing(self.clock, self.lock, seconds)

    def write_for(self, session: Any, data: bytes) -> tuple[int, StatusCode]:
        with self.lock:
            if not self.session_ok(session):
                return 0, StatusCode.error_connection_lost
            self._use(session)
            self.write(data)
        return len(data), StatusCode.success

    def take_reply(self, session: Any) -> tuple[bytes, float] | None:
        """The next whole reply queued for ``session`` and the lab time it is ready at, or
        None (the served lab sends it once its paced clock reaches that time)."""
        with self.lock:
            out, ready = session._qnetlab_out, session._qnetlab_ready
            if not out:
                return None
            return bytes(out.popleft()), ready.popleft()
