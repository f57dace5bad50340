"""QCoDeS drivers for the QNU, the transducer pump laser, its AOM gate, the Lake Shore 372 and the
Oxford Triton.

The same class runs a real instrument or a simulated one; only the address and the VISA library
(in the station file) differ.
"""

from .aom_gate import QnetlabAomGate
from .base import HardLimitParameter, QnetlabVisaInstrument
from .fridge import QnetlabLakeshore372
from .optical_switch import QnetlabOpticalSwitch
from .pump_laser import QnetlabPumpLaser
from .qnu import LinkRequest, LinkResults, LinkStatus, QnetlabQNU
from .triton import QnetlabTriton

__all__ = [
    "HardLimitParameter",
    "LinkRequest",
    "LinkResults",
    "LinkStatus",
    "QnetlabAomGate",
    "QnetlabLakeshore372",
    "QnetlabOpticalSwitch",
    "QnetlabPumpLaser",
    "QnetlabQNU",
    "QnetlabTriton",
    "QnetlabVisaInstrument",
]
