"""A network described once (nodes, heralding stations, links with their fiber, extra
instruments) and the builders of the generated kinds: ``chain:N``, ``star:N``, ``twosite:N``.

The lab file and the station file of a network are both rendered from one :class:`Network`
(``qnetlab.topologies.render``), so they cannot disagree. Each node gets the instruments of
today's bundled labs (:data:`NODE_INSTRUMENTS`: QNU, pump laser N7776C, AOM gate 33522B,
Lake Shore 372, Oxford Triton) and each heralding station its QNU; the settings of each
instrument kind (driver, address form, x-serve, station limits) are in :data:`KINDS`, one entry
per kind. A new kind of network (a data center with an optical switch) is a builder that returns
a :class:`Network`, registered in :data:`NETWORK_KINDS` with its spec arguments, its extra
instruments in :attr:`Network.extra` and their kinds added to :data:`KINDS`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .spec import MAX_NODES, MIN_NODES, NODES, Param, TopologySpec

DEFAULT_SEED = 13  # generated labs draw their hidden truth from this seed unless told otherwise
DEFAULT_PROFILE = "target-2030"
LOCAL_FIBER_KM = 2.0  # each node to its link's midpoint station, as in the bundled labs
STAR_FIBER_KM = 5.0  # each node to the hub of a star
TWOSITE_FIBER_KM = 25.0  # each site to the midpoint station of the long link

#: 26 names with distinct initials, so a link is named by its ends' initials (``ab``, ``bc``)
#: as in the bundled labs; networks of more than 26 nodes use ``n01`` .. ``n64``.
NAMES = ("alice", "bob", "carol", "dave", "eve", "frank", "grace", "heidi", "ivan", "judy",
         "ken", "leo", "mallory", "niaj", "olivia", "peggy", "quentin", "rupert", "sybil",
         "trent", "ursula", "victor", "walter", "xavier", "yvonne", "zoe")


@dataclass(frozen=True)
class Kind:
    """One instrument kind: its pyvisa-sim YAML, its driver and how a lab and station use it.

    ``address`` is a format with ``{host}`` (e.g. ``TCPIP0::{host}.lab::inst0::INSTR``)."""

    device: str  # the device key and instrument YAML (``{device}.yaml`` in sim_instruments)
    driver: str  # QCoDeS driver class of the station entry
    address: str
    serve: dict[str, int] = field(default_factory=dict)  # the lab file's x-serve
    timeout: float = 5.0
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)


KINDS: dict[str, Kind] = {
    "qnu": Kind("qnu", "qnetlab.drivers.QnetlabQNU", "TCPIP0::{host}.lab::inst0::INSTR",
                parameters={
                    "transducer.measure_time": {"initial_value": 1.0},
                    "qubit.alpha": {"initial_value": 0.05, "limits": [0.0, 0.3]},
                    "engine.attempt_rate": {"initial_value": 50000.0,
                                            "limits": [1000.0, 1000000.0]}}),
    "pump": Kind("pump_laser", "qnetlab.drivers.QnetlabPumpLaser",
                 "TCPIP0::{host}.lab::inst0::INSTR", serve={"port": 5025},
                 parameters={"output": {"initial_value": "off"},
                             "power": {"limits": [-10.0, 8.0]},
                             "power_mw": {"limits": [0.1, 6.3]}}),
    "aom": Kind("awg_33522b", "qnetlab.drivers.QnetlabAomGate",
                "TCPIP0::{host}.lab::5025::SOCKET", serve={"port": 5025},
                parameters={"gate_mode": {"initial_value": "cw"},
                            "ch1.pulse_width": {"limits": [2.0e-08, 1.0e-05]}}),
    "fridge": Kind("lakeshore372", "qnetlab.drivers.QnetlabLakeshore372",
                   "TCPIP0::{host}.lab::7777::SOCKET", serve={"port": 7777},
                   parameters={"sample_heater.setpoint": {"limits": [0.0, 0.1]}}),
    "gas": Kind("triton", "qnetlab.drivers.QnetlabTriton", "TCPIP0::{host}.lab::33576::SOCKET",
                serve={"port": 33576, "max_clients": 1}, timeout=20.0,
                parameters={"interlock_max_temperature": {"limits": [0.02, 0.05]}}),
    "switch": Kind("optical_switch", "qnetlab.drivers.QnetlabOpticalSwitch",
                   "TCPIP0::{host}.lab::3082::SOCKET", serve={"port": 3082}),
    "herald": Kind("qnu", "qnetlab.drivers.QnetlabQNU", "TCPIP0::{host}.lab::inst0::INSTR",
                   parameters={"engine.herald_window": {"initial_value": 200000.0,
                                                        "limits": [1000.0, 2000000.0]}}),
}

#: a node's instruments: (topology role, kind, prefix of the instrument name and host name)
NODE_INSTRUMENTS = (("qnu", "qnu", "qnu"), ("pump", "pump", "pump"), ("aom", "aom", "aom"),
                    ("fridge", "fridge", "fridge"), ("gas", "gas", "triton"))


@dataclass(frozen=True)
class Instrument:
    """One instrument of a network: station name, kind (:data:`KINDS`), lab resource, x-bind."""

    name: str
    kind: str
    resource: str
    bind: dict[str, str]
    #: driver arguments beyond the visalib (the station file's ``init:``), e.g. a switch's wiring
    init: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LinkDesc:
    """A link: its two nodes, the heralding station between them, each node's fiber to it."""

    name: str
    nodes: tuple[str, str]
    herald: str
    fiber_km: tuple[float, float]


