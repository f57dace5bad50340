"""The lab's clock: the one way sequences and drivers let time pass.

Sequences never call ``time.sleep``. They ask the clock of the lab they run on, which is a
:class:`WallClock` on hardware and a :class:`VirtualClock` on the simulated lab, where
``sleep(3600)`` returns at once with the lab one hour older. Hours of lab time therefore
simulate in seconds, and tests are deterministic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What a sequence needs from time: read it, and wait for it."""

    def now(self) -> float:
        """Seconds since the clock's epoch (monotonic)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of lab time pass."""
        ...


class WallClock:
    """Real time, for hardware: ``now`` is Unix time (so calibration ages survive a restart of
    the process), ``sleep`` really waits."""

    is_virtual = False

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"sleep: seconds={seconds!r} must be >= 0")
        time.sleep(seconds)


class VirtualClock:
    """Simulated time: ``sleep`` advances the clock instantly.

    Listeners registered with :meth:`on_advance` are told the new time after every advance,
    which is how the simulated physics catches up (lazily) with the clock.
    The clock is thread-safe; time never goes backwards.
    """

    is_virtual = True

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[float], None]] = []

    def now(self) -> float:
        return self._t

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (>= 0) and return the new time."""
        if not seconds >= 0:  # also rejects NaN
            raise ValueError(f"advance: seconds={seconds!r} must be a number >= 0")
        with self._lock:
            self._t += float(seconds)
            t = self._t
        for listener in list(self._listeners):
            listener(t)
        return t

    def advance_to(self, t: float) -> float:
        """Move time forward to ``t``; a ``t`` in the past leaves the clock unchanged."""
        return self.advance(max(0.0, t - self._t))

    def reset(self, start: float = 0.0) -> None:
        """Set the clock back to ``start`` (used when the simulated lab is reset)."""
        with self._lock:
            self._t = float(start)

    def on_advance(self, listener: Callable[[float], None]) -> None:
        self._listeners.append(listener)


def clock_of(visalib: object) -> Clock:
    """The time base of a VISA library: a library that simulates a lab provides its lab clock
    (attribute ``clock``); any other library runs in real time."""
    clock = getattr(visalib, "clock", None)
    return clock if isinstance(clock, Clock) else WallClock()
