"""The lab's clock: the one way sequences and drivers let time pass.

Sequences never call ``time.sleep``. They ask the clock of the lab they run on, which is a
:class:`WallClock` on hardware and a :class:`VirtualClock` on the simulated lab, where
``sleep(3600)`` returns at once with the lab one hour older. Hours of lab time therefore
simulate in seconds, and tests are deterministic.
"""

from __future__ import annotations

import itertools
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What a sequence needs from time: read it, and wait for it."""

    def now(self) -> float:
        """Seconds since the clock's epoch (monotonic)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of lab time pass."""
        ...


class ThreadHandle:
    """A thread started by a real-time clock's ``spawn``: ``join()``, ``done``, ``error``."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        self.name, self.error = name, None
        self._target = target
        self._thread = threading.Thread(target=self._run, name=f"qnetlab-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as exc:  # kept for whoever joins
            self.error = exc

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self) -> None:
        self._thread.join()


class RealTimeThreads:
    """Concurrency on a clock that follows wall time: plain threads and locks (the same
    calls as :class:`VirtualClock`'s participants, so the same code runs on both)."""

    def lock(self, name: str = "lock") -> threading.RLock:
        return threading.RLock()

    def participant(self, name: str) -> nullcontext[None]:
        return nullcontext()

    def spawn(self, name: str, target: Callable[[], None]) -> ThreadHandle:
        return ThreadHandle(name, target)


class WallClock(RealTimeThreads):
    """Real time, for hardware: ``now`` is Unix time (so calibration ages survive a restart of
    the process), ``sleep`` really waits."""

    is_virtual = False

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"sleep: seconds={seconds!r} must be >= 0")
        time.sleep(seconds)


class ClockDeadlock(RuntimeError):
    """Every participant of a :class:`VirtualClock` is blocked on a lock or a wait that only
    another participant could end: lab time can never move again."""


_READY, _RUNNING, _SLEEPING, _BLOCKED, _DONE = "ready", "running", "sleeping", "blocked", "done"


class Participant:
    """A thread taking part in discrete-event time on a :class:`VirtualClock` (see
    :meth:`VirtualClock.participant`). Exactly one participant runs at a time (it holds the
    clock's baton); the others sleep until a lab time, wait on a :class:`ClockLock` or a
    condition, or are ready to run. Order among those ready at one lab time: alarms first,
    then by ``(name, registration number)``: never by the OS's thread scheduling."""

    def __init__(self, clock: VirtualClock, name: str, seq: int, alarm: Alarm | None) -> None:
        self.clock, self.name, self.alarm = clock, name, alarm
        self.order = (alarm is None, name, seq)
        self.state = _READY
        self.wake = math.inf
        self.until: Callable[[], bool] | None = None  # what a blocked participant waits for
        self.lock: ClockLock | None = None
        self.error: BaseException | None = None
        self.stop = False  # an alarm thread asked to end
        self.in_callback = False  # an alarm thread inside its callback (its waits are real)

    @property
    def done(self) -> bool:
        return self.state == _DONE

    def join(self) -> None:
        """Wait until this participant's thread has finished (blocked, for a participant)."""
        self.clock.wait_until(lambda: self.state == _DONE)


class ClockLock:
    """A re-entrant lock of a :class:`VirtualClock`: a participant waiting for it counts as
    blocked, so lab time moves on for the others while it waits (a plain lock would hold the
    clock's baton and stall everybody). Threads that are not participants wait plainly."""

    def __init__(self, clock: VirtualClock, name: str) -> None:
        self.clock, self.name = clock, name
        self._owner: int | None = None
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me, cv = threading.get_ident(), self.clock._cv
        with cv:
            if self._owner == me:
                self._count += 1
                return True
            if self._owner is not None and not blocking:
                return False
            part = self.clock._parts.get(me)
            while self._owner is not None:
                if part is None:
                    cv.wait()
                else:
                    self.clock._block(part, lambda: self._owner is None, self)
            self._owner, self._count = me, 1
            return True

    def release(self) -> None:
        cv = self.clock._cv
        with cv:
            if self._owner != threading.get_ident():
                raise RuntimeError(f"clock lock {self.name!r} released by a thread that does "
                                   "not hold it")
            self._count -= 1
            if self._count == 0:
                self._owner = None
                cv.notify_all()
                self.clock._schedule()

    def owned(self) -> bool:
        """True if the calling thread holds the lock."""
        return self._owner == threading.get_ident()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