def identifier(name: str) -> str:
    """``name`` as part of a QCoDeS instrument name (identifiers only): ``n01-n02`` -> ``n01_n02``."""
    return name.replace("-", "_")


def instrument(kind: str, prefix: str, owner: str, bind: dict[str, str]) -> Instrument:
    """The instrument ``{prefix}_{owner}`` of ``kind`` at host ``{prefix}-{owner}``."""
    return Instrument(f"{prefix}_{identifier(owner)}", kind,
                      KINDS[kind].address.format(host=f"{prefix}-{owner}"), bind)


@dataclass(frozen=True)
class Network:
    """A whole network, from which its lab file and station file are rendered.

    ``sites`` groups nodes and heralds by location (documentation and tools; the physics uses
    only the fibers). ``extra`` holds instruments beyond nodes and heralds (e.g. a switch)."""

    name: str
    spec: str
    title: str
    nodes: tuple[str, ...]
    heralds: tuple[str, ...]
    links: tuple[LinkDesc, ...]
    seed: int = DEFAULT_SEED
    profile: str = DEFAULT_PROFILE
    sites: dict[str, tuple[str, ...]] = field(default_factory=dict)
    extra: tuple[Instrument, ...] = ()
    switches: dict[str, dict[str, Any]] = field(default_factory=dict)  # x-lab: switches

    def node_instruments(self, node: str) -> dict[str, Instrument]:
        """A node's instruments by topology role (qnu, pump, aom, fridge, gas)."""
        return {role: instrument(kind, prefix, node, {"node": node})
                for role, kind, prefix in NODE_INSTRUMENTS}

    def herald_instrument(self, herald: str) -> Instrument:
        return instrument("herald", "herald", herald, {"station": herald})

    def instruments(self) -> list[Instrument]:
        """Every instrument in file order: each node's five, the heralds, then the extras."""
        out = [i for n in self.nodes for i in self.node_instruments(n).values()]
        return out + [self.herald_instrument(h) for h in self.heralds] + list(self.extra)

    def topology(self) -> dict[str, Any]:
        """The station file's ``NetworkTopology`` init: nodes by role, heralds, links."""
        return {
            "nodes": {n: {r: i.name for r, i in self.node_instruments(n).items()}
                      for n in self.nodes},
            "heralds": {h: {"qnu": self.herald_instrument(h).name} for h in self.heralds},
            "links": {lk.name: {"nodes": list(lk.nodes), "herald": lk.herald,
                                "fiber_km": list(lk.fiber_km)} for lk in self.links},
        }

    def x_lab(self) -> dict[str, Any]:
        """The lab file's ``x-lab``: the physical world (nodes, stations, links, fiber, seed)."""
        lab: dict[str, Any] = {"name": self.name, "spec": self.spec, "profile": self.profile,
                               "seed": self.seed,
                               "nodes": list(self.nodes), "stations": list(self.heralds),
                               "links": {lk.name: {"nodes": list(lk.nodes), "station": lk.herald,
                                                   "fiber_km": list(lk.fiber_km)}
                                         for lk in self.links}}
        if self.sites:
            lab["sites"] = {s: list(members) for s, members in self.sites.items()}
        if self.switches:
            lab["switches"] = {n: dict(spec) for n, spec in self.switches.items()}
        return lab


