"""Bring a lab up from a station file: the QCoDeS station, its topology and the lab's clock."""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from qcodes.instrument import Instrument
from qcodes.station import Station

from qnetlab import topologies
from qnetlab.clock import Clock, ServedClock, WallClock

from .lock import InstrumentLock, acquire, hardware_addresses
from .topology import NODE_ROLES, Topology, TopologyError, parse_topology

TOPOLOGY_TYPE = "qnetlab.stations.topology.NetworkTopology"
SERVED_CLOCK_TYPE = "qnetlab.clock.ServedClock"
FIBER_TOLERANCE_KM = 1e-3


class LabStation(Station):
    """A QCoDeS ``Station`` that parses its station file once, not before every instrument.

    QCoDeS re-reads, re-parses (ruamel) and re-validates (jsonschema) its config files before
    each ``load_instrument``, which makes loading quadratic in the number of instruments: a
    64-node station (383 instruments) spent minutes parsing. Here the files are parsed again
    only when one of them changed (path, size and modification time)."""

    def load_config_files(self, *filenames: str) -> None:
        key = tuple(_file_key(f) for f in filenames)
        if filenames and key == getattr(self, "_qnetlab_config_key", None):
            return
        super().load_config_files(*filenames)
        self._qnetlab_config_key = key


def _file_key(filename: str) -> tuple[str, int, int]:
    try:
        st = os.stat(filename)
    except OSError:
        return (filename, -1, -1)
    return (filename, st.st_size, st.st_mtime_ns)


class StationBundle(NamedTuple):
    """What :func:`load` returns; unpack as ``station, topology, clock = load(...)``."""

    station: Station
    topology: Topology
    clock: Clock

    def instrument(self, name: str) -> Any:
        return self.station.components[name]

    def node(self, name: str) -> dict[str, Any]:
        """The instruments of a node by role: ``{"qnu": ..., "pump": ..., "aom": ..., "fridge": ...,
        "gas": ...}`` (every role of :data:`~qnetlab.stations.topology.NODE_ROLES`)."""
        spec = self.topology.nodes[name]
        return {role: self.instrument(getattr(spec, role)) for role in NODE_ROLES}

    def herald(self, link: str) -> Any:
        """The QNU of a link's heralding station (its herald)."""
        return self.instrument(self.topology.heralds[self.topology.links[link].herald].qnu)

    @contextmanager
    def recovery_listener(self, listener: Callable[[dict[str, Any]], None]) -> Iterator[None]:
        """Hand ``listener`` every recovery event of this station's instruments while inside
        the block (each instrument's ``on_recovery`` hook; other stations are not touched)."""
        hooked = [c for c in self.station.components.values()
                  if isinstance(getattr(c, "on_recovery", None), list)]
        for inst in hooked:
            inst.on_recovery.append(listener)
        try:
            yield
        finally:
            for inst in hooked:
                inst.on_recovery.remove(listener)

    def close(self) -> None:
        """Close every instrument of the station, then let other processes have them."""
        try:
            for name in list(self.station.components):
                component = self.station.components[name]
                if isinstance(component, Instrument):
                    self.station.close_and_remove_instrument(name)
        finally:
            lock: InstrumentLock | None = getattr(self.station, "qnetlab_lock", None)
            if lock is not None:
                lock.release()


def available() -> list[str]:
    """Names of the bundled station files."""
    return sorted(p.name.removesuffix(".station.yaml")
                  for p in files("qnetlab.stations").iterdir()
                  if p.name.endswith(".station.yaml"))


def station_file(name_or_path: str | os.PathLike[str]) -> Path:
    """A path as given, a bundled station by name (``"sim_link"``), or a generated topology
    (``"chain:16"``, ``"star:8"``, ``"twosite"``: its station file generated into the cache
    directory, :mod:`qnetlab.topologies`; a bad spec is a one-line ``SpecError``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path.resolve()
    bundled = files("qnetlab.stations") / f"{name_or_path}.station.yaml"
    if bundled.is_file():
        return Path(str(bundled))
    if topologies.is_spec(str(name_or_path)):
        return topologies.station_file(str(name_or_path))
    raise FileNotFoundError(f"station {str(name_or_path)!r}: no such file, and not a bundled "
                            f"station (bundled: {', '.join(available())}) or a generated "
                            f"topology ({topologies.usage()})")


#: the C parser when PyYAML has it (a 64-node station file is ~200 kB: 0.3 s in pure Python)
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _instruments(path: Path) -> dict[str, Any]:
    """The ``instruments:`` mapping of a station file (parsed once per content of the file)."""
    return copy.deepcopy(_parsed_instruments(path.name, path.read_text()))


@functools.lru_cache(maxsize=16)
def _parsed_instruments(name: str, text: str) -> dict[str, Any]:
    try:
        raw = yaml.load(text, Loader=_YAML_LOADER)  # a safe loader (C when available)
    except yaml.YAMLError as exc:
        raise TopologyError(f"{name}: not valid YAML: {exc}") from None
    instruments = (raw or {}).get("instruments") if isinstance(raw, dict) else None
    if not isinstance(instruments, dict) or not instruments:
        raise TopologyError(f"{name}: needs an 'instruments:' mapping")
    return instruments


def lock_instruments(path: Path) -> InstrumentLock:
    """Take the station's hardware instruments for this process (see :mod:`.lock`);
    refused with :class:`~qnetlab.stations.lock.StationInUse` naming the holder."""
    return acquire(hardware_addresses(_instruments(path)), path.name)


def read_topology(path: Path) -> Topology:
    """Validate a station file's topology before any instrument is touched."""
    instruments = _instruments(path)
    entries = [n for n, spec in instruments.items()
               if isinstance(spec, dict) and spec.get("type") == TOPOLOGY_TYPE]
    if len(entries) != 1:
        raise TopologyError(f"{path.name}: needs exactly one instrument of type {TOPOLOGY_TYPE} "
                            f"(found {entries or 'none'})")
    (entry,) = entries
    names = set(instruments) - {entry}
    return parse_topology(instruments[entry].get("init") or {}, names,
                          source=f"{path.name}: instruments.{entry}.init")


