"""A pyvisa-sim ``Device`` promoted to a physics-backed, thread-safe simulated instrument.

pyvisa-sim parses the YAML as usual; :func:`promote` then swaps the classes of the parsed
device and its properties for the subclasses below, and wires the YAML's ``x-get`` / ``x-set`` /
``x-call`` keys to methods of the instrument model. Matching stays pyvisa-sim's, so the YAML
remains the one place where each command's syntax is written; for SCPI products (``x-scpi``)
:mod:`pyvisa_qnetlab.scpi` first turns what the client sent into the YAML's literal command.

What changes against stock pyvisa-sim:

- replies are read whole (or ``count`` bytes at a time), never one byte per call, and may be
  real binary IEEE-488.2 blocks;
- an unknown or refused command queues an error with the instrument's own message (code, text
  and detail) in every error queue and sets the status-register bits; a failed *query* answers
  the YAML's ``query_error`` reply at once instead of leaving the next read to time out;
- one lock per lab serialises every device of the lab (thread safety);
- faults: delayed replies (a real VISA timeout, in lab time), disconnects, garbled replies and
  power-on resets;
- ``reset_to_defaults`` restores the YAML defaults without breaking open sessions.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections import defaultdict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import stringparser
from pyvisa import constants
from pyvisa_sim.channels import ChannelProperty
from pyvisa_sim.component import NoResponse, Property, to_bytes
from pyvisa_sim.devices import Device

from qnetlab.sim_instruments.protocol import InstrumentRefusal

from .scpi import Grammar, Reply, ScpiError, compile_device

if TYPE_CHECKING:
    from qnetlab.clock import VirtualClock

StatusCode = constants.StatusCode
log = logging.getLogger("pyvisa_qnetlab")
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


class HookedProperty(Property):
    """A property whose value may be computed (``x-get``) or observed on set (``x-set``)."""

    _device: PhysDevice | None = None
    _xget: Callable[[], Any] | None = None
    _xset: Callable[[Any], Any] | None = None

    def get_value(self) -> Any:
        if self._xget is not None:
            return self._xget()
        return self._value

    def set_value(self, string_value: str) -> None:
        try:
            value = self.validate_value(string_value)
            if self._xset is not None:
                replaced = self._xset(value)
                value = value if replaced is None else replaced
        except ValueError as exc:
            if self._device is not None:
                self._device.note_error(*_classify(exc))
            raise
        self._value = value


class HookedChannelProperty(ChannelProperty):
    """Per-channel variant: hooks receive the channel id first."""

    _device: PhysDevice | None = None
    _xget: Callable[[str], Any] | None = None
    _xset: Callable[[str, Any], Any] | None = None

    def get_value(self) -> Any:
        if self._xget is not None:
            return self._xget(self._channel._selected)
        return self._value[self._channel._selected]

    def set_value(self, string_value: str) -> None:
        ch = self._channel._selected
        try:
            value = self.validate_value(string_value)
            if self._xset is not None:
                replaced = self._xset(ch, value)
                value = value if replaced is None else replaced
        except ValueError as exc:
            if self._device is not None:
                self._device.note_error(*_classify(exc))
            raise
        self._value[ch] = value


class Faults:
    """Per-device fault state (lab-time based)."""

    def __init__(self) -> None:
        self.clear()
        self.generation = 0  # bumped on disconnect: sessions opened before are dead

    def clear(self) -> None:
        self.reply_delay_s = 0.0
        self.delay_count: int | None = None
        self.garble_count = 0
        self.offline_until: float | None = None
        self.offline = False


class PhysDevice(Device):
    """pyvisa-sim Device with hooks, whole-reply reads, rich errors, a lock and faults."""

    # set by promote()
    lock: threading.RLock
    clock: VirtualClock
    exact_handlers: dict[bytes, Callable[[], Any]]
    static_replies: dict[bytes, Any]
    arg_handlers: list[tuple[stringparser.Parser, Callable[[Any], Any]]]
    model: Any
    faults: Faults
    rng: np.random.Generator
    query_error_reply: bytes | None
    scpi: Grammar | None  # None: not a SCPI product (exact matching, e.g. Lake Shore, Triton)
    _ready_at: deque[float]
    _sessions: weakref.WeakSet
    _pending_error: tuple[str, str] | None
    _defaults: list[tuple[Property, Any]]
    _shared_errors: dict[str, list[bytes]]  # the error queues of sessions without their own

    # --- matching ------------------------------------------------------------------------
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

    # --- errors --------------------------------------------------------------------------
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

    # --- I/O -----------------------------------------------------------------------------
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

    def _enqueue(self, reply: bytes) -> None:
        f = self.faults
        delay = 0.0
        if f.reply_delay_s > 0 and (f.delay_count is None or f.delay_count > 0):
            delay = f.reply_delay_s
            if f.delay_count is not None:
                f.delay_count -= 1
        if f.garble_count > 0:
            f.garble_count -= 1
            junk = self.rng.integers(33, 127, size=max(2, len(reply) // 2), dtype=np.uint8)
            reply = bytes(junk) + reply[len(reply) // 2:]
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

    def own_error_queues(self, session: Any) -> None:
        """Give ``session`` error queues of its own (a served lab's client connection: a
        product keeps one per connection); other sessions share the device's."""
        session._qnetlab_errors = {name: [] for name in self._error_queues}

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
            if not self.session_ok(session):
                return b"", StatusCode.error_connection_lost
            self._use(session)
            if not self._output_buffers:
                if self._input_buffer and self.scpi is not None:
                    self.push_error("query_unterminated", "read before the message ended")
                self.clock.advance(timeout_s)
                return b"", StatusCode.error_timeout
            wait = self._ready_at[0] - self.clock.now()
            if wait > timeout_s:
                self.clock.advance(timeout_s)
                return b"", StatusCode.error_timeout
            if wait > 0:
                self.clock.advance(wait)
            buf = self._output_buffers[0]
            chunk = bytes(buf[:count])
            del buf[:count]
            if buf:
                return chunk, StatusCode.success_max_count_read
            self._output_buffers.popleft()
            self._ready_at.popleft()
            return chunk, StatusCode.success

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

    # --- state ---------------------------------------------------------------------------
    def stored(self, name: str, ch: str | None = None) -> Any:
        """The stored (set) value of a YAML property, for the model to read."""
        if ch is None:
            return self._properties[name]._value
        for channels in self._channels.values():
            if name in channels._properties:
                return channels._properties[name]._value[str(ch)]
        raise KeyError(name)

    def store(self, name: str, value: Any, ch: str | None = None) -> None:
        """Overwrite a stored value (the instrument changed it itself)."""
        if ch is None:
            self._properties[name]._value = value
            return
        for channels in self._channels.values():
            if name in channels._properties:
                channels._properties[name]._value[str(ch)] = value
                return
        raise KeyError(name)

    def reset_to_defaults(self) -> None:
        """Power-on state: YAML defaults, empty buffers/queues/registers; sessions stay open."""
        with self.lock:
            for prop, default in self._defaults:
                if isinstance(prop, ChannelProperty):
                    prop._value = defaultdict(lambda d=default: d)
                else:
                    prop._value = default
            self.clear_output()
            self.clear_status(every_session=True)


