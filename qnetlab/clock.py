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


class Alarm:
    """A periodic call on a :class:`VirtualClock` (see :meth:`VirtualClock.every`)."""

    def __init__(self, clock: VirtualClock, period: float,
                 callback: Callable[[float], None]) -> None:
        self.clock = clock
        self.period = period
        self.callback = callback
        self.due = clock.now() + period
        self.firing = False

    def cancel(self) -> None:
        """Stop calling; safe to call twice."""
        if self in self.clock._alarms:
            self.clock._alarms.remove(self)


class VirtualClock:
    """Simulated time: ``sleep`` advances the clock instantly.

    Listeners registered with :meth:`on_advance` are told the new time after every advance,
    which is how the simulated physics catches up (lazily) with the clock. Alarms
    (:meth:`every`) are called at their period of lab time even inside one long advance (a
    measurement that lets an hour pass inside the simulated instrument): the advance stops
    at each due time, calls the alarm there, then goes on.
    The clock is thread-safe; time never goes backwards.
    """

    is_virtual = True

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[float], None]] = []
        self._alarms: list[Alarm] = []

    def now(self) -> float:
        return self._t

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (>= 0) and return the new time; alarms due on the
        way are called at their due times."""
        if not seconds >= 0:  # also rejects NaN
            raise ValueError(f"advance: seconds={seconds!r} must be a number >= 0")
        with self._lock:
            target = self._t + float(seconds)
        while (alarm := self._next_alarm(target)) is not None:
            self._move_to(alarm.due)
            alarm.due += alarm.period
            alarm.firing = True  # an alarm that lets time pass is not re-entered
            try:
                alarm.callback(self._t)
            finally:
                alarm.firing = False
                if alarm.due <= self._t:  # the callback itself let time pass: no burst
                    alarm.due = self._t + alarm.period
        return self._move_to(target)

    def _next_alarm(self, target: float) -> Alarm | None:
        due = [a for a in self._alarms if not a.firing and a.due <= target]
        return min(due, key=lambda a: a.due) if due else None

    def _move_to(self, t: float) -> float:
        with self._lock:
            self._t = max(self._t, t)
            t = self._t
        for listener in list(self._listeners):
            listener(t)
        return t

    def every(self, period: float, callback: Callable[[float], None]) -> Alarm:
        """Call ``callback(t)`` every ``period`` seconds of lab time from now, with the clock
        standing at ``t``; returns the :class:`Alarm` (``.cancel()`` to stop)."""
        if not period > 0:
            raise ValueError(f"every: period={period!r} must be a number > 0")
        alarm = Alarm(self, float(period), callback)
        self._alarms.append(alarm)
        return alarm

    def advance_to(self, t: float) -> float:
        """Move time forward to ``t``; a ``t`` in the past leaves the clock unchanged."""
        return self.advance(max(0.0, t - self._t))

    def reset(self, start: float = 0.0) -> None:
        """Set the clock back to ``start`` (used when the simulated lab is reset)."""
        with self._lock:
            self._t = float(start)
            for alarm in self._alarms:
                alarm.due = self._t + alarm.period

    def on_advance(self, listener: Callable[[float], None]) -> None:
        self._listeners.append(listener)


def clock_of(visalib: object) -> Clock:
    """The time base of a VISA library: a library that simulates a lab provides its lab clock
    (attribute ``clock``); any other library runs in real time."""
    clock = getattr(visalib, "clock", None)
    return clock if isinstance(clock, Clock) else WallClock()
