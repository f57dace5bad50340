"""Superconducting nanowire single-photon detectors and optical fiber (docs/physics.md §2, §5)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import constants as k_


@dataclass
class Snspd:
    """One SNSPD with its readout. Efficiency follows an erf sigmoid in bias current."""

    efficiency_sat: float = k_.SNSPD_EFFICIENCY
    knee_ua: float = k_.SNSPD_BIAS_KNEE_UA
    width_ua: float = k_.SNSPD_BIAS_WIDTH_UA
    switching_ua: float = k_.SNSPD_SWITCHING_UA
    dark_hz: float = k_.SNSPD_DARK_HZ
    jitter_fwhm_ps: float = k_.SNSPD_JITTER_FWHM_PS
    dead_time_s: float = k_.SNSPD_DEAD_TIME_S
    pulse_amplitude_v: float = k_.SNSPD_PULSE_AMPLITUDE_V

    def state(self, enabled: bool, bias_ua: float) -> str:
        if not enabled:
            return "OFF"
        return "LATCHED" if bias_ua > self.switching_ua else "OK"

    def efficiency(self, enabled: bool, bias_ua: float, trigger_v: float) -> float:
        """DE(I) = DE_sat/2 (1 + erf((I - I0)/w)); zero when off, latched or trigger too high."""
        if self.state(enabled, bias_ua) != "OK" or trigger_v >= self.pulse_amplitude_v:
            return 0.0
        return 0.5 * self.efficiency_sat * (1 + math.erf((bias_ua - self.knee_ua) / self.width_ua))

    def dark_rate_hz(self, enabled: bool, bias_ua: float, trigger_v: float) -> float:
        """Intrinsic dark counts grow with bias; a trigger level near zero counts readout noise."""
        if self.state(enabled, bias_ua) != "OK" or trigger_v >= self.pulse_amplitude_v:
            return 0.0
        intrinsic = self.dark_hz * math.exp((bias_ua - k_.SNSPD_BIAS_NOMINAL_UA) / 1.5)
        electrical = 2e6 * max(0.0, 0.05 - trigger_v) / 0.05
        return intrinsic + electrical


@dataclass
class Fiber:
    """A fiber span: loss in dB/km, group delay in s/km."""

    length_km: float
    loss_db_per_km: float = k_.FIBER_LOSS_DB_PER_KM
    delay_s_per_km: float = k_.FIBER_DELAY_S_PER_KM

    @property
    def transmission(self) -> float:
        return 10 ** (-self.loss_db_per_km * self.length_km / 10)

    @property
    def delay_s(self) -> float:
        return self.delay_s_per_km * self.length_km
