"""Optical circuit switch: a HUBER+SUHNER Polatis matrix switch (SCPI over TCP, port 3082).

An ``N x N`` switch patches ingress ports ``1..N`` to egress ports ``N+1..2N`` one-to-one; in a
data center the QNUs' fibers enter on ingress ports and the heralding stations' inputs leave on
egress ports. Every patch is checked here before anything is sent (port ranges, one port in at
most one connection), so a wrong patch fails with a one-line ``ValueError`` naming the port and
what is allowed, and the switch is never left half-configured by this driver.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import qcodes.validators as vals
from qcodes.parameters import Parameter

from .base import QnetlabVisaInstrument

if TYPE_CHECKING:
    from typing import Unpack

    from qcodes.instrument import VisaInstrumentKWArgs

_LIST = re.compile(r"\(@([^)]*)\)")


def channel_list(ports: list[int] | tuple[int, ...]) -> str:
    """``[1, 2]`` -> ``(@1,2)``."""
    return "(@" + ",".join(str(int(p)) for p in ports) + ")"


def parse_state(reply: str) -> dict[int, int]:
    """``(@1,2),(@17,18)`` -> ``{1: 17, 2: 18}`` (the reply of ``:OXC:SWIT:CONN:STAT?``)."""
    lists = _LIST.findall(reply)
    if len(lists) != 2:
        raise ValueError(f"connection state {reply!r} is not (@...),(@...)")
    ins, outs = ([int(p) for p in part.split(",") if p.strip()] for part in lists)
    if len(ins) != len(outs):
        raise ValueError(f"connection state {reply!r}: {len(ins)} ingress, {len(outs)} egress")
    return dict(zip(ins, outs, strict=True))


class QnetlabOpticalSwitch(QnetlabVisaInstrument):
    """Polatis optical circuit switch; ``connections`` is the whole patch table."""

    default_terminator = "\n"
    default_timeout = 5.0

    def __init__(self, name: str, address: str,
                 wiring: dict[str, int | list[int]] | None = None,
                 **kwargs: Unpack[VisaInstrumentKWArgs]) -> None:
        super().__init__(name, address, **kwargs)
        #: the fibers on the switch, as cabled (the station file's ``init: wiring:``): each
        #: node's QNU on one ingress port, each heralding station's two inputs on egress ports
        self.wiring: dict[str, tuple[int, ...]] = {
            str(k): tuple(int(p) for p in (v if isinstance(v, (list, tuple)) else [v]))
            for k, v in (wiring or {}).items()}
        ingress, egress = (int(x) for x in self.ask(":OXC:SWIT:SIZE?").split(","))
        #: number of ingress ports (= egress ports); ingress 1..N, egress N+1..2N
        self.size = ingress
        if egress != ingress:
            raise ValueError(f"{name}: switch size {ingress}x{egress} is not square")
        self.connections: Parameter = self.add_parameter(
            "connections", label="Connections", get_cmd=":OXC:SWIT:CONN:STAT?",
            get_parser=parse_state, set_cmd=self._set_only, vals=vals.Dict(),
            docstring="Every patch as {ingress: egress}; setting it makes exactly these "
                      "patches (ONLY: unchanged ones stay lit).")
        """Every patch as {ingress: egress}; setting it makes exactly these patches."""
        for what, ports in self.wiring.items():
            for p in ports:
                if not 1 <= p <= 2 * ingress:
                    raise ValueError(f"{name}: wiring {what}={p} not a port in 1..{2 * ingress}")
        self._finish_init()

    # --- validation before anything is sent ------------------------------------------------
    def check(self, patches: dict[int, int], keep: dict[int, int] | None = None) -> None:
        """Raise ``ValueError`` unless ``patches`` (with ``keep`` already made) is one-to-one and
        inside the switch's port ranges."""
        n = self.size
        for i, e in patches.items():
            if not isinstance(i, int) or not 1 <= i <= n:
                raise ValueError(f"{self.name}: ingress port={i!r} not an integer in 1..{n}")
            if not isinstance(e, int) or not n < e <= 2 * n:
                raise ValueError(f"{self.name}: egress port={e!r} not an integer in "
                                 f"{n + 1}..{2 * n}")
        holders: dict[int, int] = {}
        for i, e in {**(keep or {}), **patches}.items():
            if e in holders and holders[e] != i:
                raise ValueError(f"{self.name}: egress port={e} patched from both {holders[e]} "
                                 f"and {i}; a port takes one connection")
            holders[e] = i

    def _set_only(self, patches: dict[int, int]) -> None:
        self.check(patches)
        ins = sorted(patches)
        if not ins:
            self.write(":OXC:SWIT:DISC:ALL")
            return
        self.write(f":OXC:SWIT:CONN:ONLY {channel_list(ins)},"
                   f"{channel_list([patches[i] for i in ins])}")

    # --- actions ------------------------------------------------------------------------------
    def connect(self, patches: dict[int, int]) -> None:
        """Add ``{ingress: egress}`` patches to those already made."""
        current = self.connections()
        moved = {i: e for i, e in patches.items() if current.get(i, e) != e}
        if moved:
            i = next(iter(moved))
            raise ValueError(f"{self.name}: ingress port={i} is patched to {current[i]}, not "
                             f"{moved[i]}; disconnect it first")
        self.check(patches, keep=current)
        ins = sorted(patches)
        if ins:
            self.write(f":OXC:SWIT:CONN:ADD {channel_list(ins)},"
                       f"{channel_list([patches[i] for i in ins])}")

    def disconnect(self, ingress: list[int]) -> None:
        """Remove the patches of these ingress ports (each must be patched)."""
        current = self.connections()
        missing = [i for i in ingress if i not in current]
        if missing:
            raise ValueError(f"{self.name}: ingress port={missing[0]} is not patched; "
                             f"patched: {sorted(current)}")
        if ingress:
            ins = sorted(ingress)
            self.write(f":OXC:SWIT:CONN:SUB {channel_list(ins)},"
                       f"{channel_list([current[i] for i in ins])}")

    def disconnect_all(self) -> None:
        self.write(":OXC:SWIT:DISC:ALL")

    def port(self, port: int) -> int | None:
        """The port patched to ``port`` (None when none)."""
        if not isinstance(port, int) or not 1 <= port <= 2 * self.size:
            raise ValueError(f"{self.name}: port={port!r} not an integer in 1..{2 * self.size}")
        other = int(self.ask(f":OXC:SWIT:CONN:PORT? {port}"))
        return other or None

    def power(self, ports: list[int]) -> list[float]:
        """Optical power (dBm) at each port's power monitor (``:MONitor:POWer?``, the OPM
        option): an ingress port reads the light entering it, an egress port what its patch
        passes; the monitor floor (about -60 dBm) means no light."""
        for p in ports:
            if not isinstance(p, int) or not 1 <= p <= 2 * self.size:
                raise ValueError(f"{self.name}: port={p!r} not an integer in 1..{2 * self.size}")
        reply = self.ask(f":MON:POW? {channel_list(list(ports))}")
        return [float(x) for x in reply.split(",")]

    def settle(self) -> None:
        """Wait (``*OPC?``, lab time) until every reconfiguration has settled."""
        self.ask("*OPC?")
