"""Instrument errors as products report them: SCPI error queues, IEEE 488.2 status registers.

A refused or unknown command queues ``code,"text; detail"`` in every SCPI error queue of the
device (the detail names the command) and sets the status-register bits (``*ESR?`` on the Lake
Shore side). On a served lab each client connection has queues of its own
(:meth:`ErrorQueues.own_error_queues`), as each TCP connection of a product has.
"""

from __future__ import annotations

from typing import Any

from qnetlab.sim_instruments.protocol import InstrumentRefusal

from .scpi import ScpiError

QUEUE_DEPTH = 10  # SCPI error queues hold a few entries; the last becomes -350 on overflow
_FALLBACK = {
    "data_out_of_range": ("execution_error", "command_error"),
    "data_type_error": ("command_error",),
    "settings_conflict": ("execution_error", "command_error"),
    "execution_error": ("command_error",),
    "undefined_header": ("command_error",),
    "query_error": ("command_error",),
    "queue_overflow": ("command_error",),
    "syntax_error": ("command_error",),
    "parameter_not_allowed": ("command_error",),
    "missing_parameter": ("command_error",),
    "invalid_suffix": ("command_error",),
    "query_interrupted": ("query_error", "command_error"),
    "query_unterminated": ("query_error", "command_error"),
}


def _classify(exc: ValueError) -> tuple[str, str]:
    if isinstance(exc, InstrumentRefusal | ScpiError):
        return exc.key, str(exc)
    text = str(exc)
    if "minimum" in text or "maximum" in text or "valid values" in text:
        return "data_out_of_range", text
    return "data_type_error", text


class ErrorQueues:
    """Error queues and status registers of a :class:`~pyvisa_qnetlab.device.PhysDevice`."""

    _pending_error: tuple[str, str] | None
    _shared_errors: dict[str, list[bytes]]  # the error queues of sessions without their own

    def note_error(self, key: str, detail: str) -> None:
        """Remember why the command being matched failed (used by ``error_response``)."""
        self._pending_error = (key, detail)

    def error_response(self, error_key: str) -> bytes | None:
        key, detail = self._pending_error or (error_key, "")
        self._pending_error = None
        self.push_error(key, detail)
        return self._error_response.get("command_error")

    def push_error(self, key: str, detail: str = "") -> None:
        """Queue an instrument error: SCPI queues get ``code,"text; detail"``, registers bits."""
        keys = (key, *_FALLBACK.get(key, ()))
        for register in self._status_registers.values():
            for k in keys:
                if k in register._error_map:
                    register.set(k)
                    break
        for queue in self._error_queues.values():
            base = next((queue._error_map[k] for k in keys if k in queue._error_map), None)
            if base is None:
                continue
            message = base
            if detail:
                text = base.decode()
                clean = detail.replace('"', "'")
                message = (text[:-1] + f'; {clean}"' if text.endswith('"') else
                           f"{text}; {clean}").encode()
            if len(queue._queue) >= QUEUE_DEPTH:
                overflow = queue._error_map.get("queue_overflow", b'-350,"Queue overflow"')
                queue._queue[-1] = overflow
            else:
                queue._queue.append(message)

    def clear_status(self, every_session: bool = False) -> None:
        """``*CLS``: empty the error queues (this session's; ``every_session``: all of them, as a
        reset does) and status registers."""
        for queue in self._error_queues.values():
            queue._queue.clear()  # in place: the list may be a session's own
        if every_session:
            lists = [*self._shared_errors.values()]
            lists += [q for sess in self._sessions
                      for q in (getattr(sess, "_qnetlab_errors", None) or {}).values()]
            for errors in lists:
                errors.clear()
        for register in self._status_registers.values():
            register.clear()

    def own_error_queues(self, session: Any) -> None:
        """Give ``session`` error queues of its own (a served lab's client connection: a
        product keeps one per connection); other sessions share the device's."""
        session._qnetlab_errors = {name: [] for name in self._error_queues}

    def scpi_status_byte(self) -> int:
        """``*STB?`` (IEEE 488.2): bit 2 error queue not empty, 4 reply waiting, 5 ESR & ESE."""
        stb = 0
        if any(queue._queue for queue in self._error_queues.values()):
            stb |= 4
        if self._output_buffers:
            stb |= 16
        ese = self._properties.get("event_status_enable")
        mask = ese._value if ese is not None else 0
        if any(reg._value & mask for reg in self._status_registers.values()):
            stb |= 32
        return stb
