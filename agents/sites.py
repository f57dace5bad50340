"""Which instruments belong to which site: the unit one control computer (one agent) owns.

By default each network node is a site (its QNU, pump laser, AOM gate, Lake Shore and Triton)
and each heralding station is a site (its QNU); a topology may group them with ``site:`` on
nodes and heralds. A site's name must be usable as a Ray resource (``site:<name>``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from qnetlab.stations import Topology, TopologyError
from qnetlab.stations.topology import NODE_ROLES

SITE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class Site:
    """A site: its name, the nodes and heralding stations it holds and their instruments."""

    name: str
    nodes: list[str] = field(default_factory=list)
    heralds: list[str] = field(default_factory=list)
    instruments: list[str] = field(default_factory=list)

    def sub_topology(self, topology: Topology) -> Topology:
        """The part of ``topology`` on this site (its nodes and heralds; links whose ends and
        herald are all here): what its watchdog and safe state act on."""
        links = {n: lk for n, lk in topology.links.items()
                 if set(lk.nodes) <= set(self.nodes) and lk.herald in self.heralds}
        return Topology({n: topology.nodes[n] for n in self.nodes},
                        {h: topology.heralds[h] for h in self.heralds}, links)


def sites_of(topology: Topology) -> dict[str, Site]:
    """The sites of a topology, in its order: ``site:`` where given, else one per node and
    one per heralding station (named after it)."""
    sites: dict[str, Site] = {}

    def site(name: str, entry: str) -> Site:
        if not SITE_NAME.match(name):
            raise TopologyError(f"{entry}: site={name!r}: a site name uses only letters, "
                                "digits, '_', '-' and '.'")
        return sites.setdefault(name, Site(name))

    for name, node in topology.nodes.items():
        s = site(node.site or name, f"nodes.{name}")
        s.nodes.append(name)
        s.instruments += [getattr(node, role) for role in NODE_ROLES]
    for name, herald in topology.heralds.items():
        s = site(herald.site or name, f"heralds.{name}")
        s.heralds.append(name)
        s.instruments.append(herald.qnu)
    return sites


def site_of_instrument(sites: dict[str, Site]) -> dict[str, str]:
    """``instrument name -> site name``."""
    return {inst: s.name for s in sites.values() for inst in s.instruments}
