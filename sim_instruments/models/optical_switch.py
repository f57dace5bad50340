"""Polatis optical circuit switch: SCPI channel lists, one-to-one patching, reconfiguration time.

The switch's state and light live in the world (:class:`~qnetlab.sim_instruments.physics.switch.
SwitchFabric`, one per ``x-lab: switches`` entry, named by the resource's ``x-bind: {switch:
...}``); this model is what the product does with commands: parse ``(@1,2),(@17,18)``, refuse a
patch that would put a port in two connections (``-221``) or name a port the switch does not
have (``-222``), apply a command whole or not at all, and answer ``*OPC?`` only once the mirrors
have settled (the reconfiguration time passes on the lab clock).
"""

from __future__ import annotations

import math
import re

import numpy as np

from qnetlab.sim_instruments.physics.switch import SwitchFabric
from qnetlab.sim_instruments.protocol import InstrumentRefusal

from .base import DeviceModel

#: the port power monitors: floor (dark), read noise (dB), the light each node's fiber carries
MONITOR_FLOOR_DBM = -60.0
MONITOR_NOISE_DB = 0.01
SOURCE_DBM = -10.0

_LIST = re.compile(r"^\(@([0-9:,\s]*)\)$")


def parse_channel_list(text: str) -> list[int]:
    """``(@1,3:5)`` -> ``[1, 3, 4, 5]`` (SCPI channel list; ranges ascending or descending)."""
    m = _LIST.match(text.strip())
    if not m:
        raise InstrumentRefusal("data_type_error", f"{text.strip()!r} is not a channel list (@...)")
    ports: list[int] = []
    for item in filter(None, (s.strip() for s in m.group(1).split(","))):
        lo, _, hi = item.partition(":")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise InstrumentRefusal("data_type_error", f"{item!r} is not a port number") from None
        ports.extend(range(a, b + 1) if a <= b else range(a, b - 1, -1))
    return ports


def parse_connections(args: str) -> list[tuple[int, int]]:
    """``(@1,2),(@17,18)`` -> ``[(1, 17), (2, 18)]``: two lists of equal length."""
    parts = re.findall(r"\(@[^)]*\)", args)
    if len(parts) != 2 or re.sub(r"\(@[^)]*\)|[\s,]", "", args):
        raise InstrumentRefusal("data_type_error",
                                f"expected (@<ingress list>),(@<egress list>), got {args.strip()!r}")
    ins, outs = parse_channel_list(parts[0]), parse_channel_list(parts[1])
    if len(ins) != len(outs):
        raise InstrumentRefusal("data_type_error",
                                f"{len(ins)} ingress ports but {len(outs)} egress ports")
    return list(zip(ins, outs, strict=True))


