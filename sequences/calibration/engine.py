"""The calibration engine: a graph of calibrations spanning the network, Optimus semantics.

Each calibration runs per target (a network node, a heralding station, scope ``herald``, or a
link); the graph's nodes are ``(calibration, target)`` pairs and a link's calibrations depend on
both of its ends.

- ``check_state``: free; passes while the last success is younger than the calibration's
  timeout, it has not failed (or been held) since, and no dependency was recalibrated after it.
- ``check_data``: a short measurement, classified ``in_spec`` / ``out_of_spec`` / ``bad_data``.
- ``calibrate``: the full measurement and fit; its updates go to the calibration store (held
  when they jump too far) and onto the instruments.
- ``diagnose``: on ``bad_data``, walk the ancestors with ``check_data`` to find the one out of
  spec, recalibrate it, then come back and recalibrate.
- ``maintain(targets)``: dependencies first, then the cheapest step that settles each node.

Outcomes are per target: a failure blocks only its descendants. All state lives in the
calibration store, so a graph interrupted at any point (exception or SIGKILL) and run again
skips what is still fresh and redoes only the rest.

Each step's records and its node state are committed in one transaction, then put on the
instruments: a step killed before its commit left nothing and is redone. A node whose records
are incomplete anyway (a store written before steps were atomic) is recalibrated, never checked
against what is left. ``maintain`` and ``approve`` hold the data directory's
:class:`CalibrationLock`: a second process waits (saying for whom), then finds the nodes the
first one calibrated fresh, puts their values on its own instruments and does not redo them.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import networkx as nx

from qnetlab.runstore import Run, RunStore
from qnetlab.sequences.safety import working_on
from qnetlab.stations import StationBundle, Topology
from qnetlab.uncertain import plus_minus

from .lock import CalibrationLock, print_waiting
from .schedule import Scheduler, Slot
from .store import CalibrationStore, NodeState, Record

log = logging.getLogger("qnetlab.calibration")

Key = tuple[str, str]  # (calibration name, target)


class Outcome(enum.StrEnum):
    IN_SPEC = "in_spec"
    OUT_OF_SPEC = "out_of_spec"
    BAD_DATA = "bad_data"


@dataclass(frozen=True)
class Check:
    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True)
class Update:
    """A calibrated quantity: value, 1-sigma uncertainty, fit quality (R^2)."""

    quantity: str
    value: float
    uncertainty: float | None = None
    fit_quality: float | None = None


@dataclass(frozen=True)
class Quantity:
    """How a quantity is stored and applied: unit, approval bound, setter on the station."""

    unit: str
    max_jump: float | None = None
    apply: Callable[[StationBundle, str, float], None] | None = None


class CalibrationFailed(RuntimeError):
    """A calibration could not produce a trustworthy result (the message says why)."""


class Calibration:
    """One kind of calibration; subclasses implement ``check_data`` and ``calibrate``."""

    name: ClassVar[str]
    scope: ClassVar[str]  # "node", "herald" (a heralding station) or "link"
    depends_on: ClassVar[tuple[str, ...]] = ()
    timeout_s: ClassVar[float] = 3600.0
    quantities: ClassVar[dict[str, Quantity]] = {}
    #: R^2 below which a fit is not trusted
    min_fit_quality: ClassVar[float] = 0.8

    def __init__(self, timeout_s: float | None = None, **options: Any) -> None:
        if timeout_s is not None:
            self.timeout_s = timeout_s
        for key, value in options.items():
            if not hasattr(self, key):
                raise TypeError(f"{type(self).__name__} has no option {key!r}")
            setattr(self, key, value)

    def resources(self, topology: Topology, target: str) -> frozenset[str]:
        """What a step on ``target`` uses, so that steps sharing one never run at once: a
        node's instruments (``node:<name>``), a heralding station (``herald:<name>``), a link.
        A herald step also drives the pumps of the nodes it heralds; a link step both ends
        and its herald. Override for a calibration that uses more (or less)."""
        if self.scope == "node":
            return frozenset({f"node:{target}"})
        if self.scope == "herald":
            ends = {n for lk in topology.links.values() if lk.herald == target for n in lk.nodes}
            return frozenset({f"herald:{target}"} | {f"node:{n}" for n in ends})
        link = topology.links[target]
        return frozenset({f"link:{target}", f"herald:{link.herald}"}
                         | {f"node:{n}" for n in link.nodes})

    def targets(self, topology: Topology) -> list[str] | None:
        """The targets of a calibration whose scope is not one of the topology's own (node,
        herald, link), e.g. a switch's patches; None: the scope's targets."""
        return None

    def check_data(self, ctx: CalContext, target: str) -> Check:
        raise NotImplementedError

    def calibrate(self, ctx: CalContext, target: str) -> list[Update]:
        raise NotImplementedError


@dataclass
class NodeResult:
    cal: str
    target: str
    status: str  # fresh, in_spec, calibrated, held, failed, blocked
    detail: str = ""
    diagnosed: bool = False
    runs: list[str] = field(default_factory=list)  # GUIDs of the runs it took
    updates: list[Update] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.cal}:{self.target}"


@dataclass
class Report:
    results: list[NodeResult]
    lab_time_s: float
    wall_s: float
    #: each step's lab-time start and end and what it held, in the order they started
    schedule: list[Slot] = field(default_factory=list)

    @property
    def makespan_s(self) -> float:
        """Lab time from the first step's start to the last one's end."""
        if not self.schedule:
            return 0.0
        return max(s.end for s in self.schedule) - min(s.start for s in self.schedule)

    @property
    def busy_s(self) -> float:
        """The sum of the steps' lab times: what one after another would take."""
        return sum(s.end - s.start for s in self.schedule)

    @property
    def ok(self) -> bool:
        return all(r.status in ("fresh", "in_spec", "calibrated") for r in self.results)

    def by_status(self, *statuses: str) -> list[str]:
        return [r.key for r in self.results if r.status in statuses]

    def result(self, cal: str, target: str) -> NodeResult:
        return next(r for r in self.results if (r.cal, r.target) == (cal, target))

    def table(self) -> str:
        width = max((len(r.key) for r in self.results), default=10)
        lines = [f"{'calibration:target':<{width}}  {'status':<10}  detail"]
        for r in self.results:
            tag = r.status + ("*" if r.diagnosed else "")
            lines.append(f"{r.key:<{width}}  {tag:<10}  {r.detail}")
        lines.append(f"{len(self.results)} nodes; lab time {self.lab_time_s:.0f} s in "
                     f"{self.wall_s:.1f} s wall ({'ok' if self.ok else 'NOT OK'}); "
                     "* found by diagnose")
        if self.schedule:
            lines.append(f"makespan {self.makespan_s:.0f} s of lab time for "
                         f"{self.busy_s:.0f} s of steps")
        return "\n".join(lines)


