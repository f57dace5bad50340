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

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
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
    RecoveryFailed,
    SafetyLimitError,
)

if TYPE_CHECKING:
    from typing import Unpack

    from qcodes.instrument import VisaInstrumentKWArgs

_MAX_CNT = constants.StatusCode.success_max_count_read
_TIMEOUT = constants.StatusCode.error_timeout
_LOST = {constants.StatusCode.error_connection_lost, constants.StatusCode.error_invalid_object,
         constants.StatusCode.error_resource_not_found}


@dataclass(frozen=True)
class RecoveryPolicy:
    """Bounded retries with backoff on the lab clock (timeouts, disconnects, garbled replies)."""

    attempts: int = 3
    backoff_s: tuple[float, ...] = (1.0, 5.0, 30.0)

    def wait(self, attempt: int) -> float:
        return self.backoff_s[min(attempt, len(self.backoff_s) - 1)]


RecoveryListener = Callable[[dict[str, Any]], None]


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
                if root.recovery is None:
                    raise
                again = root._query(cmd)  # a garbled reply: ask once more
                value = parser(again)
                root._recovered("garbled_reply", f"unreadable reply {raw[:40]!r} to {cmd!r}; "
                                f"asked again")
                return value

        return guarded


class QnetlabModule(_GuardedParsers, InstrumentModule):
    """A submodule of a qnetlab driver (parsers guarded like the instrument's)."""


class QnetlabChannel(_GuardedParsers, InstrumentChannel):
    """A channel of a qnetlab driver (parsers guarded like the instrument's)."""


class _Exchange:
    """The re-entrant context of :meth:`QnetlabVisaInstrument.exchange` (a plain class: it
    sits on every query's path, where a generator-based context manager costs more)."""

    __slots__ = ("inst",)

    def __init__(self, inst: QnetlabVisaInstrument) -> None:
        self.inst = inst

    def __enter__(self) -> None:
        inst = self.inst
        inst._io_lock.acquire()
        if inst._io_depth == 0:
            inst._io_owner = threading.get_ident()
        inst._io_depth += 1

    def __exit__(self, *exc: object) -> None:
        inst = self.inst
        inst._io_depth -= 1
        if inst._io_depth == 0:
            inst._io_owner = None
        inst._io_lock.release()