# --- the generated kinds -------------------------------------------------------------------
def node_names(n: int) -> tuple[str, ...]:
    """``alice, bob, ...`` up to 26 nodes, else ``n01 .. nNN`` (zero-padded, sortable)."""
    if n <= len(NAMES):
        return NAMES[:n]
    return tuple(f"n{i:02d}" for i in range(1, n + 1))


def link_name(a: str, b: str) -> str:
    """``ab`` for alice-bob (the bundled labs' names), ``n01-n02`` for numbered nodes."""
    return a[0] + b[0] if a in NAMES and b in NAMES else f"{a}-{b}"


def _link(a: str, b: str, km: float) -> LinkDesc:
    name = link_name(a, b)
    return LinkDesc(name, (a, b), name, (km, km))


def _network(spec: TopologySpec, title: str, nodes: tuple[str, ...], links: list[LinkDesc],
             seed: int | None, sites: dict[str, tuple[str, ...]] | None = None) -> Network:
    return Network(name=f"sim_{spec.kind}{spec.n}", spec=spec.text, title=title, nodes=nodes,
                   heralds=tuple(lk.herald for lk in links), links=tuple(links),
                   seed=DEFAULT_SEED if seed is None else seed, sites=sites or {})


def chain(spec: TopologySpec, seed: int | None = None) -> Network:
    """N nodes in a line; each neighbouring pair has a heralding station at its midpoint,
    ``LOCAL_FIBER_KM`` from each (``chain:3`` is the bundled chain, ``chain:2`` the link)."""
    nodes = node_names(spec.n)
    links = [_link(a, b, LOCAL_FIBER_KM) for a, b in itertools.pairwise(nodes)]
    return _network(spec, f"{spec.n} nodes in a chain, a heralding station halfway along each "
                    f"link, {LOCAL_FIBER_KM:g} km of fiber each side", nodes, links, seed)


def star(spec: TopologySpec, seed: int | None = None) -> Network:
    """N nodes around a hub: every node has fiber (``STAR_FIBER_KM``) to the hub, where all
    heralding stations sit; each node is linked to its two neighbours around the star (a ring
    of links through the hub: every QNU uses both its link channels, any two nodes have two
    disjoint routes, and every herald is in one room). ``star:2`` is one link."""
    nodes = node_names(spec.n)
    pairs = list(itertools.pairwise(nodes))
    if spec.n > 2:
        pairs.append((nodes[-1], nodes[0]))
    links = [_link(a, b, STAR_FIBER_KM) for a, b in pairs]
    return _network(spec, f"{spec.n} nodes around a hub holding every heralding station, "
                    f"{STAR_FIBER_KM:g} km of fiber from each node; each node linked to its two "
                    "neighbours around the star", nodes, links, seed, {"hub": tuple(
                        lk.herald for lk in links)})