class CalContext:
    """What a calibration sees: the station, its clock, the run store and calibration store."""

    def __init__(self, bundle: StationBundle, runs: RunStore, store: CalibrationStore,
                 figures: bool = True) -> None:
        self.bundle = bundle
        self.runs = runs
        self.store = store
        self.clock = bundle.clock
        self.figures = figures
        self._local = threading.local()  # concurrent steps: each thread its own runs
        self._stations: dict[tuple[str, ...], Any] = {}

    @property
    def current_runs(self) -> list[Run]:
        """The runs the calling thread's step has taken so far."""
        runs = getattr(self._local, "runs", None)
        if runs is None:
            runs = self._local.runs = []
        return runs

    @current_runs.setter
    def current_runs(self, runs: list[Run]) -> None:
        self._local.runs = runs

    @property
    def topology(self) -> Topology:
        return self.bundle.topology

    def station_for(self, cal: Calibration, target: str) -> Any:
        """The part of the station a step uses (the instruments of its resources, plus the
        components of no node or station): what its runs snapshot. The rest of the station
        belongs to steps running meanwhile, and snapshotting every instrument of a large
        network for every run would cost more than the measurements."""
        held = cal.resources(self.topology, target)
        key = tuple(sorted(held))
        station = self._stations.get(key)
        if station is None:
            from qcodes.station import Station

            topo, comps = self.topology, self.bundle.station.components
            owned = {spec.qnu for spec in topo.heralds.values()} | {
                inst.name for n in topo.nodes for inst in self.bundle.node(n).values()}
            mine = {self.bundle.instrument(topo.heralds[r[7:]].qnu).name
                    for r in held if r.startswith("herald:")} | {
                inst.name for r in held if r.startswith("node:")
                for inst in self.bundle.node(r[5:]).values()}
            names = [name for name in comps if name in mine or name not in owned]
            if hasattr(self.bundle.station, "subset"):  # a station of site agents
                station = self.bundle.station.subset(frozenset(names))
            else:
                station = Station(*(comps[name] for name in names), default=False,
                                  update_snapshot=False)
            station = self._stations.setdefault(key, station)
        return station

    def new_run(self, cal: Calibration, target: str, kind: str) -> Run:
        run = self.runs.run(f"{cal.name}.{kind}", station=self.station_for(cal, target),
                            clock=self.clock,
                            sample=target, calibration=self.store.as_dict(),
                            metadata={"calibration": cal.name, "target": target, "step": kind})
        self.current_runs.append(run)
        return run

    def live(self, quantity: str, target: str) -> float | None:
        rec = self.store.current(quantity, target)
        return None if rec is None else rec.value

    #: Matplotlib draws through process-wide state that is not thread-safe (its mathtext
    #: parser fails at random when two threads render labels at once): steps running at the
    #: same time in wall time (a served lab, hardware) draw one figure at a time.
    _drawing: ClassVar[threading.Lock] = threading.Lock()

    def save_figure(self, run: Run, figure: Any) -> None:
        """Save a fit figure as PNG beside the run's HDF5 file; the run's metadata points to it."""
        if self.figures and run.hdf5_path is not None:
            path = run.hdf5_path.with_suffix(".png")
            with self._drawing:  # never waits on the lab clock while held
                figure.tight_layout()
                figure.savefig(path, dpi=90)
            run.add_metadata("qnetlab_figure", str(path))