def _shared_clock(station: Station, path: Path) -> Clock:
    clocks = {id(c.clock): c.clock for c in station.components.values() if hasattr(c, "clock")}
    if all(isinstance(c, WallClock) for c in clocks.values()):
        return WallClock()  # hardware: each driver's real time is the same time
    if len(clocks) > 1:
        raise TopologyError(f"{path.name}: instruments run on different clocks (mixed VISA "
                            "libraries); a station is one lab with one clock")
    return next(iter(clocks.values()), WallClock())


def served_clock(path: Path) -> tuple[str | None, Clock | None]:
    """(entry name, clock) of a station file's ``type: qnetlab.clock.ServedClock`` entry (the
    station of a lab served by ``qnetlab sim serve``), or (None, None): the entry is not an
    instrument, it makes the station's clock follow the served lab's time."""
    entries = {n: s for n, s in _instruments(path).items()
               if isinstance(s, dict) and s.get("type") == SERVED_CLOCK_TYPE}
    if not entries:
        return None, None
    if len(entries) > 1:
        raise TopologyError(f"{path.name}: more than one {SERVED_CLOCK_TYPE} entry "
                            f"({sorted(entries)}); a station is one lab with one clock")
    ((name, spec),) = entries.items()
    init = spec.get("init") or {}
    try:
        return name, ServedClock(str(init["host"]), init["port"])
    except (KeyError, ValueError) as exc:
        raise TopologyError(f"{path.name}: instruments.{name}.init: needs host and port "
                            f"({exc})") from None


def _check_fibers(bundle: StationBundle, path: Path) -> None:
    """The QNUs report their fiber to the station: it must match the declared topology."""
    for link in bundle.topology.links.values():
        for node in link.nodes:
            peer = link.nodes[1 - link.nodes.index(node)]
            qnu = bundle.node(node)["qnu"]
            reported = qnu.link_to(peer).fiber_length()
            if abs(reported - link.fiber_of(node)) > FIBER_TOLERANCE_KM:
                raise TopologyError(
                    f"{path.name}: links.{link.name}.fiber_km: {node} reports "
                    f"{reported:g} km to the station, the file declares {link.fiber_of(node):g} km")


def load(name_or_path: str | os.PathLike[str], *, check_fibers: bool = True,
         after_load: Callable[[StationBundle], Any] | None = None) -> StationBundle:
    """Bring a station up: every instrument loaded, topology validated, one lab clock.

    The clock is the lab's virtual clock for a simulated lab and real time on hardware; every
    driver of the station waits on it. ``after_load(bundle)`` runs last (the calibration layer
    uses it to put the stored calibration on the instruments)."""
    path = station_file(name_or_path)
    topology = read_topology(path)
    clock_entry, served = served_clock(path)
    lock = lock_instruments(path)
    try:
        station = LabStation(config_file=str(path))
    except BaseException:
        lock.release()
        raise
    station.qnetlab_lock = lock  # type: ignore[attr-defined]
    try:
        names = [n for n in _instruments(path) if n != clock_entry]
        station.load_all_instruments(only_names=names)
        clock = served or _shared_clock(station, path)
        for component in station.components.values():
            if hasattr(component, "clock"):
                component.clock = clock
        bundle = StationBundle(station, topology, clock)
        if check_fibers:
            _check_fibers(bundle, path)
        if after_load is not None:
            after_load(bundle)
    except BaseException:
        for component in list(station.components.values()):
            if isinstance(component, Instrument):
                component.close()
        lock.release()
        raise
    return bundle
