"""Safety interlocks while sequences run: a watchdog on the lab clock (after Bluesky's suspenders).

The watchdog polls conditions on QCoDeS parameters every ``poll_s`` of lab time. A trip runs the
safe action at once (pump output off), within that poll; the sequence is then
suspended, not lost: its next wait does not return until the conditions have stayed clear for
``settle_s``, when the resume action restores what the safe action took away. A hard trip
aborts: safe action, then :class:`SequenceAborted` out of the sequence's wait, data kept.

States form an explicit machine::

    running -> suspending -> suspended -> resuming -> running
    resuming -> suspending            (tripped again while resuming)
    any -> aborted                    (hard trip; final)

Every transition is an event (lab time, kind, detail) written into the runs open at the time.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from qnetlab.clock import Clock
from qnetlab.errors import QnetlabError
from qnetlab.stations import StationBundle


class State(enum.StrEnum):
    RUNNING = "running"
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    RESUMING = "resuming"
    ABORTED = "aborted"


TRANSITIONS: dict[State, set[State]] = {
    State.RUNNING: {State.SUSPENDING, State.ABORTED},
    State.SUSPENDING: {State.SUSPENDED, State.ABORTED},
    State.SUSPENDED: {State.RESUMING, State.ABORTED},
    State.RESUMING: {State.RUNNING, State.SUSPENDING, State.ABORTED},
    State.ABORTED: set(),
}


class SequenceAborted(QnetlabError):
    """A hard interlock trip ended the sequence (its data is kept)."""

    run_status = "aborted"


class IllegalTransition(QnetlabError):
    pass


@dataclass
class Condition:
    """A named check: ``check()`` returns (ok, detail). A hard condition aborts.
    ``instruments`` are those the check talks to (skipped while one is mid-exchange)."""

    name: str
    check: Callable[[], tuple[bool, str]]
    hard: bool = False
    instruments: tuple[Any, ...] = ()


def mxc_ceiling(fridge: Any, ceiling_k: float, hard: bool = False) -> Condition:
    def check() -> tuple[bool, str]:
        t = fridge.mxc.temperature()
        return t <= ceiling_k, f"MXC {t * 1e3:.2f} mK (ceiling {ceiling_k * 1e3:.1f} mK)"
    return Condition(f"{fridge.name}: MXC ceiling", check, hard, (fridge,))


def mxc_rate(fridge: Any, clock: Clock, max_k_per_s: float) -> Condition:
    last: dict[str, float] = {}

    def check() -> tuple[bool, str]:
        t, now = fridge.mxc.temperature(), clock.now()
        rate = (t - last["t"]) / (now - last["now"]) if last and now > last["now"] else 0.0
        last.update(t=t, now=now)
        return rate <= max_k_per_s, f"MXC rising {rate * 1e3:.3f} mK/s"
    return Condition(f"{fridge.name}: MXC rate of rise", check, instruments=(fridge,))


def pump_power(pump: Any, max_dbm: float) -> Condition:
    def check() -> tuple[bool, str]:
        p = pump.power_actual()
        return p <= max_dbm, f"pump emitting {p:.2f} dBm (limit {max_dbm:.1f})"
    return Condition(f"{pump.name}: power", check, instruments=(pump,))


def fridge_interlock(gas: Any) -> Condition:
    """The fridge interlock, as the node's Triton (role ``gas``) reports it."""
    def check() -> tuple[bool, str]:
        state = gas.interlock_state()
        return state == "OK", f"fridge interlock {state}"
    return Condition(f"{gas.name}: interlock", check, hard=True, instruments=(gas,))


def remote_health(bundle: StationBundle, node: str, ceiling_k: float) -> Condition:
    fridge, gas = bundle.node(node)["fridge"], bundle.node(node)["gas"]

    def check() -> tuple[bool, str]:
        state, t = gas.interlock_state(), fridge.mxc.temperature()
        return state == "OK" and t <= ceiling_k, f"{node}: interlock {state}, MXC " \
                                                   f"{t * 1e3:.2f} mK"
    return Condition(f"remote node {node}", check, instruments=(fridge, gas))


