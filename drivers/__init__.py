"""QCoDeS drivers for the QNU, the transducer pump laser, its AOM gate and the fridge controller.

The same class runs a real instrument or a simulated one; only the address and the VISA library
(in the station file) differ.
"""

from .aom_gate import QnetlabAomGate
from .base import HardLimitParameter, QnetlabVisaInstrument
from .fridge import QnetlabFridgeController
from .pump_laser import QnetlabPumpLaser
from .qnu import LinkRequest, LinkResults, LinkStatus, QnetlabQNU

__all__ = [
    "HardLimitParameter",
    "LinkRequest",
    "LinkResults",
    "LinkStatus",
    "QnetlabAomGate",
    "QnetlabFridgeController",
    "QnetlabPumpLaser",
    "QnetlabQNU",
    "QnetlabVisaInstrument",
]