class QnetlabVisaInstrument(_GuardedParsers, VisaInstrument):
    """Base of qnetlab drivers: error checks, timeouts, lean I/O, the lab clock.

    Args:
        name: QCoDeS instrument name.
        address: VISA resource name.
        check_queries: also read the error reporting after every query (slower, stricter).
        clock: the lab clock to wait on; default: the VISA library's own (a simulated lab
            provides one), else real time.
        print_connect_message: print the "Connected to" line.
        recovery: how I/O failures are retried (None: not at all).
        **kwargs: forwarded to :class:`~qcodes.instrument.VisaInstrument`.
    """

    error_reporting: ClassVar[ErrorReporting] = ScpiErrorQueue()
    default_timeout = 2.0

    #: Write heads that are actions, not settings: never replayed after a reset.
    ACTIONS: ClassVar[tuple[str, ...]] = ()
    #: Write heads of settings that make the instrument emit light or heat (laser output,
    #: shutter, heater range and output): never replayed after a reset, so that emission and
    #: heating return only through an explicit call, never by themselves.
    EMITS_OR_HEATS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, address: str, *, check_queries: bool = False,
                 clock: Clock | None = None, print_connect_message: bool = True,
                 recovery: RecoveryPolicy | None = RecoveryPolicy(),
                 **kwargs: Unpack[VisaInstrumentKWArgs]) -> None:
        #: Called with each of this instrument's recovery events ``{"instrument", "kind",
        #: "detail", "lab_time"}``; whoever runs a sequence on it (the CLI, through
        #: ``StationBundle.recovery_listener``) adds one that writes them into its runs.
        self.on_recovery: list[RecoveryListener] = []
        self.power_on_seen = False
        self.recovery = None  # not during the connection itself
        self._io_lock = threading.RLock()
        self._io_depth = 0
        self._io_owner: int | None = None
        self._exchange = _Exchange(self)
        self._visalib_spec = kwargs.get("visalib")
        self._settings: dict[str, str] = {}
        super().__init__(name, address, **kwargs)
        self.check_queries = check_queries
        self._clock = clock
        self._debug = self.visa_log.isEnabledFor(logging.DEBUG)
        self._setup_lean_io()
        self.error_reporting.drain(self)  # start from an empty error queue
        self._print_connect = print_connect_message
        self.recovery = recovery

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
    def exchange(self) -> _Exchange:
        """One exchange with the instrument (a write and its reply or error check), as a
        re-entrant context: other threads (the hardware watchdog) wait until it is over, so
        replies never interleave."""
        return self._exchange

    @property
    def in_exchange(self) -> bool:
        """True while this thread is inside an exchange with the instrument (for a watchdog
        polling from inside a long simulated measurement: this session must not be used)."""
        return self._io_depth > 0 and self._io_owner == threading.get_ident()

    def _setup_lean_io(self) -> None:
        """Cache the terminators and, for the session's life, silence the "warnings" chunked
        reads report (MAX_CNT, TERM_CHAR) through pyvisa's public ``ignore_warning``."""
        handle = self.visa_handle
        self._wterm = (handle.write_termination or "").encode(handle.encoding)
        self._rterm = handle.read_termination or ""
        self._rterm_b = self._rterm.encode(handle.encoding)
        quiet = getattr(self, "_quiet", None)
        if quiet is not None:
            quiet.close()
        self._quiet = contextlib.ExitStack()
        self._quiet.enter_context(handle.ignore_warning(
            _MAX_CNT, constants.StatusCode.success_termination_character_read))
        if self._raw_socket():
            # a raw socket has no END: a pause mid-reply must not end the read (pyvisa-py
            # otherwise returns what has come so far as a whole reply)
            handle.set_visa_attribute(constants.ResourceAttribute.suppress_end_enabled, True)

    def _raw_socket(self) -> bool:
        """True on a real raw TCP socket session (``::SOCKET`` on pyvisa-py)."""
        return self.visa_handle.resource_class == "SOCKET" and self.visabackend == "py"

    def device_clear(self) -> None:
        """Drop any unread reply. On a pyvisa-py raw socket, read and discard until 100 ms
        pass without data: pyvisa-py's own clear never returns once the peer has closed the
        socket, so recovery could not reach its reconnect."""
        if not self._raw_socket():
            super().device_clear()
            return
        handle = self.visa_handle
        timeout, handle.timeout = handle.timeout, 100
        try:
            for _ in range(1000):  # bounded even if the instrument never stops talking
                handle.visalib.read(handle.session, handle.chunk_size)
        except pyvisa.VisaIOError as exc:
            if exc.error_code != _TIMEOUT:
                raise
        except OSError as exc:
            raise InstrumentConnectionError(self.name, "(device clear)", str(exc)) from exc
        finally:
            handle.timeout = timeout

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
        except (pyvisa.errors.InvalidSession, OSError) as exc:  # OSError: socket reset or closed
            raise InstrumentConnectionError(self.name, cmd, str(exc)) from exc

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
        except (pyvisa.errors.InvalidSession, OSError) as exc:  # OSError: socket reset or closed
            raise InstrumentConnectionError(self.name, cmd, str(exc)) from exc
        return chunk

    def _query(self, cmd: str) -> str:
        """Write ``cmd`` and read one reply (with recovery), without error checks."""
        return self._with_recovery(cmd, lambda: self._query_once(cmd))

    def _query_once(self, cmd: str) -> str:
        try:
            with self.exchange():
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

    def _query_binary(self, cmd: str) -> bytes | memoryview:
        """Write ``cmd`` and return the payload of its IEEE-488.2 block reply (with recovery).

        A definite-length block is read to its declared length whatever bytes it holds (a
        termination character inside the payload does not end it), then its terminator."""
        return self._with_recovery(cmd, lambda: self._query_binary_once(cmd))

    def _query_binary_once(self, cmd: str) -> bytes | memoryview:
        try:
            with self.exchange():
                self._send(cmd)
                raw = self._receive(cmd)  # up to the first terminator (0x0A) or the whole reply
                if not raw.startswith(b"#"):
                    messages = self.error_reporting.drain(self)
                    raise InstrumentError(self.name, cmd,
                                          messages or [f"not a binary block: {raw[:40]!r}"])
                return self._read_block(cmd, raw)
        except KeyboardInterrupt:
            self._resync()
            raise

    def _read_block(self, cmd: str, raw: bytes) -> bytes | memoryview:
        """The payload of the block that ``raw`` (its first read) begins."""
        start, length = self._block_header(cmd, raw)
        while start > len(raw):  # the header itself came in pieces
            raw += self._read_exactly(cmd, start - len(raw))
            start, length = self._block_header(cmd, raw)
        if length < 0:  # "#0": indefinite length, ended by the terminator
            while self._rterm_b and not raw.endswith(self._rterm_b):
                raw += self._receive(cmd)
            return raw[start : len(raw) - len(self._rterm_b)]
        total = start + length + len(self._rterm_b)
        if len(raw) < total:
            raw += self._read_exactly(cmd, total - len(raw))
        return memoryview(raw)[start : start + length]  # no copy: np.frombuffer reads it

    def _block_header(self, cmd: str, raw: bytes) -> tuple[int, int]:
        """``(payload offset, declared length)`` of an IEEE-488.2 block (-1 for ``#0``); an
        offset past ``raw`` when the header is not all there yet."""
        if len(raw) < 2:
            return 2, 0
        digits = raw[1:2]
        if not digits.isdigit():
            raise InstrumentError(self.name, cmd, [f"malformed block header: {raw[:40]!r}"])
        n = int(digits)
        if n == 0:
            return 2, -1
        size = raw[2 : 2 + n]
        if len(size) < n:
            return 2 + n, 0
        if not size.isdigit():
            raise InstrumentError(self.name, cmd, [f"malformed block header: {raw[:40]!r}"])
        return 2 + n, int(size)

    def _read_exactly(self, cmd: str, count: int) -> bytes:
        """Read ``count`` more bytes with the termination character off (so a 0x0A in the
        payload does not end a read), then put the session's termination setting back (a
        simulated session returns whole messages and has no setting to change)."""
        handle = self.visa_handle
        lib, session = handle.visalib, handle.session
        term_en = constants.ResourceAttribute.termchar_enabled
        was_enabled = (bool(self._rterm) and self.visabackend != "sim"
                       and handle.get_visa_attribute(term_en))
        parts: list[bytes] = []
        try:
            if was_enabled:
                handle.set_visa_attribute(term_en, False)
            while count > 0:
                chunk, _ = lib.read(session, count)
                if not chunk:  # an END with nothing after it: never loop on empty reads
                    raise InstrumentTimeout(self.name, cmd, handle.timeout / 1000
                                            if handle.timeout else None)
                parts.append(chunk)
                count -= len(chunk)
        except pyvisa.VisaIOError as exc:
            raise self._map_visa_error(exc, cmd) from exc
        except (pyvisa.errors.InvalidSession, OSError) as exc:  # OSError: socket reset or closed
            raise InstrumentConnectionError(self.name, cmd, str(exc)) from exc
        finally:
            if was_enabled:
                self._restore_termchar(term_en)
        return b"".join(parts)

    def _restore_termchar(self, attribute: constants.ResourceAttribute) -> None:
        try:
            self.visa_handle.set_visa_attribute(attribute, True)
        except (pyvisa.Error, pyvisa.errors.InvalidSession):
            pass  # the session is gone: a reconnect sets up a fresh one

    def _resync(self) -> None:
        """After an interrupted exchange: drop any half-read reply so the next query is in step."""
        try:
            self.device_clear()
        except Exception:  # best effort while propagating the interrupt
            self.visa_log.exception("device clear after interrupt failed")

    def write_raw(self, cmd: str) -> None:
        with self.exchange():  # the write and its error check, not split by another thread
            try:
                self._with_recovery(cmd, lambda: self._send(cmd))
            except KeyboardInterrupt:
                self._resync()
                raise
            self.raise_on_errors(cmd)
        self._remember(cmd)

    # --- recovery ------------------------------------------------------------------------------
    def safe_state(self) -> None:
        """Put every emitter and heater of the instrument into its safe state (default: the
        instrument has none). Called on interrupts, signals and watchdog trips."""

    def safety_readback(self) -> str:
        """The state of the instrument's emitters and heaters, read back from it (empty when
        it has none): what an operator checks after :meth:`safe_state`."""
        return ""

    def after_reset(self) -> None:
        """Called once the settings are back after a power-on reset (default: nothing).
        Drivers of emitters close what a power-on default could have left open."""

    def _remember(self, cmd: str) -> None:
        """Keep the last value of every setting, to put back after the instrument resets;
        settings that emit or heat (:attr:`EMITS_OR_HEATS`) are never kept."""
        head, sep, args = cmd.partition(" ")
        if not sep or "?" in head or cmd.startswith(self.ACTIONS):
            return
        if cmd.startswith(self.EMITS_OR_HEATS):
            return
        key = f"{head} {args.split(',')[0]}" if "," in args else head
        self._settings.pop(key, None)
        self._settings[key] = cmd

    def _recovered(self, kind: str, detail: str) -> None:
        event = {"instrument": self.name, "kind": f"recovery: {kind}", "detail": detail,
                 "lab_time": self.clock.now()}
        self.visa_log.warning(f"{kind}: {detail}")
        for listener in list(self.on_recovery):
            listener(event)

    def _with_recovery(self, cmd: str, action: Callable[[], Any]) -> Any:
        policy = self.recovery
        if policy is None:
            return action()
        failure: Exception | None = None
        for attempt in range(policy.attempts + 1):
            try:
                result = action()
            except (InstrumentTimeout, InstrumentConnectionError) as exc:
                failure = exc
            else:
                if failure is not None:
                    self._recovered(type(failure).__name__, f"{cmd!r} succeeded on attempt "
                                    f"{attempt + 1} after: {failure}")
                return result
            if attempt == policy.attempts:
                break
            self.clock.sleep(policy.wait(attempt))
            try:
                if isinstance(failure, InstrumentConnectionError):
                    self._reconnect()
                else:
                    self.device_clear()  # drop the late reply so the next one is in step
            except (pyvisa.Error, InstrumentConnectionError) as exc:
                failure = InstrumentConnectionError(self.name, cmd, str(exc))
        raise RecoveryFailed(self.name, cmd, policy.attempts, failure)  # type: ignore[arg-type]

    def _reconnect(self) -> None:
        """Open a new VISA session to the same address (after a disconnect)."""
        old = self.visa_handle
        read_t, write_t, timeout = old.read_termination, old.write_termination, old.timeout
        address = self.address
        rm = pyvisa.ResourceManager(self._visalib_spec) if self._visalib_spec else \
            pyvisa.ResourceManager()
        new = rm.open_resource(address)  # raises while the instrument is still away
        try:
            old.close()
        except pyvisa.Error:
            pass
        self._visa_handle = new  # type: ignore[assignment]
        self._visa_handle.read_termination = read_t
        self._visa_handle.write_termination = write_t
        self._visa_handle.timeout = timeout
        self._setup_lean_io()
        self._recovered("reconnected", f"new session to {address}")
        self.check_reset()

    def check_reset(self) -> bool:
        """Detect a power-on reset (``*ESR?`` bit 7); if so, put every setting back except
        those that emit or heat (see :attr:`EMITS_OR_HEATS`), then :meth:`after_reset`."""
        policy, self.recovery = self.recovery, None
        try:
            with self.exchange():
                reset = self._replay_after_reset()
        finally:
            self.recovery = policy
        if reset:
            self.after_reset()
            heads = ", ".join(h.strip() for h in self.EMITS_OR_HEATS)
            held = f"; emission and heating left off ({heads} not re-applied)" if heads else ""
            self._recovered("reset", f"instrument reset itself; {len(self._settings)} settings "
                            f"re-applied{held}")
        return reset

    def _replay_after_reset(self) -> bool:
        if isinstance(self.error_reporting, StandardEventStatus):
            self.error_reporting.drain(self)
            reset = self.power_on_seen
        else:
            reset = bool(int(self._query_once("*ESR?")) & StandardEventStatus.POWER_ON)
        self.power_on_seen = False
        if reset:
            for cmd in list(self._settings.values()):
                self._send(cmd)
            self.raise_on_errors("settings re-applied after a reset")
        return reset

    def ask_raw(self, cmd: str) -> str:
        if not self.check_queries:
            return self._query(cmd)  # one exchange (locked inside)
        with self.exchange():
            reply = self._query(cmd)
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
