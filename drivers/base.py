"""What every qnetlab driver shares, written once; each concern lives in a module of its own.

- :mod:`.io`: driver I/O. After every write the instrument's error reporting is read; a VISA
  timeout raises :class:`~qnetlab.errors.InstrumentTimeout` naming instrument, command and
  timeout; a lost session raises :class:`~qnetlab.errors.InstrumentConnectionError`; binary
  blocks are read to their declared length.
- :mod:`.reporting`: how an instrument reports errors (SCPI error queue or IEEE-488.2
  ``*ESR?``); an error raises :class:`~qnetlab.errors.InstrumentError` with the command sent and
  the instrument's own message; a reply that does not parse makes the instrument say why.
- :mod:`.recovery`: bounded retries on the lab clock, reconnects, settings put back after a reset.
- :mod:`.limits`: hard safety limits (:class:`HardLimitParameter`) that hold even if a station
  file replaces the validator; emission and heating never come back by themselves.

This module assembles :class:`QnetlabVisaInstrument` from them and re-exports their public names
(``from qnetlab.drivers.base import X`` keeps working). Waiting goes through
:attr:`QnetlabVisaInstrument.clock`, never ``time.sleep``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from qcodes.instrument import InstrumentChannel, InstrumentModule, VisaInstrument

from qnetlab.clock import Clock, clock_of

from .io import DriverIO, _Exchange
from .limits import HardLimitParameter, SafetySettings
from .recovery import Recovery, RecoveryListener, RecoveryPolicy
from .reporting import ErrorReporting, GuardedParsers, ScpiErrorQueue, StandardEventStatus

if TYPE_CHECKING:
    from typing import Unpack

    from qcodes.instrument import VisaInstrumentKWArgs

__all__ = [
    "ErrorReporting",
    "HardLimitParameter",
    "QnetlabChannel",
    "QnetlabModule",
    "QnetlabVisaInstrument",
    "RecoveryListener",
    "RecoveryPolicy",
    "ScpiErrorQueue",
    "StandardEventStatus",
]

_GuardedParsers = GuardedParsers  # the name this mixin had before the split
_DEFAULT_RECOVERY = RecoveryPolicy()  # immutable: one default shared by every driver


class QnetlabModule(GuardedParsers, InstrumentModule):
    """A submodule of a qnetlab driver (parsers guarded like the instrument's)."""


class QnetlabChannel(GuardedParsers, InstrumentChannel):
    """A channel of a qnetlab driver (parsers guarded like the instrument's)."""


class QnetlabVisaInstrument(GuardedParsers, DriverIO, Recovery, SafetySettings, VisaInstrument):
    """Base of qnetlab drivers: error checks, timeouts, lean I/O, recovery, the lab clock.

    Cooperative: it passes ``name``, ``address`` and every other keyword on through
    ``super().__init__``, so a driver may also inherit a QCoDeS driver class, e.g.
    ``class QnetlabLakeshore(QnetlabVisaInstrument, LakeshoreModel372)``, and get qnetlab's
    I/O, error checks and recovery under that driver's parameters.

    Args:
        name: QCoDeS instrument name.
        address: VISA resource name.
        check_queries: also read the error reporting after every query (slower, stricter).
        clock: the lab clock to wait on; default: the VISA library's own (a simulated lab
            provides one), else real time.
        print_connect_message: print the "Connected to" line.
        recovery: how I/O failures are retried (None: not at all).
        **kwargs: forwarded to the next class's ``__init__`` (QCoDeS's ``VisaInstrument``).
    """

    error_reporting: ClassVar[ErrorReporting] = ScpiErrorQueue()
    default_timeout = 2.0

    def __init__(self, name: str, address: str, *, check_queries: bool = False,
                 clock: Clock | None = None, print_connect_message: bool = True,
                 recovery: RecoveryPolicy | None = _DEFAULT_RECOVERY,
                 **kwargs: Unpack[VisaInstrumentKWArgs]) -> None:
        #: Called with each of this instrument's recovery events ``{"instrument", "kind",
        #: "detail", "lab_time"}``; whoever runs a sequence on it (the CLI, through
        #: ``StationBundle.recovery_listener``) adds one that writes them into its runs.
        self.on_recovery: list[RecoveryListener] = []
        self.power_on_seen = False
        self.recovery = None  # not during the connection itself
        self.check_queries = check_queries
        self._clock = clock
        self._io_lock = threading.RLock()
        self._io_depth = 0
        self._io_owner: int | None = None
        self._exchange = _Exchange(self)
        self._visalib_spec = kwargs.get("visalib")
        self._settings: dict[str, str] = {}
        self._debug = False
        super().__init__(name, address, **kwargs)
        self._debug = self.visa_log.isEnabledFor(logging.DEBUG)
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

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, poll_s: float,
                 what: str) -> None:
        """Poll ``condition`` on the lab clock until true; ``TimeoutError`` after ``timeout_s``."""
        clock = self.clock
        deadline = clock.now() + timeout_s
        while not condition():
            if clock.now() >= deadline:
                raise TimeoutError(f"{self.name}: {what} not reached within {timeout_s} s")
            clock.sleep(poll_s)