class Watchdog:
    """Polls conditions on the clock, runs the safe action on a trip, suspends and resumes."""

    def __init__(self, clock: Clock, conditions: Sequence[Condition],
                 safe_action: Callable[[], None], resume_action: Callable[[], None],
                 poll_s: float = 1.0, settle_s: float = 60.0,
                 on_event: Callable[[dict[str, Any]], None] | None = None,
                 health: Sequence[Callable[[], Any]] = (),
                 instruments: Sequence[Any] = ()) -> None:
        if poll_s <= 0 or settle_s < 0:
            raise ValueError(f"poll_s={poll_s} must be > 0 and settle_s={settle_s} >= 0")
        self.clock = clock
        self.conditions = list(conditions)
        self.safe_action = safe_action
        self.resume_action = resume_action
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.on_event = on_event
        self.health = list(health)  # e.g. reset detection: runs at every poll
        self.instruments = list(instruments)  # those the safe action talks to
        self.state = State.RUNNING
        self.events: list[dict[str, Any]] = []
        self._clear_since: float | None = None
        self.last_trip: dict[str, Any] | None = None
        self.last_clear_poll: float | None = None
        #: Called first at every poll of the sequence's own waits: raises to stop the sequence
        #: at this safe point (the CLI's pending SIGTERM/SIGHUP).
        self.stop_check: Callable[[], None] | None = None
        self._poll_lock = threading.RLock()  # the sequence's polls and the in-call ones
        self._polling = False
        self._in_wait = False  # the sequence's own wait polls: in-call polls stand aside
        self._last_poll: float | None = None  # lab time of the last poll (any kind)

    def _event(self, kind: str, detail: str) -> None:
        event = {"lab_time": self.clock.now(), "kind": kind, "detail": detail}
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def transition(self, new: State, detail: str = "") -> None:
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"watchdog: {self.state} -> {new} is not allowed")
        self.state = new
        self._event(new.value, detail)

    def _trips(self, skip_busy: bool = False) -> list[tuple[Condition, str]]:
        trips = []
        for cond in self.conditions:
            if skip_busy and _busy(cond.instruments):
                continue
            ok, detail = cond.check()
            if not ok:
                trips.append((cond, f"{cond.name}: {detail}"))
        return trips

    def _check_health(self, skip_busy: bool) -> None:
        for check in self.health:
            owner = getattr(check, "__self__", None)
            if skip_busy and _busy((owner,)):
                continue
            if check() is True:
                self._event("instrument_reset", f"{getattr(owner, 'name', 'an instrument')} "
                            "reset itself; settings re-applied, emission and heating left off")

    def poll(self) -> State:
        """Check once; act on the result. Raises SequenceAborted on a hard trip."""
        if self.state is State.ABORTED:
            why = next((e["detail"] for e in reversed(self.events) if e["kind"] == "aborted"),
                       "")
            raise SequenceAborted(f"the watchdog aborted this sequence earlier: hard interlock "
                                  f"trip: {why}")
        self._check_stop()
        with self._poll_lock:
            self._polling = True
            try:
                return self._poll(resume=True, skip_busy=False)
            finally:
                self._polling = False

    def poll_in_call(self, _t: float | None = None) -> None:
        """A poll while the sequence is blocked inside an instrument call (from the virtual
        clock's alarm inside a long simulated measurement, or from the hardware watchdog
        thread). It trips, runs the safe action and aborts like :meth:`poll`, but never
        resumes (that waits for the sequence's next safe point), never raises (a hard trip
        surfaces at the sequence's next poll) and never talks to an instrument that this
        thread is in the middle of an exchange with."""
        if self._in_wait or self._polling or self.state is State.ABORTED:
            return
        if _busy(self.instruments):
            return  # the safe action would need the session that is mid-exchange
        with self._poll_lock:
            self._polling = True
            try:
                self._poll(resume=False, skip_busy=True)
            except SequenceAborted:
                pass  # state is ABORTED: the sequence's next poll raises
            finally:
                self._polling = False

    def _poll(self, resume: bool, skip_busy: bool) -> State:
        self._last_poll = self.clock.now()
        self._check_health(skip_busy)
        trips = self._trips(skip_busy)
        if not trips:
            self.last_clear_poll = self.clock.now()
        hard = [d for c, d in trips if c.hard]
        if hard:
            self._safe("; ".join(d for _, d in trips))
            self.transition(State.ABORTED, "; ".join(hard))
            raise SequenceAborted(f"hard interlock trip: {'; '.join(hard)}")
        if self.state in (State.RUNNING, State.RESUMING) and trips:
            detail = "; ".join(d for _, d in trips)
            self.transition(State.SUSPENDING, detail)
            self._safe(detail)
            self.transition(State.SUSPENDED, "safe action done")
            self._clear_since = None
        elif self.state is State.SUSPENDED and resume:
            self._settle(trips)
        return self.state

    def _settle(self, trips: list[tuple[Condition, str]]) -> None:
        now = self.clock.now()
        if trips:
            self._clear_since = None
        elif self._clear_since is None:
            self._clear_since = now
        elif now - self._clear_since >= self.settle_s:
            self.transition(State.RESUMING, f"clear for {now - self._clear_since:.0f} s")
            self.resume_action()
            again = self._trips()
            if again:
                detail = "; ".join(d for _, d in again)
                self.transition(State.SUSPENDING, f"tripped while resuming: {detail}")
                self._safe(detail)
                self.transition(State.SUSPENDED, "safe action done")
            else:
                self.transition(State.RUNNING, "resumed")

    def _safe(self, reason: str) -> None:
        self.safe_action()
        now = self.clock.now()
        polls = ((now - self.last_clear_poll) / self.poll_s if self.last_clear_poll is not None
                 else 0.0)
        self.last_trip = {"lab_time": now, "reason": reason, "reaction_polls": polls}
        self._event("safe_action", f"{reason} (within {polls:.2f} polls of the last clear one)")

    def sleep(self, seconds: float) -> None:
        """Let lab time pass, polling whenever a poll period has passed since the last poll
        (a sequence's short waits do not add polls); stay here while suspended. Pending stops
        (the CLI's SIGTERM/SIGHUP) are checked at every wait."""
        end = self.clock.now() + seconds
        while True:
            now = self.clock.now()
            if self.state is State.SUSPENDED:
                self._wait(self.poll_s)
                self.poll()
                continue
            if now >= end:
                self._check_stop()
                return
            due = self._next_poll_due()
            step = min(due, end) - now
            if step > 0:
                self._wait(step)
            if self.clock.now() >= due:
                self.poll()
            else:
                self._check_stop()

    def _next_poll_due(self) -> float:
        return -math.inf if self._last_poll is None else self._last_poll + self.poll_s

    def _check_stop(self) -> None:
        if self.stop_check is not None:
            self.stop_check()

    def checkpoint(self) -> None:
        """A safe point of a sequence: check now, and hold while suspended."""
        self.poll()
        while self.state is not State.RUNNING:
            self._wait(self.poll_s)
            self.poll()

    def _wait(self, seconds: float) -> None:
        self._in_wait = True
        try:
            self.clock.sleep(seconds)
        finally:
            self._in_wait = False


