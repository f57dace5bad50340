"""The optical switch in the calibration graph: each node's path through it, patch by patch.

8. ``switch_patch_loss`` (patch ``<node>@<station>``): patch the node's QNU fiber (its ingress
   port) to each of the heralding station's two inputs (egress ports) in turn, wait until the
   mirrors have settled (``*OPC?``, lab time), and read both ends of the patch on the switch's
   port power monitors (``:MONitor:POWer?``, the Polatis OPM option); the loss is the ingress
   reading minus the egress reading, averaged over a few readings, in dB with its standard error.
   A patch that passes less than ``dead_db`` (a stuck port, a broken fiber) fails loudly, naming
   its ports: its descendants are blocked and ``qnetlab status`` shows it.

Which heralding stations are switched: those no fixed link of the topology reaches (a data
center, ``dc_small`` or ``dc:K,M``, declares no links: any two nodes meet at a station only while
the switch patches both there). Which ports: the switch driver's ``wiring`` (the station file's
``init: wiring:``, as cabled). Steps that patch hold the resource ``switch``, so the scheduler never
runs two reconfigurations at once (a reconfiguration darkens the paths it touches), and the node
and station whose path they darken. The node's patch is removed afterwards; other patches stay.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from qnetlab.stations import Topology

from .engine import (
    CalContext,
    Calibration,
    CalibrationFailed,
    Check,
    Outcome,
    Quantity,
    Update,
)

#: the separator of a patch target: ``alice@h1`` is alice's QNU patched to heralding station h1
PATCH_SEP = "@"
#: the resource every step that reconfigures the switch holds
SWITCH_RESOURCE = "switch"


def switched_heralds(topology: Topology) -> list[str]:
    """Heralding stations no fixed link reaches: the ones a switch patches nodes to."""
    linked = {lk.herald for lk in topology.links.values()}
    return [h for h in topology.heralds if h not in linked]


def patch_target(node: str, herald: str) -> str:
    return f"{node}{PATCH_SEP}{herald}"


def split_target(target: str) -> tuple[str, str]:
    node, _, herald = target.partition(PATCH_SEP)
    return node, herald


def find_switch(ctx: CalContext, node: str, herald: str) -> Any:
    """The station's switch whose wiring has both ``node`` and ``herald``; fails (naming what
    is missing) when the station has none."""
    for component in ctx.bundle.station.components.values():
        wiring = getattr(component, "wiring", None)
        if isinstance(wiring, dict) and node in wiring and herald in wiring:
            return component
    raise CalibrationFailed(f"no optical switch of the station is wired to both {node} and "
                            f"{herald} (set the switch's init: wiring: in the station file)")


class SwitchPatchLoss(Calibration):
    name = "switch_patch_loss"
    scope = "patch"
    timeout_s = 7 * 24 * 3600.0  # mirrors and fibers drift slowly
    readings: int = 5
    check_readings: int = 2
    #: a patch losing more than this passes no usable light (the data center's 5% threshold)
    dead_db: float = 13.0
    #: a check within this of the recorded loss is in spec
    in_spec_db: float = 0.1
    quantities: ClassVar[dict[str, Quantity]] = {
        "loss_in0_db": Quantity("dB"),
        "loss_in1_db": Quantity("dB"),
    }

    def targets(self, topology: Topology) -> list[str]:
        """Every node patched to every switched heralding station."""
        return [patch_target(n, h) for n in topology.nodes for h in switched_heralds(topology)]

    def resources(self, topology: Topology, target: str) -> frozenset[str]:
        """The switch (one reconfiguration at a time), and the node and heralding station whose
        path the patch darkens."""
        node, herald = split_target(target)
        return frozenset({SWITCH_RESOURCE, f"node:{node}", f"herald:{herald}"})

    def _measure(self, ctx: CalContext, target: str, kind: str, readings: int
                 ) -> list[tuple[int, int, float, float]]:
        """Patch the node to each input, read the monitors; ``(in, out, loss dB, sigma dB)``
        per input. The node's patch is removed at the end (also on failure)."""
        node, herald = split_target(target)
        oxc = find_switch(ctx, node, herald)
        ingress = oxc.wiring[node][0]
        run = ctx.new_run(self, target, kind)
        run.register("egress_port", unit="")
        run.register("reading", unit="")
        run.register("ingress_power", unit="dBm", setpoints=("egress_port", "reading"))
        run.register("egress_power", unit="dBm", setpoints=("egress_port", "reading"))
        out: list[tuple[int, int, float, float]] = []
        with run:
            try:
                for egress in oxc.wiring[herald]:
                    self._patch(oxc, ingress, egress)
                    losses = []
                    for k in range(readings):
                        p_in, p_out = oxc.power([ingress, egress])
                        run.add_point(egress_port=egress, reading=k, ingress_power=p_in,
                                      egress_power=p_out)
                        losses.append(p_in - p_out)
                    sigma = float(np.std(losses, ddof=1) / np.sqrt(readings)) if readings > 1 \
                        else None
                    out.append((ingress, egress, float(np.mean(losses)), sigma or 0.0))
            finally:
                if oxc.port(ingress) is not None:
                    oxc.disconnect([ingress])
        return out

    @staticmethod
    def _patch(oxc: Any, ingress: int, egress: int) -> None:
        """Make ``ingress -> egress`` alone on these two ports and wait until it has settled."""
        if oxc.port(ingress) not in (None, egress):
            oxc.disconnect([ingress])
        holder = oxc.port(egress)
        if holder not in (None, ingress):
            oxc.disconnect([holder])
        if oxc.port(ingress) is None:
            oxc.connect({ingress: egress})
        oxc.settle()

    def _dead(self, target: str, measured: list[tuple[int, int, float, float]]) -> str | None:
        dead = [(i, e, loss) for i, e, loss, _ in measured if loss > self.dead_db]
        if not dead:
            return None
        node, herald = split_target(target)
        return "; ".join(f"no light through switch patch {i}->{e} ({node} -> {herald} input "
                         f"{[m[1] for m in measured].index(e)}): {loss:.1f} dB or more lost, port {i} "
                         f"or {e} stuck or its fiber broken" for i, e, loss in dead)

    def check_data(self, ctx: CalContext, target: str) -> Check:
        measured = self._measure(ctx, target, "check", self.check_readings)
        dead = self._dead(target, measured)
        if dead:
            return Check(Outcome.OUT_OF_SPEC, dead)
        drifts = []
        for k, (_, _, loss, _) in enumerate(measured):
            live = ctx.live(f"loss_in{k}_db", target)
            if live is None:
                return Check(Outcome.OUT_OF_SPEC, f"no recorded loss for input {k}")
            drifts.append(abs(loss - live))
        worst = max(drifts)
        outcome = Outcome.IN_SPEC if worst <= self.in_spec_db else Outcome.OUT_OF_SPEC
        return Check(outcome, f"patch loss within {worst:.3f} dB of the recorded")

    def calibrate(self, ctx: CalContext, target: str) -> list[Update]:
        measured = self._measure(ctx, target, "calibrate", self.readings)
        dead = self._dead(target, measured)
        if dead:
            raise CalibrationFailed(dead)
        return [Update(f"loss_in{k}_db", loss, sigma)
                for k, (_, _, loss, sigma) in enumerate(measured)]