class CalibrationGraph:
    """Calibrations expanded over the topology's targets, as a networkx DAG of (cal, target)."""

    def __init__(self, calibrations: Sequence[Calibration], topology: Topology) -> None:
        self.calibrations = {c.name: c for c in calibrations}
        self.topology = topology
        self.graph = nx.DiGraph()
        for cal in calibrations:
            for target in self.targets_of(cal):
                self.graph.add_node((cal.name, target))
        for cal in calibrations:
            for target in self.targets_of(cal):
                for dep_name in cal.depends_on:
                    dep = self.calibrations[dep_name]
                    for dep_target in self._dependency_targets(cal.scope, target, dep.scope):
                        self.graph.add_edge((dep_name, dep_target), (cal.name, target))
        if not nx.is_directed_acyclic_graph(self.graph):
            raise ValueError(f"calibration graph has a cycle: {nx.find_cycle(self.graph)}")

    def targets(self, scope: str) -> list[str]:
        topo = self.topology
        return {"node": list(topo.nodes), "herald": list(topo.heralds),
                "link": list(topo.links)}[scope]

    def targets_of(self, cal: Calibration) -> list[str]:
        """Where ``cal`` runs: its own targets if it names them, else its scope's."""
        own = cal.targets(self.topology)
        return self.targets(cal.scope) if own is None else own

    def _dependency_targets(self, scope: str, target: str, dep_scope: str) -> list[str]:
        topo = self.topology
        if scope == dep_scope:
            return [target]
        if scope == "link" and dep_scope == "node":
            return list(topo.links[target].nodes)
        if scope == "link" and dep_scope == "herald":
            return [topo.links[target].herald]
        if scope == "herald" and dep_scope == "node":
            ends = {n for lk in topo.links.values() if lk.herald == target for n in lk.nodes}
            return sorted(ends)
        raise ValueError(f"a {scope} calibration cannot depend on a {dep_scope} calibration")

    def order(self, selection: Iterable[str] | None = None) -> list[Key]:
        """Keys to maintain, dependencies first. ``selection`` holds targets or cal:target."""
        keys = set(self.graph.nodes)
        if selection is not None:
            chosen: set[Key] = set()
            for item in selection:
                if ":" in item:
                    cal, _, target = item.partition(":")
                    matches = {(cal, target)} & keys
                else:
                    matches = {k for k in keys if k[1] == item or k[0] == item}
                if not matches:
                    raise KeyError(f"{item!r} names no calibration or target of the graph "
                                   f"(targets: {sorted({k[1] for k in keys})})")
                chosen |= matches
            keys = chosen | {a for k in chosen for a in nx.ancestors(self.graph, k)}
        return [k for k in nx.lexicographical_topological_sort(self.graph) if k in keys]

    def dependencies(self, key: Key) -> list[Key]:
        return sorted(self.graph.predecessors(key))

    def keys(self) -> list[Key]:
        """Every (calibration, target), calibrations in the order given, targets sorted as
        the topology lists them: the order status tables show."""
        return [(name, target) for name, cal in self.calibrations.items()
                for target in self.targets_of(cal)]

    def fresh(self, key: Key, states: Mapping[Key, NodeState], now: float) -> bool:
        """The one rule for "fresh", used by the engine, ``qnetlab status`` and the dashboard:
        the node's last success is no older than its calibration's timeout, it has not failed
        or been held since, and none of its dependencies has been recalibrated (its values
        changed) after that success. A fresh node is not measured again."""
        st = states.get(key)
        if st is None or st.last_success is None or st.last_outcome in ("failed", "held"):
            return False
        if now - st.last_success > self.calibrations[key[0]].timeout_s:
            return False
        for dep in self.dependencies(key):
            dst = states.get(dep)
            if dst is None or (dst.calibrated_at is not None
                               and dst.calibrated_at > st.last_success):
                return False
        return True


