"""Pump laser -> microwave-optical transducer: cavity reflection, cooperativity, efficiency, noise.

Formulas (docs/physics.md §1.1):

- reflection of a side-coupled optical cavity: ``R = 1 - k_ex k_i / (k^2/4 + D^2)``
  (a Lorentzian dip of FWHM ``k`` in the pump detuning ``D``);
- intracavity pump photons: ``n_c = k_ex P / (h f) / (2 pi (k^2/4 + D^2))`` (rates in Hz);
- cooperativity ``C = C0 n_c``; efficiency ``eta = eta_ext 4C / (1 + C)^2`` times the sideband and
  qubit-match Lorentzians, times the converted fraction ``1 - exp(-Gamma tau)`` of a pump pulse
  of length ``tau``: the converted mode empties at ``Gamma = 2 pi kappa_e (1 + C)``
  (electro-optic-like) or ``Gamma = 2 pi C gamma_m`` (piezo-optomechanical: the phonon is read
  out optically), so a pulse shorter than the mode's lifetime converts only part of the photon;
- added noise from the pump-induced hot bath ``n_hot = s 1.1 n_c^0.3`` (Ren 2020; ``s`` the
  profile's ``hot_bath_scale``, 1 for the published law), which turns on
  with ``tau_on = 740 ns`` (Meenehan 2015) so short pulses heat less, plus the thermal occupation
  at the mixing-chamber temperature; input-referred ``N_add = n_bath (1 - eta_e) / eta_e``, plus
  a profile's pump-independent floor (today's devices, with its source).
  Longer pulses convert more and heat more: pulse length is a trade-off the calibration makes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import constants as k_
from .profiles import ELECTRO_OPTIC, PIEZO_OPTOMECHANICAL


def wavelength_to_frequency(wavelength_m: float) -> float:
    return k_.C_LIGHT / wavelength_m


def frequency_to_wavelength(frequency_hz: float) -> float:
    return k_.C_LIGHT / frequency_hz


def dbm_to_w(dbm: float) -> float:
    return 1e-3 * 10 ** (dbm / 10.0)


def w_to_dbm(watts: float) -> float:
    return 10 * math.log10(watts / 1e-3) if watts > 0 else -math.inf


def thermal_occupation(frequency_hz: float, temperature_k: float) -> float:
    """Bose-Einstein occupation ``1 / (exp(h f / k T) - 1)``."""
    if temperature_k <= 0:
        return 0.0
    x = k_.H_PLANCK * frequency_hz / (k_.K_BOLTZMANN * temperature_k)
    return 0.0 if x > 700 else 1.0 / math.expm1(x)


def hot_bath_turn_on(pulse_s: float | None, tau_on_s: float = k_.HOT_BATH_TURN_ON_S) -> float:
    """Pulse-averaged fraction of the steady hot bath reached in a pulse (1 for CW)."""
    if pulse_s is None:
        return 1.0
    x = pulse_s / tau_on_s
    return 1.0 - (1.0 - math.exp(-x)) / x


def lorentzian(detuning: np.ndarray | float, fwhm: float) -> np.ndarray | float:
    """Unit-height Lorentzian ``1 / (1 + (2 D / FWHM)^2)``."""
    return 1.0 / (1.0 + (2.0 * np.asarray(detuning) / fwhm) ** 2)


@dataclass
class PumpState:
    """What the pump laser delivers, as set on its front panel."""

    wavelength_m: float = k_.OPTICAL_RESONANCE_NM * 1e-9
    power_dbm: float = 0.0
    output_on: bool = False
    interlock_ok: bool = True  # the fridge controller's interlock line
    interlock_cut: bool = False  # the line switched the laser off (the model stores it)
    duty_cycle: float = 1.0  # average/peak from the AOM
    pulse_s: float | None = None  # None for CW

    @property
    def emitting(self) -> bool:
        return self.output_on and self.interlock_ok

    def peak_w(self) -> float:
        return dbm_to_w(self.power_dbm) if self.emitting else 0.0

    def average_w(self) -> float:
        return self.peak_w() * self.duty_cycle


@dataclass
class Transducer:
    """One node's transducer. ``resonance_m`` and ``bias_offset_ma`` are hidden truths."""

    resonance_m: float = k_.OPTICAL_RESONANCE_NM * 1e-9
    kappa_ex_hz: float = k_.KAPPA_O_EX_HZ
    kappa_i_hz: float = k_.KAPPA_O_I_HZ
    kappa_e_ex_hz: float = k_.KAPPA_E_EX_HZ
    kappa_e_i_hz: float = k_.KAPPA_E_I_HZ
    c0: float = k_.SINGLE_PHOTON_COOPERATIVITY
    mw_fmax_hz: float = k_.MW_MODE_FMAX_HZ
    mw_period_ma: float = k_.MW_TUNING_PERIOD_MA
    bias_offset_ma: float = 0.0
    line_loss_db: float = k_.PUMP_LINE_LOSS_DB
    absorbed_fraction: float = k_.PUMP_ABSORBED_FRACTION
    readout: str = ELECTRO_OPTIC
    gamma_m_hz: float = k_.GAMMA_M_HZ
    hot_bath_coeff: float = k_.HOT_BATH_COEFF
    hot_bath_exponent: float = k_.HOT_BATH_EXPONENT
    hot_bath_scale: float = 1.0
    hot_bath_turn_on_s: float = k_.HOT_BATH_TURN_ON_S
    added_noise_floor: float = 0.0  # pump-independent share of N_add (a profile's, with reason)

    @property
    def kappa_hz(self) -> float:
        return self.kappa_ex_hz + self.kappa_i_hz

    @property
    def eta_o(self) -> float:
        return self.kappa_ex_hz / self.kappa_hz

    @property
    def eta_e(self) -> float:
        return self.kappa_e_ex_hz / (self.kappa_e_ex_hz + self.kappa_e_i_hz)

    def detuning_hz(self, pump_wavelength_m: float | np.ndarray) -> np.ndarray | float:
        """Pump frequency minus cavity frequency (negative: red-detuned)."""
        return k_.C_LIGHT / np.asarray(pump_wavelength_m) - k_.C_LIGHT / self.resonance_m

    def reflection(self, pump_wavelength_m: float | np.ndarray) -> np.ndarray | float:
        d = self.detuning_hz(pump_wavelength_m)
        return 1.0 - self.kappa_ex_hz * self.kappa_i_hz / (self.kappa_hz**2 / 4 + d**2)

    def pump_at_device_w(self, laser_w: float) -> float:
        return laser_w * 10 ** (-self.line_loss_db / 10)

    def intracavity_photons(self, laser_w: float, pump_wavelength_m: float) -> float:
        d = float(self.detuning_hz(pump_wavelength_m))
        photon_rate = self.pump_at_device_w(laser_w) / (k_.H_PLANCK * k_.C_LIGHT / pump_wavelength_m)
        return self.kappa_ex_hz * photon_rate / (2 * math.pi * (self.kappa_hz**2 / 4 + d * d))

    def mw_frequency_hz(self, bias_ma: float) -> float:
        """Flux-tunable microwave mode: ``f_max sqrt(|cos(pi (I - I0) / period)|)``."""
        x = math.pi * (bias_ma - self.bias_offset_ma) / self.mw_period_ma
        return self.mw_fmax_hz * math.sqrt(abs(math.cos(x)))

    def cooperativity(self, pump: PumpState) -> float:
        return self.c0 * self.intracavity_photons(pump.peak_w(), pump.wavelength_m)

    def efficiency(self, pump: PumpState, bias_ma: float, qubit_hz: float) -> float:
        """Qubit-mode -> fiber conversion efficiency during a pump pulse."""
        c = self.cooperativity(pump)
        if c <= 0:
            return 0.0
        f_mw = self.mw_frequency_hz(bias_ma)
        internal = 4 * c / (1 + c) ** 2
        sideband = lorentzian(float(self.detuning_hz(pump.wavelength_m)) + f_mw, self.kappa_hz)
        kappa_e = self.kappa_e_ex_hz + self.kappa_e_i_hz
        match = lorentzian(f_mw - qubit_hz, kappa_e * (1 + c))
        return float(self.eta_o * self.eta_e * internal * sideband * match
                     * self.converted_fraction(c, pump.pulse_s))

    def readout_rate(self, c: float) -> float:
        """Rate (1/s) at which the pump empties the converted mode into the optical output."""
        if self.readout == PIEZO_OPTOMECHANICAL:
            return 2 * math.pi * self.gamma_m_hz * c
        return 2 * math.pi * (self.kappa_e_ex_hz + self.kappa_e_i_hz) * (1 + c)

    def converted_fraction(self, c: float, pulse_s: float | None) -> float:
        """Share of the photon converted during a pump pulse of ``pulse_s`` (1 for CW)."""
        if pulse_s is None:
            return 1.0
        return -math.expm1(-self.readout_rate(c) * pulse_s)

    def bath_occupation(self, pump: PumpState, mxc_k: float, bias_ma: float) -> float:
        n_c = self.intracavity_photons(pump.peak_w(), pump.wavelength_m)
        hot = (self.hot_bath_scale * self.hot_bath_coeff * n_c**self.hot_bath_exponent
               * hot_bath_turn_on(pump.pulse_s, self.hot_bath_turn_on_s))
        return hot + thermal_occupation(self.mw_frequency_hz(bias_ma), mxc_k)

    def added_noise(self, pump: PumpState, mxc_k: float, bias_ma: float) -> float:
        """Input-referred added noise photons ``N_add = n_bath (1 - eta_e) / eta_e`` plus the
        profile's floor."""
        return (self.bath_occupation(pump, mxc_k, bias_ma) * (1 - self.eta_e) / self.eta_e
                + self.added_noise_floor)

    def heat_load_w(self, pump: PumpState) -> float:
        """Average pump power dissipated on the mixing chamber."""
        return self.absorbed_fraction * self.pump_at_device_w(pump.average_w())
