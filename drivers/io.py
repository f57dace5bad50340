"""Driver I/O: one exchange at a time, straight to the VISA session, errors checked.

A query writes its pre-encoded command and reads the whole reply through the VISA library's
``write``/``read`` (no per-call logging or wrapper layers), under :mod:`.recovery`; a write is
followed by a read of the instrument's error reporting (:mod:`.reporting`). IEEE-488.2 binary
blocks are read to their declared length whatever bytes they hold. VISA failures become
:class:`~qnetlab.errors.InstrumentTimeout` or :class:`~qnetlab.errors.InstrumentConnectionError`.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

import pyvisa
from pyvisa import constants

from qnetlab.clock import clock_of
from qnetlab.errors import InstrumentConnectionError, InstrumentError, InstrumentTimeout

if TYPE_CHECKING:
    from .base import QnetlabVisaInstrument

_MAX_CNT = constants.StatusCode.success_max_count_read
_TIMEOUT = constants.StatusCode.error_timeout
_LOST = {constants.StatusCode.error_connection_lost, constants.StatusCode.error_invalid_object,
         constants.StatusCode.error_resource_not_found}


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


class DriverIO:
    """Mixin of :class:`~qnetlab.drivers.base.QnetlabVisaInstrument`: every exchange with the
    instrument (queries, writes with their error check, binary blocks, device clear)."""

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
        self._use_clock_lock()
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

    def _use_clock_lock(self) -> None:
        """Make the exchange lock the lab clock's own lock when it offers one (a simulated
        lab's discrete-event clock): a thread waiting for this instrument (the watchdog's
        alarm) then counts as blocked and lab time moves on for the others."""
        make = getattr(clock_of(self.visa_handle.visalib), "lock", None)
        if make is not None and self._io_depth == 0:
            self._io_lock = make(f"{self.name} exchange")

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
        """Set the terminators and the lean I/O that uses them (QCoDeS's ``VisaInstrument``
        calls this as soon as the session is open, so the I/O works from then on, also inside
        a QCoDeS driver's ``__init__`` that a qnetlab driver inherits too)."""
        super().set_terminator(terminator)
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
