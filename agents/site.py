"""``SiteAgent``: the one owner of a site's instruments.

It loads only its site's instruments from a station file, runs its own safety watchdog on
them, and executes calls on them by path: ``call(("qnu_alice", "transducer"), "bias", (0.3,))``
sets ``qnu_alice.transducer.bias`` to 0.3. Every reply is a :class:`Reply` holding plain data
(numbers, numpy arrays, dicts, the driver's dataclasses), a :class:`Ref` (a description of an
instrument module a method returned, e.g. ``qnu.link_to("bob")``) or the exception the
instrument raised, plus the events (recoveries, watchdog transitions) since the last reply,
so that a coordinator learns of them without asking separately.
"""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from qcodes.instrument import Instrument, InstrumentBase
from qcodes.parameters import ParameterBase
from qcodes.station import Station

from qnetlab.clock import Clock, WallClock
from qnetlab.errors import QnetlabError
from qnetlab.stations import StationBundle, read_topology, station_file
from qnetlab.stations.loader import LabStation, served_clock
from qnetlab.stations.lock import acquire, hardware_addresses
from qnetlab.stations.topology import TopologyError

from .sites import Site, sites_of

log = logging.getLogger("qnetlab.agents")


class SiteRestarted(QnetlabError):
    """A site's agent died during or before a call: the call may or may not have acted, and
    is never retried. The restarted agent puts its site in the safe state and refuses every
    call until the coordinator has acknowledged the restart."""


@dataclass(frozen=True)
class Ref:
    """An instrument module on an agent, as its description (see :func:`describe`)."""

    description: dict[str, Any]


@dataclass
class Reply:
    """What one call returns: its value or the exception raised, and the agent's new events."""

    value: Any = None
    error: BaseException | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


def describe(obj: Any) -> dict[str, Any]:
    """A picklable description of an instrument (module): its names, its parameters (name,
    label, unit, register name), submodules (channel lists as lists) and public methods; what
    a proxy needs to look like the instrument without asking again."""
    submodules: dict[str, Any] = {}
    for name, sub in obj.submodules.items():
        if isinstance(sub, InstrumentBase):
            submodules[name] = describe(sub)
        else:  # a ChannelTuple / ChannelList
            submodules[name] = {"channels": [describe(ch) for ch in sub]}
    parameters = {n: _parameter(p) for n, p in obj.parameters.items()}
    for name, sub in vars(obj).items():  # aliases: ``fridge.mxc is fridge.ch06``
        if name.startswith("_") or name in submodules or name in parameters or name == "parent":
            continue
        if isinstance(sub, InstrumentBase) and sub is not obj:
            submodules[name] = describe(sub)
        elif isinstance(sub, ParameterBase) and sub.instrument is not None:
            parameters[name] = _parameter(sub)  # ``aom.pulse_width is aom.ch1.pulse_width``
    taken = set(parameters) | set(submodules)
    methods = sorted(n for n in dir(type(obj)) if not n.startswith("_") and n not in taken
                     and callable(getattr(type(obj), n, None)))
    constants = {n: getattr(type(obj), n) for n in dir(type(obj)) if n.isupper() and not
                 n.startswith("_") and isinstance(getattr(type(obj), n), (str, int, float))}
    return {"parts": list(obj.name_parts), "name": obj.name, "short_name": obj.short_name,
            "full_name": obj.full_name,
            "parameters": parameters,
            "submodules": submodules, "methods": methods,
            "constants": constants}  # the driver's class constants, e.g. SAFE_MAX_RANGE


def _parameter(p: Any) -> dict[str, Any]:
    """What a proxy of parameter ``p`` needs: where it lives and how datasets name it."""
    return {"parts": list(p.instrument.name_parts), "name": p.short_name, "label": p.label,
            "unit": p.unit, "register_name": p.register_name, "vals": _plain(p.vals)}


def _plain(validator: Any) -> Any:
    """A parameter's validator when it pickles (limits are read from it), else None."""
    try:
        pickle.dumps(validator)
    except Exception:
        return None
    return validator


def _child(obj: Any, part: str) -> Any:
    """The submodule or channel ``part`` of ``obj`` (channels may live only in a list)."""
    sub = obj.submodules.get(part)
    if sub is not None:
        return sub
    for group in obj.submodules.values():
        if not isinstance(group, InstrumentBase):
            for channel in group:
                if channel.short_name == part:
                    return channel
    alias = getattr(obj, part, None)
    if isinstance(alias, InstrumentBase):
        return alias
    raise KeyError(f"{obj.full_name} has no submodule or channel {part!r}")


