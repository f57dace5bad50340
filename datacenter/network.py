"""The data center's network layer: requests in, switch patches and link generation out.

:class:`DataCenter` takes link-layer requests (:class:`~.messages.Create`), answers each with an
ACK or an ERR, and, in lab time, lets its scheduler decide which request each heralding station
serves; it patches the two QPUs' QNUs to that station through the optical switch (the paths are
dark for the reconfiguration time), checks that light passes the new patches (a stuck port is
detected here and the patch is never used again: the request is served elsewhere), generates
pairs on the link and delivers those whose estimated fidelity meets the request as OKs.

When no station can serve two QPUs directly (fixed-link topologies such as a chain), it plans a
two-hop path over the calibrated topology (networkx) and swaps at the middle QPU with a memory
cutoff, delivering only swapped pairs whose estimated fidelity meets the request.

It drives a *fabric* (duck-typed; the simulated one is ``qnetlab.sim_instruments.fabric.
SimFabric``): ``nodes``, ``stations``, ``clock``, ``reconfig_s``, ``links()`` (fixed links),
``can_patch(node, station)``, ``patch([(node, station, input)]) -> lit at``,
``patch_transmission(node, at)``, ``estimate(a, b, station, inputs, alpha) -> {fidelity,
rate_hz}``, ``generate(a, b, station, n, t_start, t_stop, alpha) -> batch`` (``times_s``,
``sign``, ``first_id``), ``measure(batch, bases, name)`` (type M), ``swap(b1, b2, mid,
cutoff_s)`` and ``estimate_swap(hop1, hop2, mid, storage_s, record)``. The network layer never
sees the hidden truth.
"""

from __future__ import annotations

import heapq
import itertools
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from .messages import BASES, Ack, Create, Err, ErrorCode, Ok, Outcome
from .scheduler import Assignment, Job, Option, Scheduler, View

BELL_NAMES = ("Phi+", "Phi-", "Psi+", "Psi-")
#: bright-state populations the link layer may choose (lower: higher fidelity, lower rate)
ALPHAS = (0.2, 0.1, 0.05, 0.03)
LIT = 0.05  # a patch passing less than this share of the light is broken (about 13 dB)


@dataclass(frozen=True)
class Service:
    """One station serving one request from ``t_start`` (patch made) to ``t_end``."""

    station: str
    create_id: int
    a: str
    b: str
    t_start: float
    t_lit: float
    t_end: float
    priority: int
    pairs: int
    reconfigured: bool


@dataclass(frozen=True)
class PathPlan:
    """Two hops and a swap at ``mid``: each hop ``(a, b, station, inputs, alpha)``; a hop's
    pair waits at most ``cutoff_s`` for the other's; ``fidelity`` the estimate with no wait."""

    mid: str
    hop1: tuple[str, str, str, tuple[int, int], float]
    hop2: tuple[str, str, str, tuple[int, int], float]
    cutoff_s: float
    fidelity: float


@dataclass
class DecisionLog:
    """What the scheduler decided, and what it cost in wall time."""

    decisions: list[tuple[float, str, int | None]] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    faults: list[tuple[float, str, str]] = field(default_factory=list)  # (t, station, detail)
    wall_s: float = 0.0
    count: int = 0

    @property
    def ms_per_decision(self) -> float:
        return 1e3 * self.wall_s / self.count if self.count else 0.0


