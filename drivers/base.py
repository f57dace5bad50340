"""What every qnetlab driver shares, written once.

- After every write the instrument's error reporting is read (SCPI error queue or IEEE-488.2
  ``*ESR?``); an error raises :class:`~qnetlab.errors.InstrumentError` with the command sent and
  the instrument's own message. Queries can be checked too (``check_queries=True``), and a reply
  that does not parse is always checked, so a refused query surfaces the instrument's reason.
- A VISA timeout raises :class:`~qnetlab.errors.InstrumentTimeout` naming instrument, command
  and timeout; a lost session raises :class:`~qnetlab.errors.InstrumentConnectionError`.
- Invalid values are refused by the parameters' validators before anything is written; hard
  safety limits (:class:`HardLimitParameter`) hold even if a station file replaces the validator.
- Waiting goes through :attr:`QnetlabVisaInstrument.clock`, never ``time.sleep``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import pyvisa
from pyvisa import constants
from qcodes.instrument import InstrumentChannel, InstrumentModule, VisaInstrument
from qcodes.parameters import Parameter

from qnetlab.clock import Clock, clock_of
from qnetlab.errors import (
    InstrumentConnectionError,
    InstrumentError,
    InstrumentTimeout,
    SafetyLimitError,
)

if TYPE_CHECKING:
    from typing import Unpack

    from qcodes.instrument import VisaInstrumentKWArgs

_MAX_CNT = constants.StatusCode.success_max_count_read
_TIMEOUT = constants.StatusCode.error_timeout
_LOST = {constants.StatusCode.error_connection_lost, constants.StatusCode.error_invalid_object,
         constants.StatusCode.error_resource_not_found}


class ErrorReporting(Protocol):
    """How an instrument reports errors: ``drain`` returns its pending messages, verbatim."""

    def drain(self, instrument: QnetlabVisaInstrument) -> list[str]: ...


class ScpiErrorQueue:
    """SCPI ``SYSTem:ERRor?`` queue: read until the ``0,...`` (no error) entry."""

    def __init__(self, query: str = "SYST:ERR?", max_entries: int = 32) -> None:
        self.query = query
        self.max_entries = max_entries

    def drain(self, instrument: QnetlabVisaInstrument) -> list[str]:
        messages = []
        for _ in range(self.max_entries):
            reply = instrument._query(self.query)
            try:
                code = int(reply.split(",", 1)[0])
            except ValueError:
                messages.append(f"unreadable error queue reply {reply!r}")
                break
            if code == 0:
                break
            messages.append(reply)
        return messages


class StandardEventStatus:
    """IEEE-488.2 ``*ESR?`` (Lake Shore): reading clears it; bits 2, 4, 5 are errors."""

    BITS: ClassVar[dict[int, str]] = {4: "query error", 16: "execution error", 32: "command error"}
    POWER_ON = 128

    def drain(self, instrument: QnetlabVisaInstrument) -> list[str]:
        reply = instrument._query("*ESR?")
        try:
            esr = int(reply)
        except ValueError:
            return [f"unreadable *ESR? reply {reply!r}"]
        if esr & self.POWER_ON:
            instrument.power_on_seen = True
        names = [name for bit, name in self.BITS.items() if esr & bit]
        return [f"*ESR? = {esr} ({', '.join(names)})"] if names else []


class HardLimitParameter(Parameter):
    """A parameter with a hard safety range checked on every set, whatever ``vals`` says.

    A station file's ``limits:`` replaces a parameter's validator; this check is not a
    validator, so it cannot be widened (only narrowed by the validator)."""

    def __init__(self, name: str, *, hard_min: float, hard_max: float, **kwargs: Any) -> None:
        self.hard_min = hard_min
        self.hard_max = hard_max
        super().__init__(name, **kwargs)

    def validate(self, value: Any) -> None:
        super().validate(value)
        if not self.hard_min <= value <= self.hard_max:
            raise SafetyLimitError(
                f"{value!r} is outside the hard safety limit [{self.hard_min}, {self.hard_max}]"
                f"{' ' + self.unit if self.unit else ''}; Parameter: {self.full_name}")


class _GuardedParsers:
    """Mixin: a reply that fails to parse makes the instrument's error reporting speak."""

    def add_parameter(self, name: str, parameter_class: type | None = None, **kwargs: Any) -> Any:
        parser = kwargs.get("get_parser")
        cmd = kwargs.get("get_cmd")
        if parser is not None and isinstance(cmd, str):
            kwargs["get_parser"] = self._guard(parser, cmd)
        if parameter_class is None:
            return super().add_parameter(name, **kwargs)  # type: ignore[misc]
        return super().add_parameter(name, parameter_class=parameter_class, **kwargs)  # type: ignore[misc]

    def _guard(self, parser: Callable[[str], Any], cmd: str) -> Callable[[str], Any]:
        def guarded(raw: str) -> Any:
            try:
                return parser(raw)
            except (ValueError, TypeError, KeyError) as exc:
                root: QnetlabVisaInstrument = self.root_instrument  # type: ignore[attr-defined]
                messages = root.error_reporting.drain(root)
                if messages:
                    raise InstrumentError(root.name, cmd, messages) from exc
                raise

        return guarded


class QnetlabModule(_GuardedParsers, InstrumentModule):
    """A submodule of a qnetlab driver (parsers guarded like the instrument's)."""


class QnetlabChannel(_GuardedParsers, InstrumentChannel):
    """A channel of a qnetlab driver (parsers guarded like the instrument's)."""


