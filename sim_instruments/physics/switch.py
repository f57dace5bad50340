"""An optical circuit switch between the QNUs and the heralding stations (a Polatis-like
beam-steering matrix): which ports are patched, how much light a patch passes, when it is dark.

An ``N x N`` switch has ingress ports ``1..N`` and egress ports ``N+1..2N`` (the numbering of
Polatis ``:OXC:SWITch:SIZE?`` = ``N,N``). Each QNU's fiber enters on one ingress port; each
heralding station's two beam-splitter inputs leave on two egress ports. A node reaches a
station's input only while that patch is made; a patch passes ``10^(-loss/10)`` of the light
(about 1 dB; each port's share of it is hidden truth drawn from the lab seed) less the share
lost to crosstalk from every other lit patch; after a patch is (re)made its path carries no
light for the reconfiguration time (piezo beam steering settling). A stuck port keeps its
mirror where it is: the patch table says what was asked, but no light passes a patch through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: typical figures (network-and-service notes section 2; the reconfiguration time is [M])
LOSS_DB = 1.0
CROSSTALK_DB = -50.0
RECONFIG_S = 0.025
SIZES = (8, 192)  # N of an N x N switch: 16 to 384 ports in all


@dataclass
class SwitchFabric:
    """The optical switch of a lab: patches, per-port loss, dark times, stuck ports."""

    name: str
    size: int
    seed: int
    node_ports: dict[str, int] = field(default_factory=dict)
    station_ports: dict[str, tuple[int, int]] = field(default_factory=dict)
    loss_db: float = LOSS_DB
    crosstalk_db: float = CROSSTALK_DB
    reconfig_s: float = RECONFIG_S

    def __post_init__(self) -> None:
        lo, hi = SIZES
        if not lo <= self.size <= hi:
            raise ValueError(f"switch {self.name}: size={self.size} not in {lo}..{hi} "
                             f"(a {2 * lo} to {2 * hi} port switch)")
        rng = np.random.default_rng([self.seed, *(ord(c) for c in self.name), 7])
        # each port's share of the insertion loss (hidden truth), half a patch's loss on average
        self.port_loss_db = np.abs(rng.normal(self.loss_db / 2, 0.08 * self.loss_db,
                                              size=2 * self.size + 1))
        self.patches: dict[int, int] = {}  # ingress -> egress
        self.dark_until: dict[int, float] = {}  # ingress port -> lab time its path lights up
        self.stuck: set[int] = set()
        self.reconfigurations = 0
        self._station_of = {p: s for s, ports in self.station_ports.items() for p in ports}
        for node, port in self.node_ports.items():
            self.check_ingress(port, f"node {node}")
        for station, ports in self.station_ports.items():
            for port in ports:
                self.check_egress(port, f"station {station}")

    @classmethod
    def from_config(cls, name: str, spec: dict[str, Any], seed: int) -> SwitchFabric:
        """A switch from a lab file's ``x-lab: switches: {name: {...}}`` entry."""
        return cls(
            name=name, size=int(spec["ports"]) // 2, seed=seed,
            node_ports={str(k): int(v) for k, v in (spec.get("nodes") or {}).items()},
            station_ports={str(k): (int(v[0]), int(v[1]))
                           for k, v in (spec.get("stations") or {}).items()},
            loss_db=float(spec.get("loss_db", LOSS_DB)),
            crosstalk_db=float(spec.get("crosstalk_db", CROSSTALK_DB)),
            reconfig_s=float(spec.get("reconfig_s", RECONFIG_S)),
        )

    # --- port numbering ----------------------------------------------------------------------
    def check_ingress(self, port: int, what: str = "port") -> None:
        if not 1 <= port <= self.size:
            raise ValueError(f"{what}: ingress port {port} not in 1..{self.size}")

    def check_egress(self, port: int, what: str = "port") -> None:
        if not self.size < port <= 2 * self.size:
            raise ValueError(f"{what}: egress port {port} not in {self.size + 1}..{2 * self.size}")

    def egress_of(self, ingress: int) -> int | None:
        return self.patches.get(ingress)

    def ingress_of(self, egress: int) -> int | None:
        for i, e in self.patches.items():
            if e == egress:
                return i
        return None

    # --- patching (the model has already checked the one-to-one rule) -------------------------
    def connect(self, pairs: list[tuple[int, int]], t: float) -> None:
        """Make each ``(ingress, egress)`` patch; their paths are dark for the reconfiguration time."""
        for i, e in pairs:
            self.patches[i] = e
            self.dark_until[i] = t + self.reconfig_s
        self.reconfigurations += 1

    def disconnect(self, ingress: list[int]) -> None:
        for i in ingress:
            self.patches.pop(i, None)
            self.dark_until.pop(i, None)
        self.reconfigurations += 1

    def stick(self, port: int) -> None:
        """Fault: the port's mirror no longer moves; no light passes a patch through it."""
        if not 1 <= port <= 2 * self.size:
            raise ValueError(f"stuck port {port} not in 1..{2 * self.size}")
        self.stuck.add(port)

    def release(self, port: int | None = None) -> None:
        if port is None:
            self.stuck.clear()
        else:
            self.stuck.discard(port)

    # --- light -------------------------------------------------------------------------------
    def patch_loss_db(self, ingress: int, egress: int) -> float:
        """Hidden true insertion loss of one patch (dB)."""
        return float(self.port_loss_db[ingress] + self.port_loss_db[egress])

    def patch_transmission(self, ingress: int, t: float) -> float:
        """Fraction of the light entering ``ingress`` that leaves on its patched egress now."""
        egress = self.patches.get(ingress)
        if egress is None or ingress in self.stuck or egress in self.stuck:
            return 0.0
        if self.dark_until.get(ingress, -math.inf) > t:
            return 0.0
        lit = len(self.patches) - 1
        crosstalk = min(1.0, lit * 10 ** (self.crosstalk_db / 10))
        return 10 ** (-self.patch_loss_db(ingress, egress) / 10) * (1.0 - crosstalk)

    def transmission(self, node: str, station: str, t: float) -> float:
        """Light of ``node``'s QNU reaching ``station`` through the switch (0 unless patched)."""
        port = self.node_ports.get(node)
        if port is None:
            return 0.0
        egress = self.patches.get(port)
        if egress is None or self._station_of.get(egress) != station:
            return 0.0
        return self.patch_transmission(port, t)

    def station_input(self, node: str) -> tuple[str, int] | None:
        """(station, input 0 or 1) that ``node`` is patched to, if any."""
        egress = self.patches.get(self.node_ports.get(node, -1))
        station = self._station_of.get(egress) if egress is not None else None
        if station is None:
            return None
        return station, self.station_ports[station].index(egress)

    def truth(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "patch_loss_db": {f"{i}-{e}": self.patch_loss_db(i, e)
                              for i, e in sorted(self.patches.items())},
            "stuck": sorted(self.stuck),
            "reconfigurations": self.reconfigurations,
        }
