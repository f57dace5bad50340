"""The link layer of the simulated QNUs, split along its seams:

- :mod:`.link_requests`: CREATE requests, their status and per-node results (:class:`LinkLayer`);
- :mod:`.link_commands`: parsing of the CREATE and RES? arguments;
- :mod:`.link_swap`: entanglement swapping at a middle node;
- :mod:`.link_tags`: the time tags a running request leaves at its heralding station.

This module keeps the names the instrument models import.
"""

from __future__ import annotations

from .link_commands import MAX_PAIRS, MAX_TIME_S, parse_create, parse_results
from .link_requests import LinkLayer, LinkRequest
from .link_swap import SwapRecord, dephase, swap
from .link_tags import request_tags

__all__ = [
    "MAX_PAIRS",
    "MAX_TIME_S",
    "LinkLayer",
    "LinkRequest",
    "SwapRecord",
    "dephase",
    "parse_create",
    "parse_results",
    "request_tags",
    "swap",
]