def _busy(instruments: Sequence[Any]) -> bool:
    """True if this thread is mid-exchange with one of ``instruments``."""
    return any(getattr(inst, "in_exchange", False) for inst in instruments)


class GuardedClock:
    """The clock a guarded sequence sees: its waits run through the watchdog."""

    def __init__(self, watchdog: Watchdog) -> None:
        self.watchdog = watchdog
        self.inner = watchdog.clock
        self.is_virtual = getattr(self.inner, "is_virtual", False)

    def now(self) -> float:
        return self.inner.now()

    def sleep(self, seconds: float) -> None:
        self.watchdog.sleep(seconds)


def pump_safe_actions(pumps: Sequence[Any]) -> tuple[Callable[[], None], Callable[[], None]]:
    """Safe action (output off) and the resume that restores what it found."""
    saved: list[tuple[Any, bool]] = []

    def safe() -> None:
        saved.clear()
        for pump in pumps:
            saved.append((pump, pump.output()))
            pump.output("off")

    def resume() -> None:
        for pump, output in saved:
            pump.output(output)

    return safe, resume


def default_watchdog(bundle: StationBundle, *, ceiling_k: float = 0.02,
                     hard_ceiling_k: float = 0.045, max_rate_k_per_s: float = 5e-4,
                     max_pump_dbm: float = 8.0, poll_s: float = 1.0, settle_s: float = 120.0,
                     on_event: Callable[[dict[str, Any]], None] | None = None) -> Watchdog:
    """Conditions on every node of the station; the safe action acts on every pump."""
    conditions = []
    pumps = []
    for node in bundle.topology.nodes:
        inst = bundle.node(node)
        pumps.append(inst["pump"])
        conditions += [mxc_ceiling(inst["fridge"], ceiling_k),
                       mxc_ceiling(inst["fridge"], hard_ceiling_k, hard=True),
                       mxc_rate(inst["fridge"], bundle.clock, max_rate_k_per_s),
                       pump_power(inst["pump"], max_pump_dbm), fridge_interlock(inst["gas"])]
    safe, resume = pump_safe_actions(pumps)
    resets = [c.check_reset for c in bundle.station.components.values()
              if hasattr(c, "check_reset")]
    return Watchdog(bundle.clock, conditions, safe, resume, poll_s, settle_s, on_event,
                    health=resets, instruments=pumps)