class DataCenter:
    """Link layer and network layer of a switched data center on one fabric."""

    def __init__(self, fabric: Any, scheduler: Scheduler, *, margin: float = 0.01,
                 alphas: tuple[float, ...] = ALPHAS) -> None:
        self.fabric = fabric
        self.scheduler = scheduler
        self.clock = fabric.clock
        self.margin = margin
        self.alphas = alphas
        self.outcomes: dict[int, Outcome] = {}
        self.log = DecisionLog()
        self._jobs: dict[int, Job] = {}
        self._arrivals: list[tuple[float, int, Create]] = []
        self._ids = itertools.count(1)
        self._pair_ids = itertools.count(0)
        self._node_busy: dict[str, float] = {n: -math.inf for n in fabric.nodes}
        self._station_free: dict[str, float] = {s: -math.inf for s in fabric.stations}
        self._patched: dict[str, tuple[str, str] | None] = {s: None for s in fabric.stations}
        self._bad: set[tuple[str, str, int]] = set()  # (node, station, input) found dark
        self.patch_loss_db: dict[tuple[str, str, int], float] = {}
        self._plans: dict[int, PathPlan] = {}  # requests served over two hops
        self._fixed = {k for a, b, s in fabric.links() for k in ((a, b, s), (b, a, s))}
        self._estimates: dict[tuple[str, str, str, tuple[int, int], float], dict[str, float]] = {}
        self._best: dict[tuple[str, str], float] = {}
        self._view = View(node_free=lambda n, t: self._node_busy[n] <= t,
                          patched=lambda s: self._patched[s], option=self.option,
                          reconfig_s=fabric.reconfig_s)

    # --- calibration -------------------------------------------------------------------------
    def estimate(self, a: str, b: str, station: str, inputs: tuple[int, int],
                 alpha: float) -> dict[str, float]:
        """The calibrated link model's expectation (cached; :meth:`recalibrate` clears it)."""
        if b < a:  # one calibration per link, whichever end asks
            a, b, inputs = b, a, (inputs[1], inputs[0])
        key = (a, b, station, inputs, alpha)
        hit = self._estimates.get(key)
        if hit is None:
            hit = self._estimates[key] = self.fabric.estimate(a, b, station, inputs, alpha)
        return hit

    def calibrate_switch(self) -> dict[tuple[str, str, int], float]:
        """The switch's per-patch loss calibration: every QPU patched to every station input
        in rounds of one-to-one patches, each read on the port power monitor once it has
        settled (the rounds cost their reconfiguration time in lab time). Returns the loss in
        dB of each ``(node, station, input)`` patch; a patch passing less than ``LIT`` of the
        light is marked dead and never used (inf dB)."""
        inputs = [(s, i) for s in self.fabric.stations for i in (0, 1)]
        nodes = list(self.fabric.nodes)
        losses: dict[tuple[str, str, int], float] = {}
        width = len(inputs)
        for shift in range(width):  # each QPU meets each input once, one-to-one per round
            for start in range(0, len(nodes), width):
                group = nodes[start:start + width]
                plan = [(n, *inputs[(k + shift) % len(inputs)]) for k, n in enumerate(group)]
                lit = self.fabric.patch(plan)
                now = self.clock.now()
                if lit > now:
                    self.clock.advance(lit - now)
                for node, station, i in plan:
                    through = self.fabric.patch_transmission(node)
                    losses[(node, station, i)] = (-10 * math.log10(through) if through > 0
                                                  else math.inf)
                    if through < LIT:
                        self._bad.add((node, station, i))
                        self.log.faults.append((self.clock.now(), station,
                                                f"no light {node} -> {station} input {i}"))
        self._patched = {s: None for s in self.fabric.stations}
        self._best.clear()
        self.patch_loss_db = losses
        return losses

    def load_switch_calibration(self, store: Any) -> dict[tuple[str, str, int], float]:
        """Take the per-patch losses from the calibration graph (``switch_patch_loss``, in the
        :class:`~qnetlab.sequences.calibration.CalibrationStore` ``store``) instead of measuring
        them here: each ``(node, station, input)`` patch's live loss in dB; a patch whose
        calibration failed (no light: a stuck port), or whose loss is above the dead limit, is
        marked dead and never used (inf dB). Patches the graph has no loss for (never measured,
        or the other input of a failed one) stay usable: the first service checks them for
        light. Returns what it loaded."""
        states = store.node_states()
        losses: dict[tuple[str, str, int], float] = {}
        for node in self.fabric.nodes:
            for station in self.fabric.stations:
                target = f"{node}@{station}"
                state = states.get(("switch_patch_loss", target))
                failed = state is not None and state.last_outcome == "failed"
                # the failure names the dark input(s); one that names none darkens both
                dark = {int(k) for k in re.findall(r"input (\d)", state.detail or "")} \
                    if failed else set()
                for i in (0, 1):
                    rec = store.current(f"loss_in{i}_db", target)
                    dead = failed and (not dark or i in dark)
                    if rec is None and not dead:
                        continue
                    db = math.inf if dead else rec.value
                    losses[(node, station, i)] = db
                    if db > -10 * math.log10(LIT):
                        self._bad.add((node, station, i))
        self.patch_loss_db = losses
        self._best.clear()
        return losses

    def calibrate(self) -> int:
        """Calibrate every link the switch can make (every pair of QPUs at every station,
        both input assignments, every bright-state population); returns how many."""
        nodes = sorted(self.fabric.nodes)
        for i, a in enumerate(nodes):
            for b in nodes[i + 1:]:
                self.best_fidelity(a, b)
        return len(self._estimates)

    def recalibrate(self) -> None:
        """Forget every link calibration (the next use measures again)."""
        self._estimates.clear()
        self._best.clear()

    def ways(self, a: str, b: str, station: str) -> list[tuple[int, int]]:
        """The station inputs ``(a's, b's)`` by which ``a`` and ``b`` can meet at ``station``:
        a fixed link's, or any two healthy patches of the switch."""
        if (a, b, station) in self._fixed:
            return [(0, 1)]
        if not (self.fabric.can_patch(a, station) and self.fabric.can_patch(b, station)):
            return []
        return [(i, j) for i, j in ((0, 1), (1, 0))
                if (a, station, i) not in self._bad and (b, station, j) not in self._bad]

    def option(self, job: Job, station: str) -> Option | None:
        """The fastest way ``station`` can serve ``job`` at its fidelity, or None."""
        for inputs in self.ways(job.a, job.b, station):
            for alpha in self.alphas:
                est = self.estimate(job.a, job.b, station, inputs, alpha)
                if est["fidelity"] >= job.min_fidelity + self.margin:
                    return Option(station, inputs, alpha, est["fidelity"], est["rate_hz"])
        return None

    def best_fidelity(self, a: str, b: str) -> float:
        """The highest fidelity any station's healthy patches can give ``a``-``b``."""
        a, b = sorted((a, b))
        hit = self._best.get((a, b))
        if hit is not None:
            return hit
        best = 0.0
        for station in self.fabric.stations:
            for inputs in self.ways(a, b, station):
                for alpha in self.alphas:
                    best = max(best, self.estimate(a, b, station, inputs, alpha)["fidelity"])
        self._best[(a, b)] = best
        return best

    def best_hop(self, a: str, b: str, avoid: str | None = None
                 ) -> tuple[str, str, str, tuple[int, int], float] | None:
        """``(a, b, station, inputs, alpha)`` of the truest direct link between a and b (not
        at station ``avoid``)."""
        best, hop = 0.0, None
        for station in self.fabric.stations:
            if station == avoid:
                continue
            for inputs in self.ways(a, b, station):
                for alpha in self.alphas:
                    f = self.estimate(a, b, station, inputs, alpha)["fidelity"]
                    if f > best:
                        best, hop = f, (a, b, station, inputs, alpha)
        return hop

    def plan_path(self, a: str, b: str, min_fidelity: float) -> PathPlan | str:
        """A two-hop path for ``a``-``b`` through a third QPU that swaps, chosen over the
        topology (networkx; each direct link costs -log of its calibrated fidelity), with the
        memory cutoff that keeps the swapped pairs' estimated fidelity at ``min_fidelity``
        plus the margin; or why there is none."""
        graph = nx.Graph()
        nodes = sorted(self.fabric.nodes)
        for i, x in enumerate(nodes):
            for y in nodes[i + 1:]:
                f = self.best_fidelity(x, y)
                if f > 0.5:  # a link that carries entanglement at all
                    graph.add_edge(x, y, cost=-math.log(f))
        try:
            path = nx.shortest_path(graph, a, b, weight="cost")
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            return f"no path from {a} to {b}"
        if len(path) != 3:
            return f"the best path {'-'.join(path)} has {len(path) - 1} hops (at most 2 swap)"
        mid = path[1]
        hop1, hop2 = self.best_hop(a, mid), self.best_hop(mid, b)
        if hop1 is None or hop2 is None:
            return f"no direct link on the path {'-'.join(path)}"
        if hop2[2] == hop1[2]:  # one station heralds one pair at a time: the hops need two
            hop2 = self.best_hop(mid, b, avoid=hop1[2])
            if hop2 is None:
                return f"both hops of {'-'.join(path)} would need station {hop1[2]}"
        target = min_fidelity + self.margin
        fresh = self.fabric.estimate_swap(hop1, hop2, mid, (0.0, 0.0))
        if fresh < target:
            return (f"swapping at {mid} gives {fresh:.3f} at best (< {min_fidelity} + margin "
                    f"{self.margin})")
        lo, hi = 0.0, 1e-6
        while self.fabric.estimate_swap(hop1, hop2, mid, (hi, 0.0)) >= target and hi < 10.0:
            lo, hi = hi, hi * 2
        for _ in range(30):  # the storage time at which the estimate falls to the target
            m = (lo + hi) / 2
            lo, hi = (m, hi) if self.fabric.estimate_swap(hop1, hop2, mid, (m, 0.0)) >= target \
                else (lo, m)
        return PathPlan(mid, hop1, hop2, lo, fresh)

    # --- the link-layer API ------------------------------------------------------------------
    def submit(self, create: Create, at: float | None = None) -> Ack | Err | None:
        """Submit now (returns the ACK or ERR) or at lab time ``at`` (queued; None)."""
        now = self.clock.now()
        if at is not None and at > now:
            heapq.heappush(self._arrivals, (at, next(self._ids), create))
            return None
        return self._accept(create, next(self._ids), now)

    def _accept(self, create: Create, cid: int, t: float) -> Ack | Err:
        reply = self._check(create, cid, t)
        self.outcomes[cid] = Outcome(create, reply, t_submit=t)
        if isinstance(reply, Ack):
            self._jobs[cid] = Job(cid, create.origin, create.remote, create.pairs,
                                  create.min_fidelity, t + create.max_time_s, create.priority, t)
        else:
            self.outcomes[cid].t_done = t
        return reply

    def _check(self, c: Create, cid: int, t: float) -> Ack | Err:
        nodes = self.fabric.nodes
        for role, node in (("origin", c.origin), ("remote", c.remote)):
            if node not in nodes:
                return Err(cid, ErrorCode.UNSUPP, f"{role}={node!r} is not a QPU here "
                           f"({', '.join(nodes)})", t)
        if c.origin == c.remote:
            return Err(cid, ErrorCode.UNSUPP, f"origin and remote are both {c.origin!r}", t)
        bad = [b for b in c.bases if b.upper() not in BASES]
        if bad:
            return Err(cid, ErrorCode.UNSUPP, f"basis {bad[0]!r} not one of {', '.join(BASES)}", t)
        best = self.best_fidelity(c.origin, c.remote)
        if best < c.min_fidelity + self.margin:
            plan = self.plan_path(c.origin, c.remote, c.min_fidelity)
            if not isinstance(plan, str) and c.kind == "M":
                return Err(cid, ErrorCode.UNSUPP, f"type M over the swapped path {c.origin}-"
                           f"{plan.mid}-{c.remote} (only type K is swapped)", t)
            if isinstance(plan, str):
                return Err(cid, ErrorCode.REJECTED, f"min_fidelity={c.min_fidelity} above the "
                           f"best calibrated {c.origin}-{c.remote} link ({best:.3f}, margin "
                           f"{self.margin}; 0: none); {plan}", t)
            self._plans[cid] = plan
        return Ack(cid, t)

    # --- running in lab time -------------------------------------------------------------------
    def run(self, until: float) -> None:
        """Serve requests until lab time ``until`` (services already begun run to their end)."""
        wake = {s: -math.inf for s in self.fabric.stations}
        t, before = self.clock.now(), -math.inf
        while True:
            changed = bool(self._arrivals) and self._arrivals[0][0] <= t
            while self._arrivals and self._arrivals[0][0] <= t:
                _, cid, create = heapq.heappop(self._arrivals)
                self._accept(create, cid, t)
            # a service ended since the last event: its QPUs are free for any station
            changed |= any(before < v <= t for v in self._station_free.values())
            self._end_overdue(t)
            self._start_paths(t)
            for station in self.fabric.stations:
                if self._station_free[station] <= t and (changed or wake[station] <= t):
                    wake[station] = self._decide(station, t)
            nxt = min([v for v in self._station_free.values() if v > t]
                      + [v for v in wake.values() if v > t]
                      + [a[0] for a in self._arrivals[:1]]
                      + [j.deadline for j in self._jobs.values() if not j.active]
                      + [math.inf])
            if nxt > until:
                self._drain(until)
                return
            self.clock.advance(nxt - self.clock.now())
            before, t = t, nxt  # event times exactly, whatever the clock's rounding

    def _drain(self, until: float) -> None:
        """Advance to ``until`` and past the end of every service already begun."""
        end = max([until, *self._station_free.values()])
        now = self.clock.now()
        if end > now:
            self.clock.advance(end - now)
        self._end_overdue(self.clock.now())

    def _end_overdue(self, t: float) -> None:
        for cid, job in list(self._jobs.items()):
            if job.deadline <= t and not job.active:
                code = ErrorCode.TIMEOUT if job.served else ErrorCode.EXPIRE
                got = len(self.outcomes[cid].oks)
                self._finish(cid, Err(cid, code, f"max_time passed with {got} of "
                                      f"{self.outcomes[cid].create.pairs} pairs", job.deadline))

    def _finish(self, cid: int, error: Err | None) -> None:
        job = self._jobs.pop(cid)
        outcome = self.outcomes[cid]
        outcome.error = error
        outcome.t_done = error.t if error else (outcome.oks[-1].time_of_goodness
                                                if outcome.oks else job.deadline)

    def _start_paths(self, t: float) -> None:
        """Serve the two-hop requests (first by priority, then deadline) whose two stations
        and three QPUs are all free."""
        waiting = [j for j in self._jobs.values() if j.create_id in self._plans and not j.active]
        for job in sorted(waiting, key=lambda j: (-j.priority, j.deadline, j.create_id)):
            plan = self._plans[job.create_id]
            stations = (plan.hop1[2], plan.hop2[2])
            nodes = (job.a, plan.mid, job.b)
            if all(self._station_free[s] <= t for s in stations) and all(
                    self._node_busy[n] <= t for n in nodes):
                self._serve_path(job, plan, t)

    def _serve_path(self, job: Job, plan: PathPlan, t: float) -> None:
        """Generate on both hops until the deadline, swap at the middle QPU with the plan's
        cutoff, deliver the swapped pairs whose estimated fidelity meets the request."""
        h1, h2 = plan.hop1, plan.hop2
        lit = self.fabric.patch([(h1[0], h1[2], h1[3][0]), (h1[1], h1[2], h1[3][1]),
                                 (h2[0], h2[2], h2[3][0]), (h2[1], h2[2], h2[3][1])])
        n = min(400 * job.pairs_left, 200_000)
        b1 = self.fabric.generate(h1[0], h1[1], h1[2], n, lit, job.deadline, h1[4])
        b2 = self.fabric.generate(h2[0], h2[1], h2[2], n, lit, job.deadline, h2[4])
        swapped = self.fabric.swap(b1, b2, plan.mid, plan.cutoff_s)
        outcome = self.outcomes[job.create_id]
        target = job.min_fidelity + self.margin
        for k, th in enumerate(swapped.times_s.tolist()):
            if job.pairs_left == 0:
                break
            store = (float(swapped.storage_s[0][k]), float(swapped.storage_s[1][k]))
            good = self.fabric.estimate_swap(h1, h2, plan.mid, store, swapped.records[k])
            if good < target:
                continue
            outcome.oks.append(Ok(job.create_id, swapped.first_id + k, len(outcome.oks), good,
                                  th, BELL_NAMES[int(swapped.bell[k])], f"{h1[2]}+{h2[2]}",
                                  outcome.create.purpose_id))
            job.pairs_left -= 1
        job.served = True
        done = job.pairs_left == 0
        end = outcome.oks[-1].time_of_goodness if done else job.deadline
        for node in (job.a, plan.mid, job.b):
            self._node_busy[node] = end
        for hop in (h1, h2):
            self._station_free[hop[2]] = end
            self._patched[hop[2]] = (hop[0], hop[1])
            self.log.services.append(Service(hop[2], job.create_id, hop[0], hop[1], t, lit,
                                             end, job.priority, len(outcome.oks), lit > t))
        if done:
            self._finish(job.create_id, None)

    def _decide(self, station: str, t: float) -> float:
        jobs = [j for j in self._jobs.values() if j.create_id not in self._plans]
        start = time.perf_counter()
        choice = self.scheduler.choose(t, station, jobs, self._view)
        self.log.wall_s += time.perf_counter() - start
        self.log.count += 1
        if not isinstance(choice, Assignment):
            self.log.decisions.append((t, station, None))
            return choice
        self.log.decisions.append((t, station, choice.job.create_id))
        self._serve(station, choice, t)
        return -math.inf

    def _serve(self, station: str, asg: Assignment, t: float) -> None:
        job, opt = asg.job, asg.option
        same = self._patched[station] is not None and set(self._patched[station]) == {job.a,
                                                                                     job.b}
        for other, pair in self._patched.items():  # the nodes leave any other station
            if other != station and pair and {job.a, job.b} & set(pair):
                self._patched[other] = None
        lit = self.fabric.patch([(job.a, station, opt.inputs[0]), (job.b, station, opt.inputs[1])])
        self._patched[station] = (job.a, job.b)
        dark = [(n, i) for n, i in ((job.a, opt.inputs[0]), (job.b, opt.inputs[1]))
                if self.fabric.patch_transmission(n, lit) < LIT]
        if dark:  # a stuck port: never use that patch again; the request goes elsewhere
            self._best.clear()
            for node, inp in dark:
                self._bad.add((node, station, inp))
                self.log.faults.append((t, station, f"no light {node} -> {station} input {inp}"))
            self._station_free[station] = lit
            self._patched[station] = None
            return
        job.active = job.served = True
        batch = self.fabric.generate(job.a, job.b, station, job.pairs_left, lit, asg.until,
                                     opt.alpha)
        outcome = self.outcomes[job.create_id]
        n = len(batch.times_s)
        bases, out_a, out_b = [""] * n, [0] * n, [0] * n
        if outcome.create.kind == "M" and n:
            rng = np.random.default_rng([job.create_id, len(outcome.oks)])
            choice = outcome.create.bases
            bases = [choice[i].upper() for i in rng.integers(0, len(choice), size=n)]
            out_a, out_b = self.fabric.measure(batch, bases, f"{job.create_id}:{len(outcome.oks)}")
        seq0, cid, purpose, good = len(outcome.oks), job.create_id, outcome.create.purpose_id, \
            opt.fidelity
        outcome.oks.extend(
            Ok(cid, pid, seq0 + k, good, th, "Psi+" if sign > 0 else "Psi-", station, purpose,
               bases[k], int(out_a[k]), int(out_b[k]))
            for k, (pid, th, sign) in enumerate(zip(
                range(batch.first_id, batch.first_id + n), batch.times_s.tolist(),
                batch.sign.tolist(), strict=True)))
        job.pairs_left -= len(batch.times_s)
        done = job.pairs_left == 0
        end = float(batch.times_s[-1]) if done else asg.until
        for node in (job.a, job.b):
            self._node_busy[node] = end
        self._station_free[station] = end
        self.log.services.append(Service(station, job.create_id, job.a, job.b, t, lit, end,
                                         job.priority, len(batch.times_s), not same))
        job.active = False
        if done:
            self._finish(job.create_id, None)