def _site_instruments(path: Path) -> dict[str, Any]:
    raw = yaml.safe_load(path.read_text()) or {}
    return raw.get("instruments") or {}


def _site_clock(station: Station, served: Clock | None, path: Path) -> Clock:
    """The lab clock of the site's instruments (the served lab's when the file names one)."""
    if served is not None:
        return served
    clocks = {id(c.clock): c.clock for c in station.components.values() if hasattr(c, "clock")}
    if all(isinstance(c, WallClock) for c in clocks.values()):
        return WallClock()
    if len(clocks) > 1:
        raise TopologyError(f"{path.name}: instruments run on different clocks")
    return next(iter(clocks.values()))


def load_site(path: Path, site: Site, topology: Any) -> StationBundle:
    """Bring up only ``site``'s instruments of the station file at ``path``: a station of its
    own (its hardware addresses locked to this process), on the lab's clock."""
    specs = _site_instruments(path)
    _, served = served_clock(path)
    lock = acquire(hardware_addresses({n: specs[n] for n in site.instruments}),
                   f"{path.name} (site {site.name})")
    try:
        station = LabStation(config_file=str(path))  # parsed once, not per instrument
        station.qnetlab_lock = lock  # type: ignore[attr-defined]
        station.load_all_instruments(only_names=site.instruments)
    except BaseException:
        for name in site.instruments:
            if Instrument.exist(name):
                Instrument.find_instrument(name).close()
        lock.release()
        raise
    clock = _site_clock(station, served, path)
    for component in station.components.values():
        if hasattr(component, "clock"):
            component.clock = clock
    return StationBundle(station, site.sub_topology(topology), clock)