def station_safe_state(bundle: StationBundle) -> dict[str, str]:
    """Every emitter and heater of the station into its safe state, then read back.

    Best effort on every instrument: one that fails does not keep the others emitting or
    heating. Returns ``{instrument: read-back state}`` (or the reason it could not be made
    safe), for the one line an operator sees and for the run's events."""
    states: dict[str, str] = {}
    for name, component in bundle.station.components.items():
        if not hasattr(component, "safe_state"):
            continue
        try:
            component.safe_state()
            readback = component.safety_readback()
        except Exception as exc:  # keep going: the other instruments must still be made safe
            states[name] = f"NOT SAFE: {type(exc).__name__}: {' '.join(str(exc).split())}"
            continue
        if readback:
            states[name] = readback
    return states


@contextmanager
def guarded(bundle: StationBundle, watchdog: Watchdog) -> Iterator[StationBundle]:
    """The station with every driver (and the bundle) waiting through the watchdog."""
    clock = GuardedClock(watchdog)
    instruments = [c for c in bundle.station.components.values() if hasattr(c, "clock")]
    before = [(inst, inst.clock) for inst in instruments]
    for inst in instruments:
        inst.clock = clock
    stop_watching = watch_in_calls(watchdog)
    try:
        yield bundle._replace(clock=clock)
    finally:
        stop_watching()
        for inst, old in before:
            inst.clock = old


def watch_in_calls(watchdog: Watchdog) -> Callable[[], None]:
    """Keep the watchdog polling while the sequence is blocked inside one instrument call;
    returns the function that stops it.

    On a simulated lab (a virtual clock with alarms) the clock calls the watchdog at every
    poll period of lab time, also inside a measurement that lets time pass in the backend.
    On hardware a daemon thread polls on the wall clock, independently of the sequence (the
    drivers' exchanges are locked, so its queries never interleave with the sequence's)."""
    clock = watchdog.clock
    if getattr(clock, "is_virtual", False) and hasattr(clock, "every"):
        alarm = clock.every(watchdog.poll_s, watchdog.poll_in_call)
        return alarm.cancel
    stop = threading.Event()
    thread = threading.Thread(target=_watch_thread, args=(watchdog, stop),
                              name="qnetlab-watchdog", daemon=True)
    thread.start()

    def stop_thread() -> None:
        stop.set()
        thread.join(timeout=max(5.0, 2 * watchdog.poll_s))

    return stop_thread


def _watch_thread(watchdog: Watchdog, stop: threading.Event) -> None:
    """Poll every ``poll_s`` of wall time until ``stop``; errors become events, never kill the
    thread (the sequence's own polls then report them)."""
    while not stop.wait(watchdog.poll_s):
        try:
            watchdog.poll_in_call()
        except Exception as exc:
            watchdog._event("watchdog_error", f"{type(exc).__name__}: {exc}")