def _bind(model: Any, name: str, where: str) -> Callable[..., Any]:
    try:
        return getattr(model, name)
    except AttributeError:
        raise AttributeError(f"{type(model).__name__} has no method {name!r} named by {where}") \
            from None


def promote(
    device: Device,
    device_dict: dict[str, Any],
    lock: threading.RLock,
    clock: VirtualClock,
    rng: np.random.Generator,
) -> PhysDevice:
    """Turn a parsed pyvisa-sim Device into a :class:`PhysDevice` (no model bound yet)."""
    device.__class__ = PhysDevice
    dev: PhysDevice = device  # type: ignore[assignment]
    dev.lock = lock
    dev.clock = clock
    dev.rng = rng
    dev.model = None
    dev.faults = Faults()
    dev._ready_at = deque()
    dev._sessions = weakref.WeakSet()
    dev._pending_error = None
    dev.exact_handlers = {}
    dev.static_replies = {}
    dev.arg_handlers = []
    dev.raw_dict = device_dict
    err = device_dict.get("error", {})
    qerr = err.get("response", {}).get("query_error") if isinstance(err, dict) else None
    dev.query_error_reply = to_bytes(qerr) if qerr else None
    scpi = str(device_dict.get("x-scpi", "")).lower() == "true"  # the loader keeps strings
    dev.scpi = compile_device(device_dict) if scpi else None
    dev._shared_errors = {name: queue._queue for name, queue in dev._error_queues.items()}
    dev._defaults = []
    for prop in dev._properties.values():
        prop.__class__ = HookedProperty
        prop._device = dev
        dev._defaults.append((prop, prop._value))
    for channels in dev._channels.values():
        for prop in channels._properties.values():
            prop.__class__ = HookedChannelProperty
            prop._device = dev
            dev._defaults.append((prop, prop._value.default_factory()))
    return dev


_CH_FIELD = re.compile(r"\{ch_id\}")


def bind_model(dev: PhysDevice, model: Any) -> None:
    """Connect the YAML's x-get / x-set / x-call keys to ``model``'s methods."""
    dev.model = model
    dev.exact_handlers = {}
    dev.static_replies = {}
    dev.arg_handlers = []
    dd = dev.raw_dict
    _bind_component(dev, model, dd, dev._properties, None)
    for group, cd in (dd.get("channels") or {}).items():
        channels = dev._channels[group]
        _bind_component(dev, model, cd, channels._properties, channels._ids)


def _bind_component(dev: PhysDevice, model: Any, cd: dict[str, Any], props: dict[str, Any],
                    ids: list[str] | None) -> None:
    for dia in cd.get("dialogues", ()):
        call = dia.get("x-call")
        if not call:
            continue
        owner = dev if call.startswith("scpi_") else model
        fn = _bind(owner, call, f"dialogue {dia['q']!r}")
        static = to_bytes(dia["r"]) if "r" in dia else NoResponse
        for ch in ids or [None]:
            q = dia["q"].strip(" ")
            if ch is not None:
                q = q.format(ch_id=ch)
            key = q.encode()
            dev.exact_handlers[key] = fn if ch is None else (lambda f=fn, c=ch: f(c))
            dev.static_replies[key] = static
    for name, pd in (cd.get("properties") or {}).items():
        prop = props[name]
        prop._xget = _bind(model, pd["x-get"], f"property {name!r}") if "x-get" in pd else None
        prop._xset = _bind(model, pd["x-set"], f"property {name!r}") if "x-set" in pd else None
        if "x-call" in pd and "setter" in pd:
            fn = _bind(model, pd["x-call"], f"property {name!r}")
            parser = stringparser.Parser(pd["setter"]["q"].strip(" "))
            has_ch = bool(_CH_FIELD.search(pd["setter"]["q"]))

            def call(parsed: Any, f: Callable[..., Any] = fn, has_ch: bool = has_ch,
                     valid: list[str] | None = ids) -> Any:
                if has_ch:
                    ch = str(parsed["ch_id"])
                    if valid is not None and ch not in valid:
                        raise InstrumentRefusal("undefined_header", f"no channel {ch}")
                    return f(ch, str(parsed.get("0", "")).strip())
                return f(str(parsed).strip())

            dev.arg_handlers.append((parser, call))
