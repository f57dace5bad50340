"""How calibrated values are put on the instruments: one setter per quantity that lives on an
instrument, ``setter(bundle, target, value)`` (the ``apply`` of a calibration's ``Quantity``)."""

from __future__ import annotations

import math
from typing import Any

from qnetlab.stations import StationBundle


def set_pump_wavelength(bundle: StationBundle, target: str, value: float) -> None:
    bundle.node(target)["pump"].wavelength(value)


def set_bias(bundle: StationBundle, target: str, value: float) -> None:
    bundle.node(target)["qnu"].transducer.bias(value)


def set_swap_amplitude(bundle: StationBundle, target: str, value: float) -> None:
    bundle.node(target)["qnu"].qubit.swap_amplitude(value)


def set_pump_power(bundle: StationBundle, target: str, value: float) -> None:
    bundle.node(target)["pump"].power(value)


def set_pulse_width(bundle: StationBundle, target: str, value: float) -> None:
    """Pump pulse width on the node's AOM gate: one pulse per attempt (0: CW pump)."""
    aom = bundle.node(target)["aom"]
    if value <= 0:
        aom.gate_mode("cw")
        return
    aom.pulse_width(value)
    aom.gate_mode("triggered")


def set_alpha(bundle: StationBundle, target: str, value: float) -> None:
    bundle.node(target)["qnu"].qubit.alpha(value)


def set_delay(channel: str) -> Any:
    def setter(bundle: StationBundle, target: str, value: float) -> None:
        herald = bundle.instrument(bundle.topology.heralds[target].qnu)
        getattr(herald.tagger, channel).delay(round(value))
    return setter


def set_window(bundle: StationBundle, target: str, value: float) -> None:
    bundle.instrument(bundle.topology.heralds[target].qnu).engine.herald_window(value)


def set_phase(bundle: StationBundle, target: str, value: float) -> None:
    a, b = bundle.topology.links[target].nodes
    bundle.node(a)["qnu"].link_to(b).phase(value % (2 * math.pi))

