"""The network topology of a station: which instruments form each node, the links, the heralding
stations (``heralds``: the midpoint QNUs whose detectors herald entanglement) and the fiber.

Naming: "station" means the QCoDeS station (and this package); a heralding station is a
*herald* (:class:`HeraldingStation`, ``Topology.heralds``, the ``heralds:`` key, the calibration
scope ``"herald"``). Declared once per station file as a ``NetworkTopology`` entry, so it is
schema-valid QCoDeS YAML, lands in every snapshot, and reads the same for hardware and
simulation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qcodes.instrument import Instrument

NODE_ROLES = ("qnu", "pump", "aom", "fridge", "gas")
HERALD_ROLES = ("qnu",)


class TopologyError(ValueError):
    """A topology entry is wrong; the message names the file and the entry."""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    qnu: str
    pump: str
    aom: str  # the pump's AOM gate (Keysight 33522B)
    fridge: str  # the Lake Shore 372: thermometry, heaters
    gas: str  # the Oxford Triton: gas handling, pulse tube, pressures, interlock
    site: str | None = None  # the control computer's site (default: the node's own name)


@dataclass(frozen=True)
class HeraldingStation:
    """A heralding station of the topology: the QNU whose detectors herald a link."""

    name: str
    qnu: str
    site: str | None = None  # the control computer's site (default: the station's own name)


@dataclass(frozen=True)
class LinkSpec:
    name: str
    nodes: tuple[str, str]
    herald: str
    fiber_km: tuple[float, float]

    def fiber_of(self, node: str) -> float:
        return self.fiber_km[self.nodes.index(node)]


@dataclass(frozen=True)
class Topology:
    """Nodes, heralding stations and links, checked against the station's instruments."""

    nodes: dict[str, NodeSpec]
    heralds: dict[str, HeraldingStation]
    links: dict[str, LinkSpec]

    def links_of(self, node: str) -> list[LinkSpec]:
        return [lk for lk in self.links.values() if node in lk.nodes]

    def instrument_names(self) -> set[str]:
        names = {getattr(n, r) for n in self.nodes.values() for r in NODE_ROLES}
        return names | {h.qnu for h in self.heralds.values()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodes": {n: {r: getattr(s, r) for r in NODE_ROLES} | _site(s)
                      for n, s in self.nodes.items()},
            "heralds": {n: {"qnu": h.qnu} | _site(h) for n, h in self.heralds.items()},
            "links": {n: {"nodes": list(lk.nodes), "herald": lk.herald,
                          "fiber_km": list(lk.fiber_km)} for n, lk in self.links.items()},
        }


def _site(spec: NodeSpec | HeraldingStation) -> dict[str, str]:
    """The optional ``site:`` key of a node or heralding station, as written."""
    return {} if spec.site is None else {"site": spec.site}


def _site_of(roles: Mapping[str, Any], entry: str, fail: Any) -> str | None:
    """The optional ``site:`` of a topology entry: a non-empty name, or None."""
    site = roles.get("site")
    if site is not None and (not isinstance(site, str) or not site.strip()):
        raise fail(f"{entry}.site", f"site={site!r}: must be a non-empty name")
    return site


def parse_topology(spec: Mapping[str, Any], instruments: set[str] | None = None,
                   source: str = "<topology>") -> Topology:
    """Validate a topology mapping; every error names ``source`` and the offending entry."""

    def fail(entry: str, message: str) -> TopologyError:
        return TopologyError(f"{source}: {entry}: {message}")

    def need_mapping(value: Any, entry: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise fail(entry, f"expected a mapping, got {type(value).__name__}")
        return value

    spec = need_mapping(spec, "network.init")
    unknown = set(spec) - {"nodes", "heralds", "links"}
    if unknown:
        raise fail("network.init", f"unknown keys {sorted(unknown)} (allowed: nodes, heralds, "
                   "links)")
    nodes: dict[str, NodeSpec] = {}
    for name, roles in need_mapping(spec.get("nodes", {}), "nodes").items():
        roles = need_mapping(roles, f"nodes.{name}")
        missing = [r for r in NODE_ROLES if r not in roles]
        if missing:
            raise fail(f"nodes.{name}", f"missing {missing} (a node needs {list(NODE_ROLES)})")
        extra = set(roles) - set(NODE_ROLES) - {"site"}
        if extra:
            raise fail(f"nodes.{name}", f"unknown roles {sorted(extra)}")
        nodes[name] = NodeSpec(name, **{r: str(roles[r]) for r in NODE_ROLES},
                               site=_site_of(roles, f"nodes.{name}", fail))
    if not nodes:
        raise fail("nodes", "a topology needs at least one node")
    heralds: dict[str, HeraldingStation] = {}
    for name, roles in need_mapping(spec.get("heralds", {}) or {}, "heralds").items():
        roles = need_mapping(roles, f"heralds.{name}")
        if set(roles) - {"site"} != set(HERALD_ROLES):
            raise fail(f"heralds.{name}", f"a heralding station has exactly a 'qnu' (and an "
                       f"optional 'site'), got {sorted(roles)}")
        heralds[name] = HeraldingStation(name, str(roles["qnu"]),
                                         site=_site_of(roles, f"heralds.{name}", fail))
    links: dict[str, LinkSpec] = {}
    for name, link in need_mapping(spec.get("links", {}) or {}, "links").items():
        link = need_mapping(link, f"links.{name}")
        ends = list(link.get("nodes", []))
        if len(ends) != 2 or len(set(ends)) != 2:
            raise fail(f"links.{name}.nodes", f"needs two different nodes, got {ends}")
        for end in ends:
            if end not in nodes:
                raise fail(f"links.{name}.nodes", f"{end!r} is not a declared node "
                           f"(declared: {sorted(nodes)})")
        herald = link.get("herald")
        if herald not in heralds:
            raise fail(f"links.{name}.herald", f"{herald!r} is not a declared heralding "
                       f"station (declared: {sorted(heralds)})")
        km = link.get("fiber_km")
        try:
            fiber = tuple(float(x) for x in km)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            fiber = ()
        if len(fiber) != 2 or min(fiber) < 0:
            raise fail(f"links.{name}.fiber_km", f"needs two lengths >= 0 km, got {km!r}")
        links[name] = LinkSpec(name, (ends[0], ends[1]), herald, fiber)  # type: ignore[arg-type]
    topology = Topology(nodes, heralds, links)
    if instruments is not None:
        for n, node in nodes.items():
            for role in NODE_ROLES:
                if getattr(node, role) not in instruments:
                    raise fail(f"nodes.{n}.{role}", f"no instrument {getattr(node, role)!r} in "
                               f"the station (instruments: {sorted(instruments)})")
        for h, spec_h in heralds.items():
            if spec_h.qnu not in instruments:
                raise fail(f"heralds.{h}.qnu", f"no instrument {spec_h.qnu!r} in the station")
    return topology


class NetworkTopology(Instrument):
    """The topology as a station component: validated at construction, in every snapshot."""

    def __init__(self, name: str, nodes: Mapping[str, Any], heralds: Mapping[str, Any]
                 | None = None, links: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        self.topology = parse_topology(
            {"nodes": nodes, "heralds": heralds or {}, "links": links or {}}, source=name)
        kwargs.setdefault("metadata", {})
        kwargs["metadata"] = {**kwargs["metadata"], "topology": self.topology.as_dict()}
        super().__init__(name, **kwargs)

    def get_idn(self) -> dict[str, str | None]:
        return {"vendor": "qnetlab", "model": "NetworkTopology", "serial": None,
                "firmware": None}
