"""Station files for simulated and real labs, and the one call that brings a lab up.

``station, topology, clock = qnetlab.stations.load("sim_link")``
"""

from .loader import (
    StationBundle,
    available,
    load,
    lock_instruments,
    read_topology,
    station_file,
)
from .lock import StationInUse
from .topology import NetworkTopology, Topology, TopologyError, parse_topology

__all__ = [
    "NetworkTopology",
    "StationBundle",
    "StationInUse",
    "Topology",
    "TopologyError",
    "available",
    "load",
    "lock_instruments",
    "parse_topology",
    "read_topology",
    "station_file",
]