def twosite(spec: TopologySpec, seed: int | None = None) -> Network:
    """Two sites far apart: the first half of the nodes at site A, the rest at site B, each
    site a chain of local links (``LOCAL_FIBER_KM`` each side); one long link joins the last
    node of A to the first of B through a heralding station ``TWOSITE_FIBER_KM`` from each."""
    nodes = node_names(spec.n)
    half = (spec.n + 1) // 2
    site_a, site_b = nodes[:half], nodes[half:]
    local = [_link(a, b, LOCAL_FIBER_KM) for site in (site_a, site_b)
             for a, b in itertools.pairwise(site)]
    long = _link(site_a[-1], site_b[0], TWOSITE_FIBER_KM)
    links = [*local[:half - 1], long, *local[half - 1:]]
    sites = {"A": site_a + tuple(lk.herald for lk in local[:half - 1]),
             "B": site_b + tuple(lk.herald for lk in local[half - 1:]),
             "midpoint": (long.herald,)}
    return _network(spec, f"two sites {2 * TWOSITE_FIBER_KM:g} km apart: {len(site_a)} nodes at "
                    f"A, {len(site_b)} at B, local links of {2 * LOCAL_FIBER_KM:g} km, one long "
                    f"link of {TWOSITE_FIBER_KM:g} km each way", nodes, links, seed, sites)


#: a data center: K QPUs 2..64, M heralding stations 1..32
DC_QPUS = Param("K", MIN_NODES, MAX_NODES)
DC_STATIONS = Param("M", 1, 32)
DC_FIBER_KM = 0.05  # each QNU and each station input to the switch, inside one building
DC_MIN_SIZE = 8  # the smallest N x N switch: 16 ports


def datacenter(spec: TopologySpec, seed: int | None = None) -> Network:
    """K QPU nodes and M heralding stations around one optical switch (a Polatis, ``oxc``):
    node i's QNU fiber on ingress port i, station j's two inputs on egress ports N+2j-1 and
    N+2j of an N x N switch, N = max(K, 2M, 8). No fixed links: two nodes meet at a station
    only while the switch patches both there (``qnetlab.datacenter`` keeps it patched)."""
    k, m = spec.args
    nodes = node_names(k)
    heralds = tuple(f"h{j + 1}" for j in range(m))
    n = max(k, 2 * m, DC_MIN_SIZE)
    switch = {"ports": 2 * n, "loss_db": 1.0, "crosstalk_db": -50.0, "reconfig_s": 0.025,
              "fiber_km": DC_FIBER_KM,
              "nodes": {node: i + 1 for i, node in enumerate(nodes)},
              "stations": {h: [n + 2 * j + 1, n + 2 * j + 2] for j, h in enumerate(heralds)}}
    wiring = {**switch["nodes"], **switch["stations"]}  # as cabled, for the calibration graph
    oxc = Instrument("oxc", "switch", KINDS["switch"].address.format(host="oxc"),
                     {"switch": "oxc"}, init={"wiring": wiring})
    return Network(name=f"sim_dc{k}_{m}", spec=spec.text,
                   title=f"a data center: {k} QPUs and {m} heralding stations around one "
                   f"{2 * n}-port optical switch", nodes=nodes, heralds=heralds, links=(),
                   seed=DEFAULT_SEED if seed is None else seed, extra=(oxc,),
                   switches={"oxc": switch})


Builder = Callable[[TopologySpec, "int | None"], Network]


@dataclass(frozen=True)
class NetworkKind:
    """A kind of generated network: its builder, its spec arguments, the arguments of the bare
    kind (``twosite`` alone) if it may stand alone."""

    build: Builder
    params: tuple[Param, ...] = (NODES,)
    default: tuple[int, ...] | None = None


#: every generated kind, by the name a spec uses (a new kind is one more entry)
NETWORK_KINDS: dict[str, NetworkKind] = {
    "chain": NetworkKind(chain),
    "star": NetworkKind(star),
    "twosite": NetworkKind(twosite, default=(4,)),
    "dc": NetworkKind(datacenter, params=(DC_QPUS, DC_STATIONS)),
}
