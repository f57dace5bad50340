"""The simulated lab served over TCP (``qnetlab sim serve``): every resource of a lab file as a
raw SCPI socket on 127.0.0.1, one physical world behind them, lab time paced by wall time.

:class:`ServedLab` runs the servers (``with ServedLab(lab, speed=100) as served: ...``);
:func:`served_station` turns a simulated station file into the hardware-style one that reaches
them over ``@py``. See ARCHITECTURE.md, "How a query travels over TCP".
"""

from .lab import ServedLab, ServedResource
from .pacing import PacedClock
from .station import served_station

__all__ = ["PacedClock", "ServedLab", "ServedResource", "served_station"]