class Calibrator:
    """Runs a calibration graph on a station (``maintain``), recording everything."""

    def __init__(self, graph: CalibrationGraph, ctx: CalContext,
                 progress: Callable[[NodeResult], None] | None = None,
                 on_wait: Callable[[str], None] | None = print_waiting,
                 workers: int | None = None) -> None:
        self.graph = graph
        self.ctx = ctx
        self.progress = progress
        #: steps at once (None: as many as the resources allow; 1: one after another)
        self.workers = workers
        self.states: dict[Key, NodeState] = {}
        self.lock = CalibrationLock(ctx.store.path.parent, on_wait=on_wait)

    # --- state ----------------------------------------------------------------------------------
    def check_state(self, key: Key, now: float) -> bool:
        """Free check: the node is still fresh (:meth:`CalibrationGraph.fresh`)."""
        return self.graph.fresh(key, self.states, now)

    def _save(self, key: Key, state: NodeState) -> None:
        self.states[key] = state
        self.ctx.store.save_node_state(key[0], key[1], state, self.ctx.clock.now())

    def _catch_up_clock(self) -> None:
        """A virtual clock restarted at 0 resumes at the last recorded lab time."""
        clock = self.ctx.clock
        last = self.ctx.store.latest_time()
        if getattr(clock, "is_virtual", False) and clock.now() < last:
            clock.sleep(last - clock.now())

    def _catch_up_instruments(self) -> None:
        """Put values recorded by another process since this one last applied the store on
        the instruments (a simulated lab lives in its process; on hardware this re-sets the
        values the other process already set)."""
        store = self.ctx.store
        if store.version() == store.applied_version:
            return
        setters = {name: (lambda t, v, f=q.apply: f(self.ctx.bundle, t, v))
                   for cal in self.graph.calibrations.values()
                   for name, q in cal.quantities.items() if q.apply is not None}
        applied = store.apply(setters)
        log.info("applied %d calibrated values recorded by another process", len(applied))

    def _incomplete(self, key: Key) -> list[str]:
        """Quantities of a partly recorded node that have no live value (empty when the node
        has all of them or none)."""
        cal = self.graph.calibrations[key[0]]
        missing = [q for q in cal.quantities if self.ctx.store.current(q, key[1]) is None]
        return missing if len(missing) < len(cal.quantities) else []

    # --- the steps --------------------------------------------------------------------------------
    def _collect_runs(self, result: NodeResult) -> str | None:
        """Move the runs just taken into ``result``; the GUID of the last one."""
        guids = [r.guid for r in self.ctx.current_runs if r.guid]
        self.ctx.current_runs = []
        result.runs += guids
        return guids[-1] if guids else None

    def _check(self, key: Key, result: NodeResult) -> Check:
        cal = self.graph.calibrations[key[0]]
        try:
            check = cal.check_data(self.ctx, key[1])
        except Exception as exc:  # an instrument failing during a check is bad data
            log.exception("check_data %s:%s failed", *key)
            check = Check(Outcome.BAD_DATA, f"check failed: {type(exc).__name__}: {exc}")
        self._collect_runs(result)
        return check

    def _calibrate(self, key: Key, result: NodeResult) -> None:
        cal = self.graph.calibrations[key[0]]
        try:
            updates = cal.calibrate(self.ctx, key[1])
        except Exception as exc:
            log.exception("calibrate %s:%s failed", *key)
            self._collect_runs(result)
            self._restore(key)
            result.status, result.detail = "failed", f"{type(exc).__name__}: {exc}"
            self._save(key, NodeState(None, self.states.get(key, NodeState()).calibrated_at,
                                      "failed", result.detail))
            return
        source = self._collect_runs(result)
        self._commit(key, updates, source, result)
        if result.status == "held":
            self._restore(key)
            return
        for up in updates:
            q = cal.quantities[up.quantity]
            if q.apply is not None:
                q.apply(self.ctx.bundle, key[1], up.value)

    def _commit(self, key: Key, updates: list[Update], source: str | None,
                result: NodeResult) -> list[Record]:
        """Record a step's updates and its node state in one transaction (all or none).

        One node's updates go live together: if any jumps too far, all are held."""
        cal, store, t = self.graph.calibrations[key[0]], self.ctx.store, self.ctx.clock.now()
        with store.transaction():
            ours = store.version() == store.applied_version
            hold = any(store.jumps(u.quantity, key[1], u.value,
                                   cal.quantities[u.quantity].max_jump) for u in updates)
            records = [store.record(up.quantity, key[1], up.value, lab_time=t,
                                    unit=cal.quantities[up.quantity].unit,
                                    uncertainty=up.uncertainty, source_run=source,
                                    fit_quality=up.fit_quality,
                                    max_jump=cal.quantities[up.quantity].max_jump, hold=hold)
                       for up in updates]
            result.updates = list(updates)
            held = [f"{r.quantity} held (record {r.id}): {r.note}" for r in records
                    if r.status == "held" and r.note]
            old = self.states.get(key, NodeState()).calibrated_at
            if held:
                result.status, result.detail = "held", "; ".join(held)
                self._save(key, NodeState(None, old, "held", result.detail))
            else:
                changed = any(r.status == "applied" for r in records)
                result.status = "calibrated"
                result.detail = ", ".join(_describe(u, cal.quantities[u.quantity].unit)
                                          for u in updates)
                self._save(key, NodeState(t, t if changed else None, "calibrated",
                                          result.detail))
            if ours:  # nobody else wrote since this process applied: it now has our values
                store.applied_version = store.version()
        return records

    def _restore(self, key: Key) -> None:
        """Put the live calibrated values of this node back on the instruments."""
        cal = self.graph.calibrations[key[0]]
        for name, q in cal.quantities.items():
            rec = self.ctx.store.current(name, key[1])
            if rec is not None and q.apply is not None:
                try:
                    q.apply(self.ctx.bundle, key[1], rec.value)
                except Exception:
                    log.exception("restoring %s on %s failed", name, key[1])

    def _stamp(self, key: Key, detail: str) -> None:
        old = self.states.get(key, NodeState())
        self._save(key, NodeState(self.ctx.clock.now(), old.calibrated_at, "in_spec", detail))

    def diagnose(self, key: Key, result: NodeResult, seen: set[Key]) -> None:
        """Walk the ancestors of ``key`` with check_data; fix the out-of-spec one(s)."""
        for dep in self.graph.dependencies(key):
            if dep in seen:
                continue
            seen.add(dep)
            dep_result = NodeResult(dep[0], dep[1], "in_spec", diagnosed=True)
            check = self._check(dep, dep_result)
            if check.outcome is Outcome.IN_SPEC:
                self._stamp(dep, check.detail)
                dep_result.detail = check.detail
            else:
                if check.outcome is Outcome.BAD_DATA:
                    self.diagnose(dep, dep_result, seen)
                self._calibrate(dep, dep_result)
                if dep_result.status == "calibrated":
                    dep_result.detail = f"diagnosed ({check.outcome}: {check.detail}); " \
                                        f"{dep_result.detail}"
            self._results[dep] = dep_result
            self._emit(dep_result)

    def _emit(self, result: NodeResult) -> None:
        log.info("%s %s %s", result.key, result.status, result.detail)
        if self.progress is not None:
            self.progress(result)

    def maintain(self, targets: Iterable[str] | None = None, *, force: bool = False) -> Report:
        """Bring the selected part of the graph (all of it by default) into spec, holding the
        data directory's calibration lock (waiting for another process that holds it)."""
        t_wall = time.perf_counter()
        with self.lock:
            return self._maintain(targets, force, t_wall)

    def _maintain(self, targets: Iterable[str] | None, force: bool, t_wall: float) -> Report:
        clock = self.ctx.clock
        self.states = self.ctx.store.node_states()
        self._catch_up_clock()
        self._catch_up_instruments()
        t_lab = clock.now()
        self._results: dict[Key, NodeResult] = {}
        order = self.graph.order(targets)
        scheduler = Scheduler(clock, order, self.graph.dependencies, self._resources,
                              lambda key: self._settle(key, force), self.workers)
        schedule = scheduler.run()
        ordered = [self._results[k] for k in order if k in self._results]
        return Report(ordered, clock.now() - t_lab, time.perf_counter() - t_wall, schedule)

    def _resources(self, key: Key) -> frozenset[str]:
        return self.graph.calibrations[key[0]].resources(self.graph.topology, key[1])

    def _settle(self, key: Key, force: bool) -> None:
        """One node of the graph, its waits watched by the watchdogs of the sites it uses."""
        sites = sorted(r.partition(":")[2] for r in self._resources(key) if r.startswith("node:"))
        with working_on(sites):
            self._settle_node(key, force)

    def _settle_node(self, key: Key, force: bool) -> None:
        """Blocked, fresh, in spec or (diagnosed and) recalibrated."""
        if key in self._results:
            return
        result = NodeResult(*key, status="fresh")
        bad_deps = [d for d in self.graph.dependencies(key)
                    if self._results.get(d) is not None
                    and self._results[d].status in ("failed", "blocked", "held")]
        if bad_deps:
            result.status = "blocked"
            result.detail = "needs " + ", ".join(
                f"{d[0]}:{d[1]} ({self._results[d].status})" for d in bad_deps)
        elif missing := self._incomplete(key):
            self._calibrate(key, result)
            if result.status == "calibrated":
                result.detail = f"incomplete record (no {', '.join(missing)}) -> " \
                                f"{result.detail}"
        elif not force and self.check_state(key, self.ctx.clock.now()):
            result.detail = "fresh (no measurement)"
        else:
            check = self._check(key, result)
            if check.outcome is Outcome.IN_SPEC:
                result.status, result.detail = "in_spec", check.detail
                self._stamp(key, check.detail)
            else:
                if check.outcome is Outcome.BAD_DATA:
                    self.diagnose(key, result, {key})
                self._calibrate(key, result)
                if result.status == "calibrated":
                    result.detail = f"{check.outcome} ({check.detail}) -> {result.detail}"
        self._results[key] = result
        self._emit(result)

    def approve(self, record_id: int) -> list[int]:
        """Approve a held update and the others held with it (same run): make them live and
        mark their calibration node calibrated (one transaction), then put them on the
        instruments."""
        with self.lock:
            group, nodes = self._approve_records(record_id)
            for cal, mine in nodes:
                for rec in mine:
                    q = cal.quantities[rec.quantity]
                    if q.apply is not None:
                        q.apply(self.ctx.bundle, rec.target, rec.value)
            return [r.id for r in group]

    def _approve_records(self, record_id: int
                         ) -> tuple[list[Record], list[tuple[Calibration, list[Record]]]]:
        store, now = self.ctx.store, self.ctx.clock.now()
        with store.transaction():
            first = store.get(record_id)
            group = [r for r in store.held() if r.target == first.target and (
                r.id == record_id or (r.source_run and r.source_run == first.source_run))]
            ours = store.version() == store.applied_version
            for rec in group:
                store.approve(rec.id, lab_time=now)
            if ours:  # what it approves is put on the instruments below
                store.applied_version = store.version()
            nodes = []
            for cal in self.graph.calibrations.values():
                mine = [r for r in group if r.quantity in cal.quantities]
                if mine:
                    nodes.append((cal, mine))
                    self._save((cal.name, first.target),
                               NodeState(now, now, "calibrated",
                                         f"approved records {[r.id for r in mine]}"))
        return group, nodes


def _describe(update: Update, unit: str) -> str:
    return f"{update.quantity} = {plus_minus(update.value, update.uncertainty, unit)}"
