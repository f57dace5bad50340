"""Device profiles: the simulated lab as today's hardware (``sota-2025``) or the target
(``target-2030``), every value with its source.

A profile fixes what a lab cannot tune: the transducer's couplings, readout and heating, the
optics after it, the detectors, the fiber and the memory. What the lab *does* tune (pump power,
pulse length, bright-state population, detector bias) is chosen by the calibration for the
device in hand. Select a profile with ``x-lab: {profile: NAME}`` in a lab file (and so in a
station on that lab file), the pytest plugin's ``--qnetlab-profile`` (or
``sim_lab(name, profile=NAME)``), or ``qnetlab demo|calibrate|entangle|roadmap --profile NAME``
(which puts the station's simulated labs on it, ``QnetlabVisaLibrary.use_profile``).

Tags (docs/physics.md): *measured* (a published measurement), *design* (a published design or
a value derived from measured ones) or *target* (an assumption about a future device, with its
reason). Facts and sources: the research notes, physics.md ("Device profiles").
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

#: the profile of a lab file without ``profile:`` (the built-in behaviour, a target device)
DEFAULT_PROFILE = "target-2030"

ELECTRO_OPTIC = "electro-optic"
PIEZO_OPTOMECHANICAL = "piezo-optomechanical"

# Meesala 2024's optical collection 0.055 includes their SNSPD setup's 0.83; the heralding
# station multiplies by its own detectors' efficiency, so the node's chain stops at the fiber.
_COLLECTION_NO_DETECTOR = 0.055 / 0.83


@dataclass(frozen=True)
class DeviceProfile:
    """Every device parameter of a node, its optics, detectors, fiber and memory.

    ``sources`` maps each field name to ``"<tag>: <source>"`` (tag measured / design /
    target); :func:`check_sources` keeps that complete."""

    name: str
    summary: str
    readout: str  # ELECTRO_OPTIC: converted mode lives 1/(kappa_e (1+C)); PIEZO: 1/(C gamma_m)
    single_photon_cooperativity: float
    kappa_o_ex_hz: float
    kappa_o_i_hz: float
    kappa_e_ex_hz: float
    kappa_e_i_hz: float
    gamma_m_hz: float
    hot_bath_coeff: float
    hot_bath_exponent: float
    hot_bath_scale: float
    hot_bath_turn_on_s: float
    added_noise_floor: float
    pump_line_loss_db: float
    pump_absorbed_fraction: float
    collection: float
    snspd_efficiency: float
    snspd_dark_hz: float
    snspd_jitter_fwhm_ps: float
    fiber_loss_db_per_km: float
    qubit_t2_s: float
    visibility: float
    phase_noise_rad: float
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.readout not in (ELECTRO_OPTIC, PIEZO_OPTOMECHANICAL):
            raise ValueError(f"readout={self.readout!r}: allowed {ELECTRO_OPTIC!r} or "
                             f"{PIEZO_OPTOMECHANICAL!r}")

    def values(self) -> dict[str, float | str]:
        """Every parameter (not the sources), for reports and records."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sources"}


def parameter_names() -> list[str]:
    """The device parameters a profile must source (every field but name, summary, sources)."""
    return [f.name for f in fields(DeviceProfile) if f.name not in ("name", "summary", "sources")]


_COMMON_SOURCES = {
    "kappa_o_ex_hz": "measured: Meesala et al. 2024 (PRX) SI, kappa_o,ex/2pi = 650 MHz",
    "kappa_o_i_hz": "measured: Meesala et al. 2024 SI, kappa_o,i/2pi = 650 MHz",
    "kappa_e_ex_hz": "measured: Meesala et al. 2024 SI, kappa_e,ex/2pi = 1.2 MHz",
    "kappa_e_i_hz": "measured: Meesala et al. 2024 SI, kappa_e,i/2pi = 550 kHz",
    "gamma_m_hz": "measured: Meesala et al. 2024 SI, gamma_m/2pi = 150 kHz",
    "hot_bath_coeff": "measured: Ren et al., Nat. Commun. 2020, n_hot = 1.1 n_c^0.3 (Fig. 4)",
    "hot_bath_exponent": "measured: Ren et al. 2020, exponent 0.3",
    "hot_bath_turn_on_s": "measured: Meenehan et al. 2015, hot bath turns on in ~740 ns",
    "pump_line_loss_db": "design: fiber-to-chip coupling and cryostat lines, 20 dB (assumed, "
                         "literature range; not a single measurement)",
    "pump_absorbed_fraction": "design: 10 % of the pump at the device dissipated on the MXC "
                              "(heat-budget form of Blesin/Kippenberg 2024; fraction assumed)",
    "collection": "design: Meesala et al. 2024 optical chain 0.055 divided by their detector "
                  "setup's 0.83 (detectors counted once, at the heralding station)",
    "snspd_dark_hz": "measured: commercial SNSPD systems 1-100 Hz (Marsili 2013 ~1 Hz system)",
    "snspd_jitter_fwhm_ps": "measured: commercial SNSPDs 15-50 ps FWHM (Zadeh 2017 14.8 ps)",
    "phase_noise_rad": "measured: rms optical phase error 0.1 rad of stabilised single-click "
                       "links (Hermans et al. 2022)",
}

