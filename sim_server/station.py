"""The station file of a served lab: the simulated station, re-addressed to the sockets.

The simulated station file of a lab (``sim_link.station.yaml`` for ``link.yaml``) already says
which driver talks to which resource of the lab file and the lab's topology; the served one
keeps all of that and changes only what a hardware station differs in: each instrument's
``address`` becomes ``TCPIP0::127.0.0.1::<port>::SOCKET`` and its ``visalib`` ``"@py"``. One
entry is added, ``lab_clock`` (type :data:`CLOCK_TYPE`), from which ``qnetlab.stations.load``
makes the station's clock follow the served lab's time.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from pyvisa import rname

if TYPE_CHECKING:
    from .lab import ServedLab

CLOCK_TYPE = "qnetlab.clock.ServedClock"
CLOCK_ENTRY = "lab_clock"
HEADER = ("# Station file of a lab served over TCP by `qnetlab sim serve` ({lab}, speed {speed:g}):\n"
          "# a hardware station (pyvisa-py raw sockets) whose lab_clock entry makes the station\n"
          "# follow the served lab's time. Generated; the ports are those of this run.\n")


def served_station(template: dict[str, Any], served: ServedLab) -> dict[str, Any]:
    """``template`` (a parsed simulated station file of the same lab) re-addressed to
    ``served``'s sockets; raises ValueError naming an instrument whose address the lab does
    not serve."""
    ports = {s.resource: s.address for s in served.resources}
    station = copy.deepcopy(template)
    instruments = station.get("instruments") or {}
    for name, spec in instruments.items():
        if not isinstance(spec, dict) or not spec.get("address"):
            continue
        canonical = rname.to_canonical_name(str(spec["address"]))
        if canonical not in ports:
            raise ValueError(f"station instrument {name!r}: address {spec['address']!r} is not "
                             f"a resource of the served lab (resources: {sorted(ports)})")
        spec["address"] = ports[canonical]
        spec.setdefault("init", {})["visalib"] = "@py"
    instruments[CLOCK_ENTRY] = {"type": CLOCK_TYPE,
                                "init": {"host": "127.0.0.1", "port": served.clock_port}}
    station["instruments"] = instruments
    return station


def hardware_station(hardware: dict[str, Any], template: dict[str, Any],
                     served: ServedLab) -> dict[str, Any]:
    """A hardware station file (``hardware``, parsed: its drivers, timeouts, reconnect policy,
    limits and topology as the lab runs them) pointed at ``served``: each instrument takes the
    served address of the instrument of the same name in ``template`` (the lab's simulated
    station file), and the ``lab_clock`` entry is added. Raises ValueError naming a hardware
    instrument that the simulated station does not have."""
    sim = served_station(template, served)["instruments"]
    station = copy.deepcopy(hardware)
    instruments = station.get("instruments") or {}
    for name, spec in instruments.items():
        if not isinstance(spec, dict) or not spec.get("address"):
            continue
        if name not in sim or not sim[name].get("address"):
            raise ValueError(f"hardware station instrument {name!r} has no instrument of that "
                             f"name in the lab's simulated station (has: "
                             f"{sorted(n for n in sim if n != CLOCK_ENTRY)})")
        spec["address"] = sim[name]["address"]
        spec.setdefault("init", {})["visalib"] = "@py"
    instruments[CLOCK_ENTRY] = sim[CLOCK_ENTRY]
    station["instruments"] = instruments
    return station


def uses_lab(template: dict[str, Any], lab_path: str, resolve: Any) -> bool:
    """True if a station file's simulated instruments open ``lab_path`` (``resolve`` turns a
    visalib's lab part into an absolute path)."""
    for spec in (template.get("instruments") or {}).values():
        visalib = str(((spec or {}).get("init") or {}).get("visalib") or "")
        if visalib.endswith("@qnetlab"):
            try:
                if resolve(visalib.removesuffix("@qnetlab")) == lab_path:
                    return True
            except FileNotFoundError:
                continue
    return False
