"""Agents in this process (the embedded default): one :class:`SiteAgent` per site, called on
the caller's thread (so a calibration worker thread stays the lab clock's participant), each
instrument's exchanges locked by its driver. Nothing to start; Ray is never imported here."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from qnetlab.stations import read_topology

from .site import Reply, SiteAgent
from .sites import Site, sites_of


class InProcessAgents:
    """The transport of an :class:`AgentBundle` whose agents live in this process."""

    def __init__(self, path: Path, *, watchdog: bool = True) -> None:
        self.path = path
        self.sites: dict[str, Site] = sites_of(read_topology(path))
        self.agents: dict[str, SiteAgent] = {}
        try:
            for name in self.sites:
                self.agents[name] = SiteAgent(path, name, watchdog=watchdog)
        except BaseException:
            self.close()
            raise

    def call(self, site: str, parts: tuple[str, ...], attr: str, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Reply:
        return self.agents[site].call(parts, attr, args, kwargs)

    def describe(self) -> dict[str, dict[str, Any]]:
        return {s: a.describe() for s, a in self.agents.items()}

    def snapshots(self, names: Collection[str] | None = None) -> dict[str, Any]:
        """Snapshots of the instruments ``names`` (every one if None)."""
        return {n: snap for a in self.agents.values() for n, snap in a.snapshot(names).items()}

    def safe_state(self) -> dict[str, dict[str, str]]:
        return {s: a.safe_state() for s, a in self.agents.items()}

    def status(self) -> dict[str, dict[str, Any]]:
        return {s: a.status() for s, a in self.agents.items()}

    def watchdogs(self) -> dict[str, Any]:
        """``node -> watchdog`` of every site that runs one: in this process the coordinator's
        own waits can go through them (its safe points: stops, suspend and resume)."""
        return {node: agent.watchdog for agent in self.agents.values()
                if getattr(agent, "watchdog", None) is not None for node in agent.site.nodes}

    def take_events(self) -> list[dict[str, Any]]:
        """Every agent's events not yet handed over with a reply (e.g. of a watchdog poll
        made during one of the coordinator's waits)."""
        return [event for agent in self.agents.values() for event in agent.take_events()]

    def take_deaths(self) -> list[str]:
        """Sites whose agent died since the last call: none, in this process."""
        return []

    def wait_ready(self, site: str, timeout_s: float) -> dict[str, Any]:
        return self.agents[site].acknowledge()

    def close(self) -> None:
        for agent in list(self.agents.values()):
            agent.close()
        self.agents.clear()