class OpticalSwitchModel(DeviceModel):
    """The ``x-bind: {switch: <name>}`` switch of the lab (a bare YAML gets a 16 x 16 of its own)."""

    VENDOR = "Polatis"
    MODEL = "N-VST-48x48-HU1-DMHNV-805"
    FIRMWARE = "6.6.1.11"

    def setup(self) -> None:
        name = self.binding.get("switch", "oxc")
        if name not in self.lab.switches:  # a bare YAML: the lab's one node on ingress port 1
            self.lab.switches[name] = SwitchFabric(
                name, 16, self.lab.seed, node_ports={n: i + 1 for i, n in
                                                     enumerate(list(self.lab.nodes)[:16])})
        self.fabric: SwitchFabric = self.lab.switches[name]
        #: the node whose QNU fiber enters ingress port 1 (a bare YAML's one node), if any
        self.node = next((self.lab.nodes[n] for n, p in self.fabric.node_ports.items()
                          if p == 1), None)

        self._monitor_rng = np.random.default_rng([self.lab.seed, 0x6F6D])

    def serial(self) -> str:
        return f"PX{self.fabric.name.upper()[:6]}"

    def on_reset(self) -> None:
        """``*RST`` and a power cycle keep the patches: the mirrors hold their positions
        (latching), as the product does; only the error queue and registers are cleared."""

    # --- checks ------------------------------------------------------------------------------
    def _check_ports(self, pairs: list[tuple[int, int]]) -> None:
        n = self.fabric.size
        for i, e in pairs:
            if not 1 <= i <= n:
                raise InstrumentRefusal("data_out_of_range", f"ingress port {i} not in 1..{n}")
            if not n < e <= 2 * n:
                raise InstrumentRefusal("data_out_of_range",
                                        f"egress port {e} not in {n + 1}..{2 * n}")

    def _check_one_to_one(self, pairs: list[tuple[int, int]], existing: dict[int, int]) -> None:
        """Each port in at most one connection, counting ``existing`` ones (ingress -> egress)."""
        used_out = {e: i for i, e in existing.items()}
        seen_in: set[int] = set()
        seen_out: set[int] = set()
        for i, e in pairs:
            if i in seen_in or e in seen_out:
                port = i if i in seen_in else e
                raise InstrumentRefusal("settings_conflict", f"port {port} twice in one command")
            seen_in.add(i)
            seen_out.add(e)
            if i in existing and existing[i] != e:
                raise InstrumentRefusal("settings_conflict",
                                        f"port {i} already connected to {existing[i]}")
            if e in used_out and used_out[e] != i:
                raise InstrumentRefusal("settings_conflict",
                                        f"port {e} already connected to {used_out[e]}")

    # --- x-call --------------------------------------------------------------------------------
    def connect_add(self, args: str) -> None:
        pairs = parse_connections(args)
        self._check_ports(pairs)
        self._check_one_to_one(pairs, self.fabric.patches)
        new = [(i, e) for i, e in pairs if self.fabric.patches.get(i) != e]
        if new:
            self.fabric.connect(new, self.now())

    def connect_subtract(self, args: str) -> None:
        pairs = parse_connections(args)
        self._check_ports(pairs)
        for i, e in pairs:
            if self.fabric.patches.get(i) != e:
                raise InstrumentRefusal("execution_error", f"no connection {i}->{e} to remove")
        self.fabric.disconnect([i for i, _ in pairs])

    def connect_only(self, args: str) -> None:
        pairs = parse_connections(args)
        self._check_ports(pairs)
        self._check_one_to_one(pairs, {})
        wanted = dict(pairs)
        gone = [i for i, e in self.fabric.patches.items() if wanted.get(i) != e]
        if gone:
            self.fabric.disconnect(gone)
        new = [(i, e) for i, e in pairs if self.fabric.patches.get(i) != e]
        if new:
            self.fabric.connect(new, self.now())

    def disconnect_all(self) -> None:
        if self.fabric.patches:
            self.fabric.disconnect(list(self.fabric.patches))

    def connect_port(self, args: str) -> str:
        try:
            port = int(args.strip())
        except ValueError:
            raise InstrumentRefusal("data_type_error", f"{args.strip()!r} is not a port") from None
        n = self.fabric.size
        if not 1 <= port <= 2 * n:
            raise InstrumentRefusal("data_out_of_range", f"port {port} not in 1..{2 * n}")
        other = (self.fabric.egress_of(port) if port <= n else self.fabric.ingress_of(port))
        return str(other or 0)

    def monitor_power(self, args: str) -> str:
        """``:MONitor:POWer? (@ports)``: each port's power monitor in dBm. An ingress port reads
        the light entering on it (a node's fiber carries ``SOURCE_DBM``), an egress port the
        light its patch passes now (nothing while dark, through a stuck port or unpatched)."""
        ports = parse_channel_list(args)
        n, t = self.fabric.size, self.now()
        nodes_on = set(self.fabric.node_ports.values())
        readings = []
        for port in ports:
            if not 1 <= port <= 2 * n:
                raise InstrumentRefusal("data_out_of_range", f"port {port} not in 1..{2 * n}")
            ingress = port if port <= n else self.fabric.ingress_of(port)
            mw = 10 ** (SOURCE_DBM / 10) if ingress in nodes_on else 0.0
            if port > n and ingress is not None:
                mw *= self.fabric.patch_transmission(ingress, t)
            dbm = 10 * math.log10(mw) if mw > 0 else -math.inf
            dbm = max(dbm, MONITOR_FLOOR_DBM) + self._monitor_rng.normal(0.0, MONITOR_NOISE_DB)
            readings.append(f"{dbm:.3f}")
        return ",".join(readings)

    def state(self) -> str:
        pairs = sorted(self.fabric.patches.items())
        ins = ",".join(str(i) for i, _ in pairs)
        outs = ",".join(str(e) for _, e in pairs)
        return f"(@{ins}),(@{outs})"

    def size(self) -> str:
        return f"{self.fabric.size},{self.fabric.size}"

    def opc(self) -> str:
        """``*OPC?``: answered once every patch has settled; the wait is lab time."""
        t = self.now()
        settle = max(self.fabric.dark_until.values(), default=t)
        if settle > t:
            self.lab.wait(settle - t)
            self.lab.sync()
        return "1"

    def errors_all(self) -> str:
        """``:SYSTem:ERRor:ALL?``: every queued error, oldest first; the queue is emptied."""
        out: list[str] = []
        for queue in self.device._error_queues.values():
            out.extend(m.decode() for m in queue._queue)
            queue._queue.clear()
        return ",".join(out) if out else '0,"No error"'
