"""The concurrent schedule of a calibration graph: which steps run at the same time.

Each (calibration, target) uses resources (a node's instruments ``node:<name>``, a heralding
station ``herald:<name>``, a link ``link:<name>``; see :meth:`Calibration.resources`). A step
starts once its dependencies are settled and none of its resources is in use by a running
step; candidates are taken in the graph's order (lexicographic topological), so the starts are
deterministic. Each step runs on a thread that is a participant of the lab clock
(:meth:`qnetlab.clock.VirtualClock.spawn`): in simulation the steps share lab time exactly
(discrete-event), on hardware and on a served lab they run concurrently in wall time. A
finishing step starts its successors itself, before it gives up the clock, so no lab time
passes between a step's end and the starts it allows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str]


@dataclass(frozen=True)
class Slot:
    """One step of the schedule: when it ran (lab time) and what it held."""

    cal: str
    target: str
    start: float
    end: float
    resources: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.cal}:{self.target}"


class Scheduler:
    """Runs ``step(key)`` for every key, each once its ``dependencies`` are done and its
    ``resources`` are free, at most ``workers`` at a time (1: one after another, in order, on
    the calling thread: the serial engine)."""

    def __init__(self, clock: Any, keys: Sequence[Key],
                 dependencies: Callable[[Key], list[Key]],
                 resources: Callable[[Key], frozenset[str]],
                 step: Callable[[Key], None], workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers={workers!r} must be >= 1 (or None: no limit)")
        self.clock, self.step = clock, step
        self.keys = list(keys)
        self._index = set(self.keys)
        self.dependencies, self.resources = dependencies, resources
        self.workers = workers or max(1, len(self.keys))
        self.slots: list[Slot] = []
        self._pending: list[Key] = []
        self._done: set[Key] = set()
        self._busy: set[str] = set()
        self._running = 0
        self._mutex = threading.Lock()
        self._finished = threading.Event()
        self._error: BaseException | None = None

    def run(self) -> list[Slot]:
        """Run every step; returns the schedule (in the order the steps started). The first
        exception of a step stops further starts and is raised once the running ones end."""
        if self.workers == 1:
            for key in self.keys:
                self._timed(key, self.resources(key))
            return self.slots
        self._pending = list(self.keys)
        with self.clock.participant("calibration"):
            with self._mutex:
                self._dispatch()
        try:
            self._finished.wait()
        except BaseException as exc:  # Ctrl-C here: start nothing more, and let the running
            with self._mutex:  # steps end first (a pending stop ends them at their next wait)
                self._error = self._error or exc
                running = self._running
            if running:  # their runs are then closed (interrupted) before the lab is made safe
                self._finished.wait()
            raise
        if self._error is not None:
            raise self._error
        return sorted(self.slots, key=lambda s: (s.start, self.keys.index((s.cal, s.target))))

    def _timed(self, key: Key, held: frozenset[str]) -> None:
        start = self.clock.now()
        try:
            self.step(key)
        finally:
            self.slots.append(Slot(*key, start, self.clock.now(), tuple(sorted(held))))

    def _dispatch(self) -> None:
        """Start every pending step that may start now (called holding the mutex)."""
        for key in list(self._pending):
            if self._running >= self.workers or self._error is not None:
                break
            if any(dep not in self._done for dep in self.dependencies(key)
                   if dep in self._index):
                continue
            held = self.resources(key)
            if held & self._busy:
                continue
            self._pending.remove(key)
            self._busy |= held
            self._running += 1
            self.clock.spawn(f"{key[0]}:{key[1]}", lambda k=key, h=held: self._work(k, h))
        if self._running == 0 and (not self._pending or self._error is not None):
            self._finished.set()

    def _work(self, key: Key, held: frozenset[str]) -> None:
        try:
            self._timed(key, held)
        except BaseException as exc:
            with self._mutex:
                self._error = self._error or exc
        finally:
            with self._mutex:
                self._busy -= held
                self._running -= 1
                self._done.add(key)
                self._dispatch()
