"""The lab the service owns: the station through its site agents, their watchdogs, calibration
upkeep and what jobs do.

:class:`Lab` is the narrow interface between the HTTP service and the instruments. Everything
in it runs on the one lab thread (QCoDeS instruments are not thread-safe); other threads only
read :meth:`Lab.snapshot`, a copy refreshed by the lab thread, and :meth:`Lab.veto`.

Lab time: on the built-in simulated lab the clock is virtual and passes only when something
waits on it. While idle, the service lets ``pace`` lab seconds pass per wall second
(:meth:`Lab.tick`; 1 by default, so lab time follows wall time), the watchdog polling on the lab
clock as in any sequence; calibration upkeep is due every ``maintain_every_s`` of lab time. On
hardware (wall clock) or a served lab, lab time passes by itself and the same schedule holds.

The station is owned through in-process site agents (one per site, as the CLI's commands), and
a job runs through them guarded by the sites' own watchdogs, like the CLI's sequences; a site
watchdog that has tripped vetoes every write whatever the caller's credentials
(:meth:`Lab.veto`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HISTORY = 600
"""Samples of fridge temperature kept for the status page."""
SETTINGS = {
    "pump_power_dbm": "pump laser power set-point (dBm); above the calibrated operating point "
                      "it is hazardous",
    "pump_emission": "pump laser emission, 'on' (hazardous) or 'off'",
    "mxc_heater_setpoint_k": "mixing-chamber heater PID set-point (K; hazardous)",
    "mxc_heater_percent": "mixing-chamber heater open-loop output (%; hazardous unless 0, "
                          "which turns it off)",
    "still_heater_percent": "still heater output (%; hazardous)",
}
"""The instrument writes the service allows (``POST /api/instrument``)."""


def safe_direction(setting: str, value: Any) -> bool:
    """Writes that only make the lab safer (emission off, MXC heater off): allowed to anyone
    with ``write:instrument`` and never vetoed by the watchdog."""
    return (setting, value) in (("pump_emission", "off"), ("mxc_heater_percent", 0),
                                ("mxc_heater_percent", 0.0))


class ServiceStopping(KeyboardInterrupt):
    """Raised at the running sequence's next safe point when the service stops (SIGTERM,
    SIGINT): like Ctrl-C in the CLI, its runs are marked interrupted and the lab made safe."""


class Vetoed(Exception):
    """The watchdog refuses the write (its reason is the message)."""


class Lab:
    """One station brought up, guarded by its watchdog, with calibration maintained."""

    def __init__(self, station: str, data_dir: Path, *, pace: float = 1.0,
                 maintain_every_s: float = 3600.0, poll_s: float = 5.0) -> None:
        self.station_name = station
        self.data_dir = Path(data_dir)
        self.pace = pace
        self.maintain_every_s = maintain_every_s
        self.poll_s = poll_s
        self.resource = f"station:{station}"
        self._stack = ExitStack()
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] = {"state": "starting", "station": station}
        self._mxc: deque[tuple[float, str, float]] = deque(maxlen=HISTORY)
        self.version = 0
        self.bundle: Any = None
        self.safe: Any = None
        self.watchdog: Any = None
        self.next_maintenance: float | None = None
        self._made_safe = False
        self.stopping = threading.Event()

    # -- bring up and down (lab thread) --------------------------------------------------

    def start(self) -> None:
        """Bring the station up through its site agents (in this process, one per site, each
        with its own watchdog) with the stored calibration; jobs run guarded by them."""
        from qnetlab.agents import load_calibrated_agents
        from qnetlab.runstore import RunStore
        from qnetlab.sequences.calibration import CalibrationGraph, default_calibrations

        self.bundle, self.store = load_calibrated_agents(self.station_name, self.data_dir)
        self._stack.callback(self.bundle.close)
        self._stack.callback(self._safe_state)
        self.runs = RunStore(self.data_dir)
        self.graph = CalibrationGraph(default_calibrations(), self.bundle.topology)
        self.watchdog = SiteWatchdogs(self.bundle.watchdogs())
        self.watchdog.stop_check(self._check_stop)
        self._stack.callback(self.watchdog.stop_check, None)
        self._stack.enter_context(self.bundle.recovery_listener(self.runs.log_event))
        self.safe = self._stack.enter_context(self.bundle.guarded())
        self.watchdog.poll()
        if self.maintain_every_s > 0:
            self.next_maintenance = self.bundle.clock.now()
        self.refresh()

    def _check_stop(self) -> None:
        if self.stopping.is_set():
            raise ServiceStopping("the service was stopped while this job ran; not repeated")

    def _safe_state(self) -> None:
        self.bundle.safe_state()  # every site at once

    def close(self) -> None:
        """Every emitter and heater to its safe state, then the instruments closed."""
        self._stack.close()

    # -- time passing while idle (lab thread) -------------------------------------------

    def tick(self, wall_s: float) -> None:
        """Let lab time pass while idle (``pace`` lab s per wall s on a virtual clock), with
        the watchdog polling on the lab clock, then refresh the snapshot."""
        clock = self.bundle.clock
        if getattr(clock, "is_virtual", False) and self.pace > 0 and wall_s > 0:
            clock.sleep(self.pace * wall_s)  # the watchdog's lab-clock alarm polls meanwhile
        try:
            self.watchdog.poll()  # every site's watchdog that has not aborted
        except Exception as exc:  # a hard trip: that site's watchdog is aborted (final)
            self.runs.log_event({"lab_time": clock.now(), "kind": "service",
                                 "detail": f"watchdog: {exc}"})
        if self.watchdog.state == "aborted" and not self._made_safe:
            self._made_safe = True  # a hard trip: every emitter and heater off, once
            self._safe_state()
        self.refresh()

    def maintenance_due(self) -> bool:
        """True once per ``maintain_every_s`` of lab time (the upkeep schedule)."""
        if self.next_maintenance is None or self.veto() is not None:
            return False
        now = self.bundle.clock.now()
        if now < self.next_maintenance:
            return False
        self.next_maintenance = now + self.maintain_every_s
        return True

    def veto(self) -> str | None:
        """The watchdog's reason to refuse any write now, or None."""
        wd = self.watchdog
        if wd is None:
            return "the lab is still starting"
        if wd.state == "running":
            return None
        trip = (wd.last_trip or {}).get("reason") or next(
            (e["detail"] for e in reversed(wd.events) if e["kind"] in ("aborted", "suspending")),
            "")
        return f"the watchdog has the site {wd.state}: {trip}"

    # -- jobs (lab thread) ----------------------------------------------------------------

    def run(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run one job; returns its result (raises with a one-line reason on failure)."""
        reason = self.veto()
        if reason is not None and not (kind == "instrument" and safe_direction(
                params.get("setting", ""), params.get("value"))):
            raise Vetoed(reason)
        t0 = time.perf_counter()
        try:
            if kind in ("request", "entangle"):
                result = self.entangle(**params)
            elif kind in ("calibrate", "maintain"):
                result = self.calibrate(**params)
            elif kind == "instrument":
                result = self.set_instrument(**params)
            else:
                raise ValueError(f"unknown job kind {kind!r}")
        finally:
            self.refresh()
        return {**result, "wall_s": time.perf_counter() - t0}

    def entangle(self, link: str, pairs: int, protocol: str | None = None,
                 bases: list[str] | tuple[str, ...] = ("X", "Y", "Z"),
                 max_time_s: float = 3600.0, min_fidelity: float = 0.0) -> dict[str, Any]:
        """Heralded pairs on ``link`` (the entanglement sequence), rate and fidelity."""
        from qnetlab.sequences.entanglement import generate
        from qnetlab.sequences.entanglement.verification import fidelity_estimate

        gen = generate(self.safe, link, pairs, protocol=protocol, bases=tuple(bases),
                       max_time_s=max_time_s, runs=self.runs, name="service.request",
                       calibration=self.store.as_dict())
        f, err, why = fidelity_estimate(gen)
        delivered = len(gen) >= pairs and (min_fidelity <= 0 or (why is None and f >= min_fidelity))
        return {"link": link, "requested": pairs, "delivered_pairs": len(gen),
                "protocol": gen.protocol, "request_state": gen.state, "rate_hz": gen.rate_hz,
                "fidelity": _num(f), "fidelity_err": _num(err), "fidelity_note": why,
                "run_guid": gen.run_guid, "lab_time": self.bundle.clock.now(),
                "delivered": bool(delivered)}

    def calibrate(self, targets: list[str] | None = None, force: bool = False
                  ) -> dict[str, Any]:
        """Maintain the calibration graph (stale or failing nodes only, unless ``force``)."""
        from qnetlab.sequences.calibration import calibrate

        report = calibrate(self.safe, targets=targets or None, force=force,
                           data_dir=self.data_dir, store=self.store, runs=self.runs)
        return {"ok": report.ok, "table": report.table(), "lab_time": self.bundle.clock.now(),
                "results": [{"key": r.key, "status": r.status, "detail": r.detail}
                            for r in report.results]}

    def is_hazardous(self, node: str, setting: str, value: Any) -> bool:
        """Heater and fridge set-points, emission on, and pump power above the calibrated
        operating point (or any power when the node has none) need ``write:hazardous``.
        Called from the HTTP threads: reads only the snapshot."""
        if setting == "pump_power_dbm":
            point = self.snapshot().get("operating_points", {}).get(node)
            return point is None or float(value) > float(point)
        return not safe_direction(setting, value)

    def set_instrument(self, node: str, setting: str, value: Any) -> dict[str, Any]:
        """One allowed instrument write, through the driver (its hard limits apply)."""
        inst = self.safe.node(node)
        if setting == "pump_power_dbm":
            inst["pump"].power(float(value))
        elif setting == "pump_emission":
            pump = inst["pump"]
            if value == "on":
                pump.output("on")
            else:
                pump.safe_off()
        elif setting == "mxc_heater_setpoint_k":
            inst["fridge"].mxc_heater.setpoint(float(value))
        elif setting == "mxc_heater_percent":
            fridge = inst["fridge"]
            if float(value) <= 0:
                fridge.heaters_off()
            else:
                fridge.mxc_heater.mode("open_loop")
                fridge.mxc_heater.output_range(fridge.SAFE_MAX_RANGE)
                fridge.mxc_heater.manual_output(float(value))
        elif setting == "still_heater_percent":
            inst["fridge"].still_heater(float(value))
        else:
            raise ValueError(f"setting {setting!r} is not one of {', '.join(SETTINGS)}")
        return {"node": node, "setting": setting, "value": value,
                "lab_time": self.bundle.clock.now()}

    # -- the snapshot other threads read ----------------------------------------------------

    def refresh(self) -> None:
        """Read the lab (fridges, pumps, watchdog, calibration) into the snapshot."""
        now = self.bundle.clock.now()
        nodes = {}
        for name in self.bundle.topology.nodes:
            nodes[name] = self._node_state(name)
            self._mxc.append((now, name, nodes[name]["mxc_k"]))
        snap = {"state": "ready", "station": self.station_name, "lab_time": now,
                "topology": self._topology(), "nodes": nodes,
                "watchdog": {"state": str(self.watchdog.state), "veto": self.veto(),
                             "events": self.watchdog.events[-10:]},
                "calibration": self._calibration(now),
                "maintenance": {"every_lab_s": self.maintain_every_s,
                                "next_lab_time": self.next_maintenance},
                "operating_points": self.store.as_dict().get("pump_power_dbm", {}),
                "pace": self.pace, "mxc_history": list(self._mxc)}
        with self._lock:
            self._snapshot = snap
            self.version += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self._snapshot

    def _node_state(self, name: str) -> dict[str, Any]:
        inst = self.bundle.node(name)
        return {"mxc_k": inst["fridge"].mxc.temperature(),
                "interlock": str(inst["gas"].interlock_state()),
                "pump_output": "on" if inst["pump"].output() else "off",
                "emitted_dbm": inst["pump"].power_actual()}

    def _topology(self) -> dict[str, Any]:
        topo = self.bundle.topology
        return {"nodes": list(topo.nodes),
                "heralds": list(topo.heralds),
                "links": {n: {"nodes": list(link.nodes), "herald": link.herald}
                          for n, link in topo.links.items()}}

    def _calibration(self, now: float) -> list[dict[str, Any]]:
        states = self.store.node_states()
        rows = []
        for key in self.graph.keys():
            st = states.get(key)
            fresh = self.graph.fresh(key, states, now)
            state = ("fresh" if fresh else "failed" if st and st.last_outcome == "failed"
                     else "stale")
            rows.append({"key": f"{key[0]}:{key[1]}", "calibration": key[0], "target": key[1],
                         "state": state, "outcome": st.last_outcome if st else None,
                         "age_s": (now - st.last_success) if st and st.last_success is not None
                         else None,
                         "timeout_s": self.graph.calibrations[key[0]].timeout_s})
        return rows


class SiteWatchdogs:
    """The sites' watchdogs (each site agent's own) seen as the service's one watchdog: its
    state is the worst of theirs, its events theirs in lab-time order, its last trip the
    latest of theirs; a poll polls every site that has not aborted."""

    SEVERITY = ("running", "resuming", "suspending", "suspended", "aborted")

    def __init__(self, by_node: dict[str, Any]) -> None:
        self.sites = list({id(d): d for d in by_node.values()}.values())

    @property
    def state(self) -> str:
        if not self.sites:
            return "running"
        return max((str(d.state) for d in self.sites), key=self.SEVERITY.index)

    @property
    def events(self) -> list[dict[str, Any]]:
        return sorted((e for d in self.sites for e in d.events), key=lambda e: e["lab_time"])

    @property
    def last_trip(self) -> dict[str, Any] | None:
        trips = [d.last_trip for d in self.sites if d.last_trip is not None]
        return max(trips, key=lambda t: t["lab_time"]) if trips else None

    def stop_check(self, check: Any) -> None:
        """Give every site's watchdog the check its sequence's waits run (None: none)."""
        for dog in self.sites:
            dog.stop_check = check

    def poll(self) -> None:
        """Poll every site not aborted; the first failure (a hard trip) is raised after all
        of them have polled."""
        failure: Exception | None = None
        for dog in self.sites:
            if str(dog.state) == "aborted":
                continue
            try:
                dog.poll()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure


def _num(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)
