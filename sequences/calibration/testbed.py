"""The calibrations of the QNU testbed, in graph order:

1. ``cryostat_ready`` (node): mixing chamber below threshold and stable;
2. ``pump_cavity`` (node): laser sweep across the optical cavity, Lorentzian fit, pump set one
   qubit frequency red of the resonance;
3. ``mw_mode`` (node): bias sweep, tuning-curve fit, mode set to the qubit frequency;
4. ``qubit_swap`` (node): swap-amplitude scan, Rabi fit;
5. ``pump_operating_point`` (node): pump power x pulse width against efficiency, added noise and
   mixing-chamber heating; the point with the highest herald rate at the target fidelity inside
   the thermal budget;
6. ``detector_timing`` (station): arrival-time histograms, detector delays, herald window;
7. ``link_phase`` (link): interference fringe, phase setpoint, visibility;
8. ``switch_patch_loss`` (patch ``<node>@<station>``, switched stations only): each node's path
   through the optical switch to each heralding station input, its loss on the port monitors.
"""

from __future__ import annotations

from .engine import Calibration
from .helpers import C_LIGHT
from .link_cals import DetectorTiming, LinkPhase
from .linkcheck import LinkCheck
from .node_bringup import CryostatReady, MwMode, PumpCavity, QubitSwap
from .operating_point import PumpOperatingPoint
from .switch_cals import SwitchPatchLoss

__all__ = [
    "C_LIGHT",
    "CryostatReady",
    "DetectorTiming",
    "LinkCheck",
    "LinkPhase",
    "MwMode",
    "PumpCavity",
    "PumpOperatingPoint",
    "QubitSwap",
    "SwitchPatchLoss",
    "default_calibrations",
]


def default_calibrations(**timeouts: float) -> list[Calibration]:
    """The testbed's calibrations (the eight above and the link check), optionally with
    timeouts overridden by name. The switch's has targets only on a switched topology."""
    classes = (CryostatReady, PumpCavity, MwMode, QubitSwap, PumpOperatingPoint,
               DetectorTiming, LinkPhase, LinkCheck, SwitchPatchLoss)
    return [cls(timeout_s=timeouts.get(cls.name)) for cls in classes]