SOTA_2025 = DeviceProfile(
    name="sota-2025",
    summary="published state of the art 2025: piezo-optomechanical transducer (~1 % "
            "efficiency, ~0.5 added photons), today's optics, detectors and memory",
    readout=PIEZO_OPTOMECHANICAL,
    single_photon_cooperativity=1.5e-3,
    kappa_o_ex_hz=650e6, kappa_o_i_hz=650e6, kappa_e_ex_hz=1.2e6, kappa_e_i_hz=550e3,
    gamma_m_hz=150e3,
    hot_bath_coeff=1.1, hot_bath_exponent=0.3, hot_bath_scale=1.0, hot_bath_turn_on_s=740e-9,
    added_noise_floor=0.16,
    pump_line_loss_db=20.0, pump_absorbed_fraction=0.1,
    collection=_COLLECTION_NO_DETECTOR,
    snspd_efficiency=0.90, snspd_dark_hz=10.0, snspd_jitter_fwhm_ps=20.0,
    fiber_loss_db_per_km=0.20,
    qubit_t2_s=300e-6, visibility=0.9, phase_noise_rad=0.1,
    sources={
        **_COMMON_SOURCES,
        "added_noise_floor": "measured: 0.16 photons, the lowest added noise of a pulsed "
                             "transducer with a qubit (Sahu 2022); the hot-bath law alone "
                             "predicts less for pulses far shorter than 740 ns, which no "
                             "published device reaches (other heating: microwave lines, pump "
                             "scatter, quasiparticles)",
        "readout": "measured: piezo-optomechanical devices with qubits (Meesala 2024, Weaver "
                   "2024); the phonon is read out at ~C gamma_m",
        "single_photon_cooperativity": "design: 4 g_om^2/(kappa_o gamma_m), g_om/2pi = 270 kHz, "
                                       "gamma_m/2pi = 150 kHz (Meesala 2024 SI)",
        "hot_bath_scale": "measured: 1, Ren et al. 2020's law as published",
        "snspd_efficiency": "measured: commercial SNSPD system efficiency 0.85-0.93",
        "fiber_loss_db_per_km": "measured: standard SMF-28 at 1550 nm, 0.2 dB/km",
        "qubit_t2_s": "measured: transmon communication qubits, T2 ~ 100-300 us (literature "
                      "range; check before citing)",
        "visibility": "measured: two-photon interference of converted photons 0.79-0.9",
    },
)

TARGET_2030 = replace(  # what differs from today's device; the rest is kept, with its reason
    SOTA_2025,
    name="target-2030",
    summary="2030 target: electro-optic-like transducer with absorption heating 20x below "
            "Ren 2020 (N_add ~ 0.005-0.05), today's optics, detectors and memory",
    readout=ELECTRO_OPTIC,
    hot_bath_scale=0.05,
    added_noise_floor=0.0,
    sources={
        **_COMMON_SOURCES,
        "readout": "target: electro-optic-like conversion (no mechanical intermediary), as in "
                   "Sahu 2022 / Chiappina 2023 designs; converted mode lives 1/(kappa_e (1+C))",
        "single_photon_cooperativity": "design: same couplings as sota-2025 (Meesala 2024 SI), "
                                       "so C ~ 1 at microwatt pump powers",
        "added_noise_floor": "target: 0, no noise beyond the (reduced) hot bath and the "
                             "fridge's thermal occupation",
        "hot_bath_scale": "target: 0.05, absorption heating 20x below Ren 2020 (better thermal "
                          "anchoring, cf. Mayor 2024: n < 0.45 at 3 MHz repetition); puts "
                          "short-pulse N_add near the < 0.012 of arXiv:2602.00928 and the "
                          "IBM 2025 ask of 1000x below 0.5",
        "snspd_efficiency": "measured: 0.90 kept (commercial); 0.98 best (Reddy 2020)",
        "fiber_loss_db_per_km": "measured: 0.2 dB/km kept (0.17 ULL available)",
        "qubit_t2_s": "measured: 300 us kept (the 1 ms of the notes' target is not assumed)",
        "visibility": "measured: 0.9 kept (top of the 0.79-0.9 range)",
    },
)

PROFILES: dict[str, DeviceProfile] = {p.name: p for p in (SOTA_2025, TARGET_2030)}


def check_sources(profile: DeviceProfile) -> list[str]:
    """Parameters of ``profile`` without a source tagged measured / design / target."""
    tags = ("measured:", "design:", "target:")
    return [n for n in parameter_names()
            if not str(profile.sources.get(n, "")).startswith(tags)]


def get_profile(name: str | None) -> DeviceProfile:
    """The profile called ``name`` (None: :data:`DEFAULT_PROFILE`); a one-line error otherwise."""
    key = DEFAULT_PROFILE if name in (None, "") else str(name)
    if key not in PROFILES:
        raise ValueError(f"profile={key!r} is not a device profile; allowed: "
                         f"{', '.join(sorted(PROFILES))}")
    return PROFILES[key]


def lab_profile(config_profile: str | None, chosen: str | None = None) -> DeviceProfile:
    """A lab's profile: ``chosen`` (a test's or the command line's), else the lab file's
    ``profile:``, else the default."""
    return get_profile(chosen or config_profile)
