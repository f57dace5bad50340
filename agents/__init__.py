"""One agent per site: the only owner of a site's instruments, in this process or on Ray.

``bundle = load_agents("sim_link")`` brings every site up in this process (nothing to start;
what ``qnetlab`` and ``qnetlab serve`` do by default);
``load_agents(path, cluster="auto")`` runs one Ray actor per site (``qnetlab-site-<name>``) on
the machine that declares the resource ``site:<name>``. Either way the result is an
:class:`AgentBundle`, which the calibrations and entanglement sequences take as they take a
``StationBundle``; :func:`calibrate_resuming` calibrates on it and resumes after an agent
restart. Layer: between operations (the CLI) and sequences; sequences never import it.
"""

from __future__ import annotations

import os
from typing import Any

from qnetlab.stations import read_topology, station_file

from .inprocess import InProcessAgents
from .proxy import AgentBundle, InstrumentProxy, ProxyParameter
from .resume import calibrate_resuming
from .site import Reply, SiteAgent, SiteRestarted
from .sites import Site, sites_of


def load_agents(station: str | os.PathLike[str], *, cluster: str | None = None,
                watchdog: bool = True, **ray_options: Any) -> AgentBundle:
    """A station's instruments behind one agent per site: in this process (``cluster``
    None), or as Ray actors on the cluster at ``cluster`` (``"auto"`` or an address; see
    :mod:`qnetlab.agents.ray_agents`)."""
    path = station_file(station)
    topology = read_topology(path)
    if cluster is not None:
        from .ray_agents import ray_bundle  # only a cluster brings Ray in

        return ray_bundle(path, topology, cluster, watchdog=watchdog, **ray_options)
    transport = InProcessAgents(path, watchdog=watchdog)
    clock = next(iter(transport.agents.values())).bundle.clock
    return AgentBundle(transport, topology, clock, path)


def unowned_instruments(station: str | os.PathLike[str]) -> list[str]:
    """Instruments of the station file that no site owns (e.g. a data center's optical
    switch, which no node or heralding station names): agents cannot reach them yet."""
    import yaml

    path = station_file(station)
    owned = {i for site in sites_of(read_topology(path)).values() for i in site.instruments}
    specs = (yaml.safe_load(path.read_text()) or {}).get("instruments") or {}
    return [n for n, spec in specs.items() if n not in owned and not (
        isinstance(spec, dict) and str(spec.get("type", "")).endswith(".NetworkTopology"))]


def load_calibrated_agents(station: str | os.PathLike[str],
                           data_dir: str | os.PathLike[str] | None = None, *,
                           cluster: str | None = None) -> tuple[AgentBundle, Any]:
    """(agents, calibration store): :func:`load_agents` with the stored calibration put on
    the instruments (as ``load_calibrated`` does for a plain station). The agents are closed
    again if that fails."""
    from qnetlab.sequences.calibration import CalibrationStore, apply_calibration

    bundle = load_agents(station, cluster=cluster)
    try:
        store = CalibrationStore(data_dir)
        apply_calibration(bundle, store)
    except BaseException:
        bundle.close()
        raise
    return bundle, store


__all__ = [
    "AgentBundle",
    "InProcessAgents",
    "InstrumentProxy",
    "ProxyParameter",
    "Reply",
    "Site",
    "SiteAgent",
    "SiteRestarted",
    "calibrate_resuming",
    "load_agents",
    "load_calibrated_agents",
    "sites_of",
    "unowned_instruments",
]
