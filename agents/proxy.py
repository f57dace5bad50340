"""The coordinator's view of the agents: ``AgentBundle``, a drop-in for ``StationBundle``.

``bundle.node("alice")["fridge"].mxc.temperature()`` looks and behaves as on a station: the
proxies mirror each instrument's parameters (real QCoDeS parameters, so ``run.register``,
``add_point`` and ``set_to`` work), submodules, channel lists and methods, and forward each call
to the agent that owns the instrument (in this process or on Ray: a *transport*, see
:class:`Transport`). What an instrument raises is raised here, the same type and words. Events
of the agents (recoveries, watchdog transitions, restarts) travel with the replies and reach the
listeners of :meth:`AgentBundle.recovery_listener`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from qcodes.parameters import Parameter

from qnetlab.clock import Clock
from qnetlab.stations import Topology
from qnetlab.stations.topology import NODE_ROLES

from .site import Ref, Reply
from .sites import Site, site_of_instrument

Listener = Callable[[dict[str, Any]], None]


class Transport(Protocol):
    """How the coordinator reaches its agents: in this process or on Ray."""

    sites: dict[str, Site]

    def call(self, site: str, parts: tuple[str, ...], attr: str, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Reply: ...

    def describe(self) -> dict[str, dict[str, Any]]: ...

    def snapshots(self, names: Collection[str] | None = None) -> dict[str, Any]: ...

    def safe_state(self) -> dict[str, dict[str, str]]: ...

    def status(self) -> dict[str, dict[str, Any]]: ...

    def watchdogs(self) -> dict[str, Any]: ...

    def take_events(self) -> list[dict[str, Any]]: ...

    def take_deaths(self) -> list[str]: ...

    def wait_ready(self, site: str, timeout_s: float) -> dict[str, Any]: ...

    def close(self) -> None: ...


class _SiteLink:
    """One site's agent as the proxies use it: forwards calls, raises errors, hands events."""

    def __init__(self, transport: Transport, site: str, listeners: list[Listener]) -> None:
        self.transport, self.site, self.listeners = transport, site, listeners

    def call(self, parts: tuple[str, ...], attr: str, args: tuple[Any, ...] = (),
             kwargs: dict[str, Any] | None = None) -> Any:
        if args:  # most calls are reads: no per-call allocations for them
            args = tuple(_as_ref(a) for a in args)
        kwargs = {k: _as_ref(v) for k, v in kwargs.items()} if kwargs else {}
        reply = self.transport.call(self.site, parts, attr, args, kwargs)
        if reply.events:
            for event in reply.events:
                for listener in list(self.listeners):
                    listener(event)
        if reply.error is not None:
            raise reply.error
        if isinstance(reply.value, Ref):
            return InstrumentProxy(self, reply.value.description)
        return reply.value


def _as_ref(value: Any) -> Any:
    return Ref(value._description) if isinstance(value, InstrumentProxy) else value


class ProxyParameter(Parameter):
    """A parameter of an instrument on an agent: get and set go to the agent; name, label,
    unit and register name are the instrument's, so datasets read the same. It never trusts
    its own cache (another thread or process may have set the instrument since)."""

    def __init__(self, link: _SiteLink, parts: tuple[str, ...], meta: Mapping[str, Any]) -> None:
        self._link, self._parts = link, parts
        super().__init__(meta["name"], label=meta["label"], unit=meta["unit"],
                         register_name=meta["register_name"], max_val_age=0,
                         vals=meta.get("vals"))
        # straight to the agent: QCoDeS's wrappers would add this proxy's name to the
        # instrument's error and keep a cache nobody may trust
        self.get = self.get_raw  # type: ignore[method-assign]
        self.set = self.set_raw  # type: ignore[method-assign]

    def validate(self, value: Any) -> None:
        """Validation is the instrument's, on its agent (its error, its words)."""

    def get_raw(self) -> Any:
        return self._link.call(self._parts, self.short_name)

    def set_raw(self, value: Any) -> None:
        self._link.call(self._parts, self.short_name, (value,))

    @contextmanager
    def set_to(self, value: Any, allow_changes: bool = False) -> Iterator[None]:  # type: ignore[override]
        """As QCoDeS's ``set_to``, from the instrument's own cached value (on its agent)."""
        original = self._link.call(self._parts, f"cache:{self.short_name}")
        if original != value:
            self.set(value)
        try:
            yield
        finally:
            if original != value:
                self.set(original)

    def restore_at_exit(self, allow_changes: bool = True) -> Any:  # type: ignore[override]
        return self.set_to(self._link.call(self._parts, f"cache:{self.short_name}"))


class _RemoteMethod:
    """A method of an instrument on an agent."""

    def __init__(self, link: _SiteLink, parts: tuple[str, ...], name: str) -> None:
        self._link, self._parts, self.__name__ = link, parts, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._link.call(self._parts, self.__name__, args, kwargs)