class QnetlabVisaInstrument(_GuardedParsers, VisaInstrument):
    """Base of qnetlab drivers: error checks, timeouts, lean I/O, the lab clock.

    Args:
        name: QCoDeS instrument name.
        address: VISA resource name.
        check_queries: also read the error reporting after every query (slower, stricter).
        clock: the lab clock to wait on; default: the VISA library's own (a simulated lab
            provides one), else real time.
        print_connect_message: print the "Connected to" line.
        **kwargs: forwarded to :class:`~qcodes.instrument.VisaInstrument`.
    """

    error_reporting: ClassVar[ErrorReporting] = ScpiErrorQueue()
    default_timeout = 2.0

    def __init__(self, name: str, address: str, *, check_queries: bool = False,
                 clock: Clock | None = None, print_connect_message: bool = True,
                 **kwargs: Unpack[VisaInstrumentKWArgs]) -> None:
        self.power_on_seen = False
        super().__init__(name, address, **kwargs)
        self.check_queries = check_queries
        self._clock = clock
        self._debug = self.visa_log.isEnabledFor(logging.DEBUG)
        self._setup_lean_io()
        self.error_reporting.drain(self)  # start from an empty error queue
        self._print_connect = print_connect_message

    def _finish_init(self) -> None:
        """Call last in a subclass ``__init__``."""
        if self._print_connect:
            self.connect_message()

    @property
    def clock(self) -> Clock:
        """The clock waits go through: the lab's (virtual in simulation) or real time."""
        if self._clock is None:
            self._clock = clock_of(self.visa_handle.visalib)
        return self._clock

    @clock.setter
    def clock(self, value: Clock) -> None:
        self._clock = value

    # --- I/O ---------------------------------------------------------------------------------
    def _setup_lean_io(self) -> None:
        handle = self.visa_handle
        self._wterm = (handle.write_termination or "").encode(handle.encoding)
        self._rterm = handle.read_termination or ""
        lib = handle.visalib
        ignore = getattr(lib, "_ignore_warning_in_session", None)
        if ignore is not None:  # chunked reads report MAX_CNT / TERM_CHAR as "warnings" on IVI
            ignore[handle.session].update({_MAX_CNT,
                                           constants.StatusCode.success_termination_character_read})

    def set_terminator(self, terminator: str | None) -> None:
        super().set_terminator(terminator)
        if getattr(self, "_wterm", None) is not None:
            self._setup_lean_io()

    def _map_visa_error(self, exc: pyvisa.VisaIOError, cmd: str) -> Exception:
        if exc.error_code == _TIMEOUT:
            return InstrumentTimeout(self.name, cmd, self.visa_handle.timeout / 1000
                                     if self.visa_handle.timeout else None)
        if exc.error_code in _LOST:
            return InstrumentConnectionError(self.name, cmd, exc.description)
        return exc

    def _send(self, cmd: str) -> None:
        handle = self.visa_handle
        if self._debug:
            self.visa_log.debug(f"Writing: {cmd}")
        try:
            handle.visalib.write(handle.session, cmd.encode(handle.encoding) + self._wterm)
        except pyvisa.VisaIOError as exc:
            raise self._map_visa_error(exc, cmd) from exc

    def _receive(self, cmd: str) -> bytes:
        handle = self.visa_handle
        lib, session, size = handle.visalib, handle.session, handle.chunk_size
        try:
            chunk, status = lib.read(session, size)
            if status == _MAX_CNT:
                parts = [chunk]
                while status == _MAX_CNT:
                    chunk, status = lib.read(session, size)
                    parts.append(chunk)
                chunk = b"".join(parts)
        except pyvisa.VisaIOError as exc:
            raise self._map_visa_error(exc, cmd) from exc
        return chunk

    def _query(self, cmd: str) -> str:
        """Write ``cmd`` and read one reply, without error checks."""
        try:
            self._send(cmd)
            reply = self._receive(cmd).decode(self.visa_handle.encoding)
        except KeyboardInterrupt:
            self._resync()
            raise
        if self._rterm and reply.endswith(self._rterm):
            reply = reply[: -len(self._rterm)]
        if self._debug:
            self.visa_log.debug(f"Response: {reply}")
        return reply

    def _query_binary(self, cmd: str) -> bytes:
        """Write ``cmd`` and return the payload of the IEEE-488.2 definite-length block reply."""
        self._send(cmd)
        raw = self._receive(cmd)
        if not raw.startswith(b"#"):
            messages = self.error_reporting.drain(self)
            raise InstrumentError(self.name, cmd, messages or [f"not a binary block: {raw[:40]!r}"])
        n = int(raw[1:2])
        length = int(raw[2 : 2 + n]) if n else len(raw) - 2
        return raw[2 + n : 2 + n + length]

    def _resync(self) -> None:
        """After an interrupted exchange: drop any half-read reply so the next query is in step."""
        try:
            self.device_clear()
        except Exception:  # best effort while propagating the interrupt
            self.visa_log.exception("device clear after interrupt failed")

    def write_raw(self, cmd: str) -> None:
        try:
            self._send(cmd)
        except KeyboardInterrupt:
            self._resync()
            raise
        self.raise_on_errors(cmd)

    def ask_raw(self, cmd: str) -> str:
        reply = self._query(cmd)
        if self.check_queries:
            self.raise_on_errors(cmd)
        return reply

    def raise_on_errors(self, cmd: str = "(error check)") -> None:
        """Read the instrument's error reporting; raise :class:`InstrumentError` if it has any."""
        messages = self.error_reporting.drain(self)
        if messages:
            raise InstrumentError(self.name, cmd, messages)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, poll_s: float,
                 what: str) -> None:
        """Poll ``condition`` on the lab clock until true; ``TimeoutError`` after ``timeout_s``."""
        clock = self.clock
        deadline = clock.now() + timeout_s
        while not condition():
            if clock.now() >= deadline:
                raise TimeoutError(f"{self.name}: {what} not reached within {timeout_s} s")
            clock.sleep(poll_s)
