"""Switch schedulers: which QNUs the optical switch connects to which heralding station, and when.

The network layer (:class:`~qnetlab.datacenter.network.DataCenter`) asks a scheduler each time a
heralding station is free: :meth:`Scheduler.choose` returns an :class:`Assignment` (serve this
request there until then) or the lab time to ask again.

- :class:`StaticScheduler`, the baseline: a demand-oblivious fixed cycle. Time is cut into
  slots; in each slot the switch holds a fixed matching of QPU pairs to stations (a round-robin
  tournament over all pairs), and a station serves the oldest request of its pair, if any, to
  the end of the slot.
- :class:`DynamicScheduler`: demand-aware. A free station takes the pending request that comes
  first by priority, then by deadline less a fairness credit for the time it has waited, among
  those whose nodes are free, whose fidelity the station can meet and which can still finish
  before their deadline at the calibrated herald rate (reconfiguration delay included); a
  request whose pair is already patched there is preferred on a tie (no reconfiguration).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations


@dataclass
class Job:
    """A request as the scheduler sees it."""

    create_id: int
    a: str
    b: str
    pairs_left: int
    min_fidelity: float
    deadline: float
    priority: int
    t_submit: float
    active: bool = False  # being served by a station now
    served: bool = False  # was served at some time


@dataclass(frozen=True)
class Option:
    """How a station can serve a pair: its inputs, the bright-state population and what the
    calibration expects (heralded fidelity, herald rate)."""

    station: str
    inputs: tuple[int, int]
    alpha: float
    fidelity: float
    rate_hz: float


@dataclass(frozen=True)
class Assignment:
    job: Job
    option: Option
    until: float  # serve until this lab time at the latest


@dataclass
class View:
    """What a scheduler may look at: free nodes, each station's present patch, the options the
    calibration gives, the reconfiguration time."""

    node_free: Callable[[str, float], bool]
    patched: Callable[[str], tuple[str, str] | None]
    option: Callable[[Job, str], Option | None]
    reconfig_s: float


class Scheduler:
    name = "scheduler"

    def choose(self, t: float, station: str, jobs: list[Job], view: View) -> Assignment | float:
        raise NotImplementedError


def round_robin_pairs(nodes: list[str]) -> list[tuple[str, str]]:
    """Every unordered pair once, grouped into perfect matchings (circle method), in order."""
    ring = list(nodes) + ([None] if len(nodes) % 2 else [])  # type: ignore[list-item]
    n = len(ring)
    out: list[tuple[str, str]] = []
    for _ in range(n - 1):
        for i in range(n // 2):
            a, b = ring[i], ring[n - 1 - i]
            if a is not None and b is not None:
                out.append((a, b) if a < b else (b, a))
        ring = [ring[0], ring[-1], *ring[1:-1]]
    assert len(out) == len(list(combinations(nodes, 2)))
    return out


@dataclass
class StaticScheduler(Scheduler):
    """Fixed cycle of matchings, ``slot_s`` per slot (the baseline)."""

    nodes: list[str]
    stations: list[str]
    slot_s: float = 1.0
    name: str = "static"
    cycle: list[tuple[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        self.cycle = round_robin_pairs(sorted(self.nodes))
        self._index = {s: i for i, s in enumerate(sorted(self.stations))}

    def pair_at(self, t: float, station: str) -> tuple[str, str]:
        slot = int(t // self.slot_s)
        m = len(self._index)
        return self.cycle[(slot * m + self._index[station]) % len(self.cycle)]

    def choose(self, t: float, station: str, jobs: list[Job], view: View) -> Assignment | float:
        slot_end = (math.floor(t / self.slot_s) + 1) * self.slot_s
        a, b = self.pair_at(t, station)
        for job in sorted(jobs, key=lambda j: (j.t_submit, j.create_id)):  # FIFO
            if job.active or {job.a, job.b} != {a, b}:
                continue
            if not (view.node_free(a, t) and view.node_free(b, t)):
                break
            option = view.option(job, station)
            if option is not None:
                return Assignment(job, option, min(slot_end, job.deadline))
        return slot_end


@dataclass
class DynamicScheduler(Scheduler):
    """Demand-aware: priority, deadline, fairness, feasibility, fewer reconfigurations."""

    fairness_per_s: float = 0.2  # deadline credit per second waited
    name: str = "dynamic"

    def choose(self, t: float, station: str, jobs: list[Job], view: View) -> Assignment | float:
        best: tuple[tuple[float, ...], Job, Option] | None = None
        patched = view.patched(station)
        for job in jobs:
            if job.active or not (view.node_free(job.a, t) and view.node_free(job.b, t)):
                continue
            option = view.option(job, station)
            if option is None or option.rate_hz <= 0:
                continue
            same = patched is not None and set(patched) == {job.a, job.b}
            need = job.pairs_left / option.rate_hz + (0.0 if same else view.reconfig_s)
            if t + need > job.deadline:
                continue  # cannot finish in time here: leave the station to others
            key = (-job.priority, job.deadline - self.fairness_per_s * (t - job.t_submit),
                   0.0 if same else 1.0, job.create_id)
            if best is None or key < best[0]:
                best = (key, job, option)
        if best is None:
            return math.inf
        _, job, option = best
        return Assignment(job, option, job.deadline)