class InstrumentProxy:
    """An instrument (or module, or channel) on an agent; see the module docstring."""

    def __init__(self, link: _SiteLink, description: Mapping[str, Any]) -> None:
        parts = tuple(description["parts"])
        self._link, self._description, self._parts = link, dict(description), parts
        self._methods = frozenset(description["methods"])
        self.name, self.short_name = description["name"], description["short_name"]
        self.full_name, self.name_parts = description["full_name"], list(parts)
        self.parameters = {n: ProxyParameter(link, tuple(m["parts"]), m)
                           for n, m in description["parameters"].items()}
        self.submodules: dict[str, Any] = {}
        for n, sub in description["submodules"].items():
            self.submodules[n] = (tuple(InstrumentProxy(link, c) for c in sub["channels"])
                                  if "channels" in sub else InstrumentProxy(link, sub))
        self.__dict__.update(description.get("constants", {}))
        self.__dict__.update(self.parameters)
        self.__dict__.update(self.submodules)

    @property
    def site(self) -> str:
        return self._link.site

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr not in self.__dict__.get("_methods", ()):
            raise AttributeError(f"{self.__dict__.get('full_name', '?')}: no parameter, "
                                 f"submodule or method {attr!r}")
        method = _RemoteMethod(self._link, self._parts, attr)
        self.__dict__[attr] = method
        return method

    def __repr__(self) -> str:
        return f"<{self.full_name} on the agent of site {self.site}>"


class AgentStation:
    """What the run store and QCoDeS ask of ``bundle.station``: a snapshot (gathered from every
    agent at once, from the instruments' caches) and the components by name."""

    def __init__(self, bundle: AgentBundle, names: frozenset[str] | None = None) -> None:
        self._bundle = bundle
        self._names = names

    def _mine(self, name: str) -> bool:
        return self._names is None or name in self._names

    @property
    def components(self) -> dict[str, Any]:
        return {n: self._bundle.instrument(n) for n in self._bundle._site_of if self._mine(n)}

    def subset(self, names: set[str] | frozenset[str]) -> AgentStation:
        """The same station restricted to the instruments ``names`` (what one calibration
        step's runs snapshot: the instruments of the resources it holds)."""
        return AgentStation(self._bundle, frozenset(names))

    def snapshot(self, update: Any = False) -> dict[str, Any]:
        instruments = self._bundle.transport.snapshots(self._names)  # only the ones asked
        return {"instruments": instruments, "parameters": {},
                "components": {}, "config": None,
                "qnetlab_agents": {s: [n for n in site.instruments if self._mine(n)]
                                   for s, site in self._bundle.transport.sites.items()}}


class AgentBundle:
    """A ``StationBundle`` whose instruments live on site agents (see the module docstring).

    ``station, topology, clock = bundle`` unpacks like a StationBundle."""

    def __init__(self, transport: Transport, topology: Topology, clock: Clock,
                 path: Path | None = None) -> None:
        self.transport, self.topology, self.clock, self.path = transport, topology, clock, path
        self.station = AgentStation(self)
        self._site_of = site_of_instrument(transport.sites)
        self._listeners: list[Listener] = []
        self._links = {s: _SiteLink(transport, s, self._listeners) for s in transport.sites}
        self._proxies: dict[str, InstrumentProxy] = {}
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[Any]:
        return iter((self.station, self.topology, self.clock))

    def _replace(self, **changes: Any) -> AgentBundle:
        """A view with some fields changed (``clock``), sharing the agents and proxies."""
        other = object.__new__(AgentBundle)
        other.__dict__.update(self.__dict__)
        other.__dict__.update(changes)
        other.station = AgentStation(other)
        return other

    @property
    def sites(self) -> dict[str, Site]:
        return self.transport.sites

    def instrument(self, name: str) -> InstrumentProxy:
        with self._lock:
            if not self._proxies:
                for site, descriptions in self.transport.describe().items():
                    for inst, desc in descriptions.items():
                        self._proxies[inst] = InstrumentProxy(self._links[site], desc)
        try:
            return self._proxies[name]
        except KeyError:
            raise KeyError(f"instrument {name!r} is on no site (instruments: "
                           f"{', '.join(self._site_of)})") from None

    def node(self, name: str) -> dict[str, Any]:
        spec = self.topology.nodes[name]
        return {role: self.instrument(getattr(spec, role)) for role in NODE_ROLES}

    def herald(self, link: str) -> Any:
        return self.instrument(self.topology.heralds[self.topology.links[link].herald].qnu)

    @contextmanager
    def recovery_listener(self, listener: Listener) -> Iterator[None]:
        """Hand ``listener`` every event the agents report while inside the block."""
        self._listeners.append(listener)
        try:
            yield
        finally:
            self._listeners.remove(listener)

    def safe_state(self) -> dict[str, str]:
        """Every site's emitters and heaters safe (all agents at once), read back by
        instrument."""
        return {inst: state for states in self.transport.safe_state().values()
                for inst, state in states.items()}

    def status(self) -> dict[str, dict[str, Any]]:
        return self.transport.status()

    def watchdogs(self) -> dict[str, Any]:
        """``node -> its site's watchdog``, where the coordinator can reach them (agents in
        this process); empty on Ray, where each actor's watchdog guards its own calls."""
        return self.transport.watchdogs()

    def deliver_events(self) -> None:
        """Hand the listeners the events the agents hold that no reply has carried yet."""
        for event in self.transport.take_events():
            for listener in list(self._listeners):
                listener(event)

    @contextmanager
    def guarded(self) -> Iterator[AgentBundle]:
        """The bundle a guarded sequence runs on: its waits go through the watchdogs of the
        sites it works on (``safety.working_on``; every site's otherwise), which are its safe
        points (a pending stop, suspend and resume); each agent's watchdog also polls inside
        its calls, as it always does. The agents' pending events reach the listeners at the
        end."""
        from qnetlab.sequences.safety import SiteGuardedClock

        dogs = self.watchdogs()
        try:
            yield self._replace(clock=SiteGuardedClock(dogs, self.clock)) if dogs else self
        finally:
            self.deliver_events()

    def close(self) -> None:
        self.transport.close()