class Alarm:
    """A periodic call on a :class:`VirtualClock` (see :meth:`VirtualClock.every`)."""

    def __init__(self, clock: VirtualClock, period: float,
                 callback: Callable[[float], None]) -> None:
        self.clock = clock
        self.period = period
        self.callback = callback
        self.due = clock.now() + period
        self.firing = False
        self.part: Participant | None = None  # its thread while the clock has participants

    def cancel(self) -> None:
        """Stop calling; safe to call twice, also from the callback."""
        with self.clock._cv:
            if self in self.clock._alarms:
                self.clock._alarms.remove(self)
            self.clock._stop_alarm(self)

    def fire(self) -> None:
        """Call back at the due time, then set the next due time (no burst after a callback
        that let time pass)."""
        self.due += self.period
        self.firing = True  # an alarm that lets time pass is not re-entered
        try:
            self.callback(self.clock.now())
        finally:
            self.firing = False
            if self.due <= self.clock.now():
                self.due = self.clock.now() + self.period


class VirtualClock:
    """Simulated time: ``sleep`` advances the clock instantly.

    Listeners registered with :meth:`on_advance` are told the new time after every advance,
    which is how the simulated physics catches up (lazily) with the clock. Alarms
    (:meth:`every`) are called at their period of lab time even inside one long advance (a
    measurement that lets an hour pass inside the simulated instrument): the advance stops
    at each due time, calls the alarm there, then goes on.
    The clock is thread-safe; time never goes backwards.

    **Several participants (discrete-event time).** Threads registered with
    :meth:`participant` (or started with :meth:`spawn`) share lab time conservatively: one
    runs at a time, and the clock advances only when none can run (each sleeps until a lab
    time, or waits on a :class:`ClockLock` or :meth:`wait_until`), to the earliest wake-up,
    waking exactly those due then. Lab time is never lost or invented and the interleaving
    depends only on lab times and participants' names, so a seeded run is identical every
    time. While participants exist, each alarm runs on a participant thread of its own (an
    alarm that talks to an instrument may wait for its lock). If every participant waits
    for another, each gets :class:`ClockDeadlock`. Threads that are not participants keep
    the behaviour above: their ``sleep`` advances at once.
    """

    is_virtual = True

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[float], None]] = []
        self._alarms: list[Alarm] = []
        self._cv = threading.Condition(threading.Lock())
        self._parts: dict[int, Participant] = {}  # thread ident -> participant
        self._all: list[Participant] = []  # registered and not done
        self._running: Participant | None = None
        self._seq = itertools.count()

    def now(self) -> float:
        return self._t

    def is_participant(self) -> bool:
        """True if the calling thread is a participant (see the class docstring)."""
        return threading.get_ident() in self._parts

    def sleep(self, seconds: float) -> None:
        part = self._parts.get(threading.get_ident())
        if part is None:
            self.advance(seconds)
            return
        if not seconds >= 0:
            raise ValueError(f"sleep: seconds={seconds!r} must be a number >= 0")
        with self._cv:
            part.state, part.wake = _SLEEPING, self._t + float(seconds)
            self._yield(part)

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (>= 0) and return the new time; alarms due on the
        way are called at their due times (by a participant: :meth:`sleep`)."""
        if not seconds >= 0:  # also rejects NaN
            raise ValueError(f"advance: seconds={seconds!r} must be a number >= 0")
        if threading.get_ident() in self._parts:
            self.sleep(seconds)
            return self._t
        with self._lock:
            target = self._t + float(seconds)
        while (alarm := self._next_alarm(target)) is not None:
            self._move_to(alarm.due)
            alarm.fire()
        t = self._move_to(target)
        if self._all:
            with self._cv:  # participants whose wake-up this passed run now
                for part in self._all:
                    if part.state == _SLEEPING and part.wake <= t:
                        part.state = _READY
                self._schedule()
        return t

    def _next_alarm(self, target: float) -> Alarm | None:
        due = [a for a in self._alarms if not a.firing and a.part is None and a.due <= target]
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
        with self._cv:
            self._alarms.append(alarm)
            if any(p.alarm is None for p in self._all):
                self._start_alarm(alarm)
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

    # --- participants (discrete-event time) ------------------------------------------------
    def lock(self, name: str = "lock") -> ClockLock:
        """A re-entrant lock whose waiting participants count as blocked."""
        return ClockLock(self, name)

    @contextmanager
    def participant(self, name: str) -> Iterator[Participant]:
        """Make the calling thread a participant for the block (see the class docstring)."""
        with self._cv:
            part = self._register(name, None)
            self._bind(part)
        try:
            yield part
        finally:
            self._leave(part)

    def spawn(self, name: str, target: Callable[[], None]) -> Participant:
        """Run ``target`` on a new thread that is a participant from this call on (so it
        starts at this lab time, in a deterministic order); ``.join()`` the returned
        participant to wait for it. An exception of ``target`` is kept in ``.error``."""
        with self._cv:
            part = self._register(name, None)

        def run() -> None:
            with self._cv:
                self._bind(part)
            try:
                target()
            except BaseException as exc:  # kept for whoever joins
                part.error = exc
            finally:
                self._leave(part)

        threading.Thread(target=run, name=f"qnetlab-{name}", daemon=True).start()
        return part

    def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Block until ``predicate()`` (evaluated under the clock's lock, must be cheap) is
        true: as a participant, blocked (time moves on for the others)."""
        with self._cv:
            part = self._parts.get(threading.get_ident())
            while not predicate():
                if part is None:
                    self._cv.wait(0.05)
                else:
                    self._block(part, predicate, None)

    def _register(self, name: str, alarm: Alarm | None) -> Participant:
        part = Participant(self, name, next(self._seq), alarm)
        first = alarm is None and not any(p.alarm is None for p in self._all)
        self._all.append(part)
        if first:
            for a in self._alarms:
                self._start_alarm(a)
        return part

    def _bind(self, part: Participant) -> None:
        """The calling thread is ``part``; wait for its turn."""
        self._parts[threading.get_ident()] = part
        self._schedule()
        self._await_turn(part)

    def _leave(self, part: Participant) -> None:
        with self._cv:
            self._parts.pop(threading.get_ident(), None)
            part.state = _DONE
            if part in self._all:
                self._all.remove(part)
            if self._running is part:
                self._running = None
            if not any(p.alarm is None for p in self._all):
                for alarm in list(self._alarms):
                    self._stop_alarm(alarm)
            self._cv.notify_all()
            self._schedule()

    def _block(self, part: Participant, until: Callable[[], bool], lock: ClockLock | None
               ) -> None:
        part.state, part.until, part.lock = _BLOCKED, until, lock
        try:
            self._yield(part)
        finally:
            part.until, part.lock = None, None

    def _yield(self, part: Participant) -> None:
        """Give up the baton (``part`` sleeps or is blocked) and wait for it again."""
        if self._running is part:
            self._running = None
        self._schedule()
        self._await_turn(part)

    def _await_turn(self, part: Participant) -> None:
        while part.state != _RUNNING:
            self._cv.wait()
        if part.error is not None:
            error, part.error = part.error, None
            raise error

    def _schedule(self) -> None:
        """Give the baton to the first ready participant; if none, advance lab time to the
        earliest wake-up (called with the clock's lock held)."""
        while self._running is None and self._all:
            for part in self._all:
                if part.state == _BLOCKED and part.until is not None and part.until():
                    part.state = _READY
            ready = [p for p in self._all if p.state == _READY]
            if ready:
                self._running = min(ready, key=lambda p: p.order)
                self._running.state = _RUNNING
                self._cv.notify_all()
                return
            sleepers = [p for p in self._all if p.state == _SLEEPING]
            if not self._may_advance(sleepers):
                if any(p.state == _READY for p in self._all):
                    continue  # deadlocked participants run on, one at a time, to their error
                return
            t = min(p.wake for p in sleepers)
            self._move_to(t)
            for part in sleepers:
                if part.wake <= t:
                    part.state = _READY

    def _may_advance(self, sleepers: list[Participant]) -> bool:
        """Whether time may move on: some participant sleeps that is not an alarm (or is an
        alarm being retired), or an alarm sleeps holding a lock a participant waits for.
        Otherwise, when every participant waits for another participant, raise
        :class:`ClockDeadlock` in each."""
        blocked = [p for p in self._all if p.state == _BLOCKED]
        # an alarm being retired (the last other participant left while its callback ran)
        # finishes that callback on lab time like anyone else, then leaves
        if any(p.alarm is None or p.stop for p in sleepers):
            return True
        owners = {p.lock._owner for p in blocked if p.lock is not None}
        mine = {ident for ident, p in self._parts.items() if p in self._all}
        if sleepers and owners & {i for i, p in self._parts.items() if p.alarm is not None}:
            return True
        if not blocked or any(o is not None and o not in mine for o in owners):
            return False  # only alarms left, or a thread outside the clock will release
        # those waiting on locks form the cycle; those waiting on a condition (a join) may
        # go on once the others have unwound
        stuck = [p for p in blocked if p.lock is not None] or blocked
        names = ", ".join(p.name for p in stuck)
        for part in stuck:
            part.state = _READY
            part.error = ClockDeadlock(
                f"lab clock deadlock at t={self._t:g} s: every participant waits for another "
                f"({names})")
        return False

    def _start_alarm(self, alarm: Alarm) -> None:
        if alarm.part is not None:
            return
        # named by creation order: alarms due at one time run in a deterministic order
        part = alarm.part = self._register(f"alarm-{self._alarms.index(alarm):04d}", alarm)
        threading.Thread(target=self._alarm_loop, args=(alarm, part),
                         name="qnetlab-alarm", daemon=True).start()

    def _stop_alarm(self, alarm: Alarm) -> None:
        part, alarm.part = alarm.part, None
        if part is not None:
            part.stop = True
            if part.state == _SLEEPING and not part.in_callback:  # waiting for its next due
                part.state = _READY
            self._schedule()

    def _alarm_loop(self, alarm: Alarm, part: Participant) -> None:
        """An alarm's own participant: sleep to each due time, call back there."""
        with self._cv:
            self._bind(part)
        try:
            while not part.stop:
                with self._cv:
                    if alarm.due > self._t:
                        part.state, part.wake = _SLEEPING, alarm.due
                        self._yield(part)
                if part.stop:
                    break
                part.in_callback = True
                try:
                    alarm.fire()
                except Exception:  # as the hardware watchdog thread: report, keep polling
                    logging.getLogger("qnetlab.clock").exception("alarm callback failed")
                finally:
                    part.in_callback = False
        finally:
            self._leave(part)


class ServedClock(RealTimeThreads):
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


def wait_releasing(clock: Any, lock: Any, seconds: float) -> None:
    """Let ``seconds`` of lab time pass inside a simulated instrument that holds ``lock`` (a
    ``threading.RLock``, the lab's lock). A participant of a discrete-event clock lets the
    lock go while it waits (other participants' instruments go on meanwhile) and takes it
    back at its wake-up; anybody else advances the clock at once, as always."""
    if lock is None or not getattr(clock, "is_participant", bool)() or not lock._is_owned():
        clock.advance(seconds)
        return
    state = lock._release_save()  # the whole re-entrant hold, as threading.Condition does
    try:
        clock.sleep(seconds)
    finally:
        lock._acquire_restore(state)


def clock_of(visalib: object) -> Clock:
    """The time base of a VISA library: a library that simulates a lab provides its lab clock
    (attribute ``clock``); any other library runs in real time."""
    clock = getattr(visalib, "clock", None)
    return clock if isinstance(clock, Clock) else WallClock()
