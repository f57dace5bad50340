"""Physical constants and the simulated lab's documented defaults.

Every default cites its source. Tags follow ``docs/physics.md``:
[V] seen verbatim in the cited source, [M] literature value not confirmed in a primary source
(plausible default, check before citing), [D] derived here from the others.
"""

from __future__ import annotations

H_PLANCK = 6.62607015e-34  # J s (SI exact)
K_BOLTZMANN = 1.380649e-23  # J/K (SI exact)
C_LIGHT = 299_792_458.0  # m/s (SI exact)

# --- Dilution refrigerator (docs/physics.md §4) ---------------------------------------------
MXC_BASE_K = 0.008  # base temperature, LD400 class [M]
MXC_COOLING_K_W_PER_K2 = 0.04  # Qdot = k (T^2 - T_base^2), k from 400 uW at 100 mK [D]
MXC_TAU_S = 300.0  # first-order step response of the MXC plate at 10 mK, minutes-scale [M]
MXC_TAU_REF_K = 0.010
STAGE_NOMINAL_K = {"50K": 45.0, "4K": 3.5, "still": 0.8, "cold_plate": 0.1}  # [V] stage table
STILL_HEATER_MAX_W = 10e-3  # still heater full scale (mW-class still cooling) [M]
HEATER_RESISTANCE_OHM = 120.0  # MXC heater; QCoDeS 372 sim HTRSET default +120.000 [V]
# Lake Shore 372 sample-heater current ranges, index 1..8 [V] QCoDeS / manual
SAMPLE_HEATER_RANGES_A = (0.0, 31.6e-6, 100e-6, 316e-6, 1e-3, 3.16e-3, 10e-3, 31.6e-3, 100e-3)
INTERLOCK_MXC_MAX_K = 0.050  # pump off above ~50 mK [M] common practice
INTERLOCK_RATE_MAX_K_PER_S = 1e-3  # or faster than ~1 mK/s [M]
OVC_PRESSURE_MBAR = 2e-7  # cold OVC vacuum; interlock above 1e-4 mbar [M]
PULSE_TUBE_WARMUP_TAU_S = 3 * 3600.0  # upper stages warm over hours with the pulse tube off [M]

# --- Pump laser and transducer (docs/physics.md §1, §6) --------------------------------------
OPTICAL_RESONANCE_NM = 1550.12  # C-band preset (193.4 THz alternative to 192.0 THz) [V]
KAPPA_O_EX_HZ = 650e6  # kappa_o,ex / 2pi, Meesala 2024 SI [V]
KAPPA_O_I_HZ = 650e6  # kappa_o,i / 2pi, Meesala 2024 SI [V]
KAPPA_E_EX_HZ = 1.2e6  # kappa_e,ex / 2pi, Meesala 2024 SI [V]
KAPPA_E_I_HZ = 550e3  # kappa_e,i / 2pi, Meesala 2024 SI [V]
SINGLE_PHOTON_COOPERATIVITY = 1.5e-3  # 4 g_om^2 / (kappa_o gamma_m), g_om 270 kHz, gamma 150 kHz [D]
QUBIT_FREQUENCY_HZ = 5.0e9  # f_microwave 5.0 GHz (Meesala f_e = 5.004 GHz) [V]
MW_MODE_FMAX_HZ = 5.3e9  # top of the flux-tunable microwave mode's tuning curve [M]
MW_TUNING_PERIOD_MA = 10.0  # bias period of the tuning curve [M]
PUMP_LINE_LOSS_DB = 20.0  # fiber-to-chip coupling and cryostat line loss to the device [M]
PUMP_ABSORBED_FRACTION = 0.1  # share of the pump at the device dissipated in the MXC [M]
HOT_BATH_COEFF = 1.1  # n_hot = 1.1 n_c^0.3, Ren et al. 2020 [V]
HOT_BATH_EXPONENT = 0.3
# No scale factor here: a device whose heating departs from Ren 2020 says so in its profile
# (``profiles.py``, ``hot_bath_scale`` with its reason).
GAMMA_M_HZ = 150e3  # mechanical linewidth gamma_m / 2pi, Meesala 2024 SI [V]
HOT_BATH_TURN_ON_S = 740e-9  # Meenehan 2015 [V]
# Meesala 2024's collection 0.055 includes their detector setup's 0.83; detectors are counted at
# the heralding station, so the node's chain ends at the fiber: 0.055 / 0.83 [D]
OPTICAL_COLLECTION_EFF = 0.055 / 0.83
PD_RESPONSIVITY_V_PER_W = 1.0e4  # photodiode + transimpedance at the reflection port [M]
PD_NOISE_V = 2e-4  # rms photodiode noise per reading [M]
LASER_MIN_DBM, LASER_MAX_DBM = -10.0, 13.0  # N777xC-class output range [V]

# --- Heralding (docs/physics.md §2) ----------------------------------------------------------
ALPHA_DEFAULT = 0.05  # bright-state population [M] typical 0.03-0.1
VISIBILITY = 0.9  # two-photon interference visibility [V] 0.79-0.9
PHASE_NOISE_RAD = 0.1  # rms optical phase error sigma_phi [V]
QUBIT_T2_S = 300e-6  # transmon communication-qubit coherence [M]
SWAP_DURATION_S = 200e-9  # nominal qubit -> transducer swap pulse [M]

# --- Fiber (docs/physics.md §2.1) ------------------------------------------------------------
FIBER_LOSS_DB_PER_KM = 0.2  # standard SMF at 1550 nm [M]; 0.17 ULL [V]
FIBER_DELAY_S_PER_KM = 5.0e-6  # group index ~1.47 [D]

# --- Detectors and time tagger (docs/physics.md §5) ------------------------------------------
SNSPD_EFFICIENCY = 0.90  # system detection efficiency [V] best 0.98
SNSPD_DARK_HZ = 10.0  # dark count rate [V] 0.01-130 Hz
SNSPD_JITTER_FWHM_PS = 20.0  # timing jitter [V]
SNSPD_DEAD_TIME_S = 40e-9  # reset time, Marsili 2013 [V]
SNSPD_BIAS_NOMINAL_UA = 10.0  # operating bias [M]
SNSPD_BIAS_KNEE_UA = 7.0  # sigmoid centre of efficiency vs bias [M]
SNSPD_BIAS_WIDTH_UA = 1.0  # sigmoid width [V] erf form
SNSPD_SWITCHING_UA = 14.0  # latches above the switching current [M]
SNSPD_PULSE_AMPLITUDE_V = 0.4  # readout pulse height; trigger must sit below it [M]
TAGGER_JITTER_RMS_PS = 9.0  # time tagger rms jitter [M]


def fwhm_to_sigma(fwhm: float) -> float:
    """Gaussian FWHM to standard deviation."""
    return fwhm / 2.354820045