class SiteAgent:
    """The only thing that touches a site's instruments; see the module docstring.

    Args:
        station: the station file (path or bundled name).
        site: the site's name (:func:`~qnetlab.agents.sites.sites_of`).
        watchdog: run the site's safety watchdog (pumps off on a trip, abort on a hard one).
        restarted: this agent replaces one that died: the site goes to its safe state first.
        poll_s: the watchdog's poll period in lab seconds.
    """

    def __init__(self, station: str | Path, site: str, *, watchdog: bool = True,
                 restarted: bool = False, poll_s: float = 5.0) -> None:
        path = station_file(station)
        topology = read_topology(path)
        sites = sites_of(topology)
        if site not in sites:
            raise ValueError(f"site={site!r}: not a site of {path.name} (sites: "
                             f"{', '.join(sites)})")
        self.site = sites[site]
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self.bundle = load_site(path, self.site, topology)
        try:
            self._start(restarted, watchdog, poll_s)
        except BaseException:
            self.bundle.close()
            raise

    def _start(self, restarted: bool, watchdog: bool, poll_s: float) -> None:
        """Safe state after a restart, recovery events hooked, the watchdog running."""
        from qnetlab.sequences.safety import station_safe_state

        site = self.site.name
        self.restarted = restarted
        self._fenced = restarted  # no call acts until the coordinator knows of the restart
        self.safe_at_start: dict[str, str] = {}
        if restarted:  # whatever the dead agent left on, make it safe before anything else
            self.safe_at_start = station_safe_state(self.bundle)
            self._record({"lab_time": self.bundle.clock.now(), "kind": "agent_restarted",
                          "detail": f"site {site}: agent restarted, safe state "
                                    f"{self.safe_at_start}"})
        self._hooked = [c for c in self.bundle.station.components.values()
                        if isinstance(getattr(c, "on_recovery", None), list)]
        for inst in self._hooked:
            inst.on_recovery.append(self._record)
        self._stop_watchdog = self._start_watchdog(poll_s) if watchdog else None
        self._resolved: dict[tuple[str, ...], Any] = {}

    # --- watchdog and events ------------------------------------------------------------------
    def _start_watchdog(self, poll_s: float) -> Any:
        """The site's watchdog: polls its nodes' conditions on the lab clock and puts its pumps
        in the safe state on a trip; drivers' waits inside calls go through it."""
        from qnetlab.sequences.safety import GuardedClock, default_watchdog, watch_in_calls

        if not self.site.nodes:
            return None  # a heralding station alone has no emitter or heater to watch
        self.watchdog = default_watchdog(self.bundle, poll_s=poll_s, on_event=self._record)
        guarded = GuardedClock(self.watchdog)
        for component in self.bundle.station.components.values():
            if hasattr(component, "clock"):
                component.clock = guarded
        return watch_in_calls(self.watchdog)

    def _record(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._events.append({**event, "site": self.site.name})

    def take_events(self) -> list[dict[str, Any]]:
        """The events recorded since the last reply (they are handed over once)."""
        return self._drain()

    def _drain(self) -> list[dict[str, Any]]:
        if not self._events:  # the common case: nothing to hand over, no lock taken
            return []
        with self._lock:
            events, self._events = self._events, []
        return events

    # --- calls --------------------------------------------------------------------------------
    def _resolve(self, parts: tuple[str, ...] | list[str]) -> Any:
        key = tuple(parts)
        obj = self._resolved.get(key)
        if obj is None:
            if key[0] not in self.site.instruments:
                raise KeyError(f"instrument {key[0]!r} is not on site {self.site.name} (its "
                               f"instruments: {', '.join(self.site.instruments)})")
            obj = self.bundle.station.components[key[0]]
            for part in key[1:]:
                obj = _child(obj, part)
            self._resolved[key] = obj
        return obj

    def _arg(self, value: Any) -> Any:
        return self._resolve(value.description["parts"]) if isinstance(value, Ref) else value

    def call(self, parts: tuple[str, ...] | list[str], attr: str, args: tuple[Any, ...] = (),
             kwargs: dict[str, Any] | None = None) -> Reply:
        """``parts``' ``attr`` called with ``args``: a parameter is read (no args) or set, a
        method called; ``"cache:<parameter>"`` reads a parameter's cache. The instrument's own
        exception comes back in the reply, never raised here."""
        if self._fenced:
            return Reply(error=SiteRestarted(
                f"site {self.site.name}: its agent restarted (site put in the safe state: "
                f"{self.safe_at_start}); calls resume once the coordinator acknowledges"),
                events=self._drain())
        try:
            obj = self._resolve(parts)
            if attr.startswith("cache:"):
                value = getattr(obj, attr[6:]).cache()
            else:
                value = getattr(obj, attr)(*(self._arg(a) for a in args),
                                           **{k: self._arg(v) for k, v in (kwargs or {}).items()})
        except Exception as exc:
            return Reply(error=exc, events=self._drain())
        if isinstance(value, InstrumentBase):
            value = Ref(describe(value))
        elif isinstance(value, ParameterBase):
            value = value.get()
        return Reply(value, events=self._drain())

    def acknowledge(self) -> dict[str, Any]:
        """The coordinator knows this agent restarted: calls are served again. Returns the
        status (with the safe state the restart left the site in)."""
        self._fenced = False
        return self.status()

    def describe(self) -> dict[str, dict[str, Any]]:
        """Every instrument of the site, described (one call builds all of a site's proxies)."""
        return {n: describe(self.bundle.station.components[n]) for n in self.site.instruments}

    def snapshot(self, names: Collection[str] | None = None) -> dict[str, Any]:
        """The site's instruments' snapshots (those in ``names`` if given) from their caches
        (no instrument is queried)."""
        return {n: self.bundle.station.components[n].snapshot(update=False)
                for n in self.site.instruments if names is None or n in names}

    def safe_state(self) -> dict[str, str]:
        """Every emitter and heater of the site safe, read back (see ``station_safe_state``)."""
        from qnetlab.sequences.safety import station_safe_state

        return station_safe_state(self.bundle)

    def status(self) -> dict[str, Any]:
        """Health: the site, its instruments, lab time, watchdog state, whether it restarted."""
        wd = getattr(self, "watchdog", None)
        return {"site": self.site.name, "instruments": list(self.site.instruments),
                "lab_time": self.bundle.clock.now(), "restarted": self.restarted,
                "safe_at_start": dict(self.safe_at_start),
                "watchdog": str(wd.state) if wd is not None else "none"}

    def close(self) -> None:
        """Stop the watchdog and close the site's instruments (idempotent)."""
        if self._stop_watchdog is not None:
            self._stop_watchdog()
            self._stop_watchdog = None
        for inst in self._hooked:
            if self._record in inst.on_recovery:
                inst.on_recovery.remove(self._record)
        self.bundle.close()
