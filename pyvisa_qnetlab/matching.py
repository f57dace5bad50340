"""Command matching: a received program message to the replies of the YAML's commands.

For SCPI products (``x-scpi``) :mod:`pyvisa_qnetlab.scpi` first resolves each command of the
message (``;``-separated, SCPI path rules) to the literal the YAML writes; pyvisa-sim's exact
matching then finds it among the dialogues, getters, registers, error queues, setters and
channels, with the models' ``x-call`` handlers tried first. Refusals become queued errors
(:mod:`.error_queues`), replies go to the session's reply queue (:mod:`.session_io`).
"""

from __future__ import annotations

import logging
from typing import Any

from pyvisa_sim.component import NoResponse

from .error_queues import _classify
from .scpi import Reply, ScpiError

log = logging.getLogger("pyvisa_qnetlab")


class Matching:
    """Message dispatch of a :class:`~pyvisa_qnetlab.device.PhysDevice`."""

    def _match(self, query: bytes) -> Any:
        handler = self.exact_handlers.get(query)
        if handler is not None:
            return self._reply(handler(), self.static_replies.get(query, NoResponse))
        for matcher in (self._match_dialog, self._match_getters, self._match_registers,
                        self._match_errors_queues):
            response = matcher(query)
            if response is not None:
                return response
        if self.arg_handlers:
            text = query.decode("utf-8", "replace")
            for parser, call in self.arg_handlers:
                try:
                    parsed = parser(text)
                except ValueError:
                    continue
                return self._reply(call(parsed), NoResponse)
        response = self._match_setters(query)
        if response is not None:
            return response
        for channel in self._channels.values():
            response = channel.match(query)
            if response:
                return response
        return None

    @staticmethod
    def _reply(value: Any, static: Any) -> Any:
        if value is None:
            return static
        if isinstance(value, bytes):
            return value
        return str(value).encode("utf-8")

    def write(self, data: bytes) -> None:
        with self.lock:
            self._input_buffer.extend(data)
            if not self._input_buffer.endswith(self._query_eom):
                return
            message = bytes(self._input_buffer[: -len(self._query_eom)])
            self._input_buffer = bytearray()
            if self._output_buffers and self.scpi is not None:
                # a new message while a reply is unread: SCPI discards it (-410)
                self._output_buffers.clear()
                self._ready_at.clear()
                self.push_error("query_interrupted", "reply discarded by a new command")
            for query, received in self._commands(message):
                self._pending_error = None
                try:
                    if isinstance(query, ScpiError):
                        raise query
                    response = query if isinstance(query, Reply) else self._match(query)
                except ValueError as exc:  # refused by a handler
                    self.note_error(*_classify(exc))
                    response = None
                except Exception as exc:  # a simulator bug must not crash the client's I/O
                    log.exception("simulated instrument failed on %r", query)
                    self.note_error("execution_error", f"simulator fault: {exc!r}")
                    response = None
                if response is None:
                    refused = isinstance(query, ScpiError)
                    text = received.decode("utf-8", "replace")
                    if self._pending_error is None:
                        self._pending_error = ("undefined_header", text)
                    elif not refused:  # a SCPI refusal's detail already names the command
                        key, detail = self._pending_error
                        self._pending_error = (key, f"{detail} ({text})")
                    response = self.error_response("command_error")
                    if b"?" in received and self.query_error_reply is not None:
                        response = self.query_error_reply
                if isinstance(response, Reply):
                    response = response.encode()
                if response is not NoResponse and response is not None:
                    self._enqueue(bytes(response) + self._response_eom)

    def _commands(self, message: bytes) -> list[tuple[bytes | Reply | ScpiError, bytes]]:
        """(command as the YAML writes it or its SCPI refusal, command as received) pairs."""
        if self.scpi is None:
            parts = message.split(self.delimiter) if self.delimiter else [message]
            return [(part, part) for part in parts]
        out: list[tuple[bytes | Reply | ScpiError, bytes]] = []
        path: tuple[str, ...] = ()
        text = message.decode("utf-8", "replace")
        for part in self.scpi.split(text):
            if not part.strip():  # a bare terminator or a trailing ';' does nothing
                continue
            try:
                literal, path = self.scpi.resolve(part, path)
                resolved = literal if isinstance(literal, Reply) else literal.encode()
                out.append((resolved, part.strip().encode()))
            except ScpiError as exc:
                out.append((exc, part.strip().encode()))
        return out
