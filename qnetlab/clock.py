"""The lab's clock: the one way sequences and drivers let time pass.

Sequences never call ``time.sleep``. They ask the clock of the lab they run on, which is a
:class:`WallClock` on hardware and a :class:`VirtualClock` on the simulated lab, where
``sleep(3600)`` returns at once with the lab one hour older. Hours of lab time therefore
simulate in seconds, and tests are deterministic.
"""

from __future__ import annotations

import logging
import socket
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


class ServedClock:
    """The time of a lab served over TCP (``qnetlab sim serve --speed N``), for a station that
    drives it over real sockets: ``now`` follows the served lab's clock, ``sleep(dt)`` waits
    ``dt / N`` wall seconds, alarms (:meth:`every`) fire every period of lab time.

    It reads the served lab's clock socket once (``:SYSTem:TIME?``, ``:SYSTem:SPEed?``) and then
    runs on the local monotonic clock at the same speed, as the server paces its lab. The
    served lab's station file names it (entry ``lab_clock``); ``qnetlab.stations.load`` makes it
    the station's clock. Hardware stations have no such entry and keep :class:`WallClock`.
    ``is_virtual`` is True: lab time is not wall time (the watchdog then uses its alarms).
    """

    is_virtual = True

    def __init__(self, host: str, port: int, timeout_s: float = 5.0) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError(f"ServedClock: port={port!r} must be a TCP port 1..65535")
        self.host, self.port, self.timeout_s = str(host), port, float(timeout_s)
        self._last = float("-inf")
        self._lock = threading.Lock()
        self.sync()

    def _ask(self, sock: socket.socket, query: str) -> str:
        sock.sendall(query.encode("ascii") + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(256)
            if not chunk:
                raise ConnectionError("closed by the server")
            reply += chunk
        return reply.decode("ascii").strip()

    def sync(self) -> None:
        """Read the served lab's time and speed again (at construction; after a restart)."""
        where = f"served lab clock at {self.host}:{self.port}"
        try:
            with socket.create_connection((self.host, self.port), self.timeout_s) as sock:
                speed = float(self._ask(sock, ":SYSTem:SPEed?"))
                sent = time.monotonic()
                lab = float(self._ask(sock, ":SYSTem:TIME?"))
                received = time.monotonic()
        except (OSError, ValueError) as exc:
            raise ConnectionError(f"{where}: not reachable ({exc})") from None
        if not speed > 0:
            raise ConnectionError(f"{where}: speed {speed!r} is not > 0")
        with self._lock:
            self.speed = speed
            self._lab0, self._wall0 = lab, (sent + received) / 2

    def now(self) -> float:
        with self._lock:
            t = self._lab0 + self.speed * (time.monotonic() - self._wall0)
            self._last = max(self._last, t)  # never backwards, even after a sync
            return self._last

    def sleep(self, seconds: float) -> None:
        if not seconds >= 0:
            raise ValueError(f"sleep: seconds={seconds!r} must be a number >= 0")
        time.sleep(seconds / self.speed)

    def every(self, period: float, callback: Callable[[float], None]) -> ThreadAlarm:
        """Call ``callback(t)`` every ``period`` seconds of lab time from now, on a thread of
        its own; returns the alarm (``.cancel()`` stops and joins it)."""
        if not period > 0:
            raise ValueError(f"every: period={period!r} must be a number > 0")
        return ThreadAlarm(self, float(period), callback)


class ThreadAlarm:
    """A periodic call in lab time on a clock that follows wall time (:class:`ServedClock`)."""

    def __init__(self, clock: ServedClock, period: float,
                 callback: Callable[[float], None]) -> None:
        self.clock, self.period, self.callback = clock, period, callback
        self.due = clock.now() + period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qnetlab-alarm", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(max(0.0, (self.due - self.clock.now()) / self.clock.speed)):
            try:
                self.callback(self.clock.now())
            except Exception:  # as the hardware watchdog thread: report, keep polling
                logging.getLogger("qnetlab.clock").exception("alarm callback failed")
            self.due += self.period
            if self.due <= self.clock.now():  # the callback took longer than a period
                self.due = self.clock.now() + self.period

    def cancel(self) -> None:
        """Stop calling; safe to call twice, also from the callback."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()


def clock_of(visalib: object) -> Clock:
    """The time base of a VISA library: a library that simulates a lab provides its lab clock
    (attribute ``clock``); any other library runs in real time."""
    clock = getattr(visalib, "clock", None)
    return clock if isinstance(clock, Clock) else WallClock()
