"""Station files for simulated and real labs, and the one call that brings a lab up.

``station, topology, clock = qnetlab.stations.load("sim_link")``
"""

from .loader import StationBundle, available, load, read_topology, station_file
from .topology import NetworkTopology, Topology, TopologyError, parse_topology

__all__ = [
    "NetworkTopology",
    "StationBundle",
    "Topology",
    "TopologyError",
    "available",
    "load",
    "parse_topology",
    "read_topology",
    "station_file",
]
