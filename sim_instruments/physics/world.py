"""The simulated lab as one physical world: nodes, heralding stations, links, one clock.

Built from a lab file's ``x-lab`` section. Every instrument of that lab file reads and changes
this world, so what one instrument answers depends on what was set on another (the pump laser
heats the fridge; the fridge interlock cuts the laser; detector settings at the midpoint decide
the herald rate). Hidden true parameters are drawn from the lab seed around documented defaults
and drift slowly in lab time; :meth:`Lab.truth` exposes them to tests, never to drivers.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qnetlab.clock import VirtualClock

from . import constants as k_
from .cryostat import DilutionFridge
from .detectors import Fiber, Snspd
from .drift import DriftingValue
from .heralding import HeraldSetup, NodeOptics
from .profiles import DeviceProfile, get_profile, lab_profile
from .transducer import PumpState, Transducer

#: The one node of a bare instrument YAML (a file without ``x-lab``): its resources belong to it.
DEFAULT_NODE = "node"


def one_node_lab(name: str) -> dict[str, Any]:
    """The ``x-lab`` of a file that has none (a bare instrument YAML): one node,
    :data:`DEFAULT_NODE`, so that each instrument in it works with its physics."""
    return {"name": name, "nodes": [DEFAULT_NODE], "stations": []}


def stream_seed(seed: int, *names: str) -> list[int]:
    """A reproducible seed sequence for a named random stream of the lab."""
    return [seed, *(zlib.crc32(n.encode()) for n in names)]


@dataclass
class AomSettings:
    """The pump's acousto-optic modulator: CW, closed (``OFF``: no pump light reaches the
    transducer), or pulses of ``width_s`` every ``period_s`` (internal trigger) or one per
    entanglement attempt (``trigger == "EXT"``). Written by the node's gate generator model."""

    mode: str = "CW"  # CW, PULS, BURS, OFF
    width_s: float = 100e-9
    period_s: float = 20e-6
    trigger: str = "IMM"  # IMM, EXT, BUS


@dataclass
class Node:
    """A network node: cryostat, transducer with its pump, communication qubit."""

    name: str
    seed: int
    fridge: DilutionFridge = field(default_factory=DilutionFridge)
    pump: PumpState = field(default_factory=PumpState)
    bias_ma: float = 0.0
    swap_amplitude: float = 0.5
    swap_duration_s: float = k_.SWAP_DURATION_S
    alpha: float = k_.ALPHA_DEFAULT
    qubit_hz: float = k_.QUBIT_FREQUENCY_HZ
    pumped_fraction: float = 1.0  # share of attempts that coincide with a pump pulse
    aom: AomSettings = field(default_factory=AomSettings)
    pd_log: np.ndarray = field(default_factory=lambda: np.zeros(0))
    profile: DeviceProfile = field(default_factory=lambda: get_profile(None))

    def __post_init__(self) -> None:
        rng = np.random.default_rng(stream_seed(self.seed, self.name, "truth"))
        p = self.profile
        s = lambda *n: stream_seed(self.seed, self.name, *n)  # noqa: E731
        res_nm = k_.OPTICAL_RESONANCE_NM + rng.normal(0.0, 0.03)
        self.resonance_m = DriftingValue(res_nm * 1e-9, 0.3e-12, s("resonance"))  # 0.3 pm/sqrt(h)
        self.bias_offset_ma = DriftingValue(rng.normal(0.2, 0.1), 0.5e-3, s("bias"))
        self.swap_opt = DriftingValue(rng.uniform(0.55, 0.75), 0.002, s("swap"))
        self.t2_s = p.qubit_t2_s * rng.uniform(0.9, 1.1)
        self.kappa_ex_hz = p.kappa_o_ex_hz * rng.uniform(0.85, 1.0)
        self.kappa_i_hz = p.kappa_o_i_hz * rng.uniform(1.0, 1.15)

    def transducer(self, t: float) -> Transducer:
        p = self.profile
        return Transducer(
            resonance_m=self.resonance_m(t),
            kappa_ex_hz=self.kappa_ex_hz,
            kappa_i_hz=self.kappa_i_hz,
            kappa_e_ex_hz=p.kappa_e_ex_hz,
            kappa_e_i_hz=p.kappa_e_i_hz,
            c0=p.single_photon_cooperativity,
            bias_offset_ma=self.bias_offset_ma(t),
            line_loss_db=p.pump_line_loss_db,
            absorbed_fraction=p.pump_absorbed_fraction,
            readout=p.readout,
            gamma_m_hz=p.gamma_m_hz,
            hot_bath_coeff=p.hot_bath_coeff,
            hot_bath_exponent=p.hot_bath_exponent,
            hot_bath_scale=p.hot_bath_scale,
            hot_bath_turn_on_s=p.hot_bath_turn_on_s,
            added_noise_floor=p.added_noise_floor,
        )

    @property
    def collection(self) -> float:
        """Transducer output -> the node's fiber (detectors are counted at the station)."""
        return self.profile.collection

    def swap_efficiency(self, t: float) -> float:
        """Rabi-like swap: sin^2(pi/2 * A/A_opt * tau/tau_nom)."""
        theta = math.pi / 2 * (self.swap_amplitude / self.swap_opt(t))
        return math.sin(theta * self.swap_duration_s / k_.SWAP_DURATION_S) ** 2

    def conversion_efficiency(self, t: float) -> float:
        return self.transducer(t).efficiency(self.pump, self.bias_ma, self.qubit_hz)

    def added_noise(self, t: float) -> float:
        return self.transducer(t).added_noise(self.pump, self.fridge.mxc_k, self.bias_ma)

    def photon_source_efficiency(self, t: float) -> float:
        """Qubit excitation -> photon in the output fiber, per attempt."""
        return (
            self.swap_efficiency(t)
            * self.conversion_efficiency(t)
            * self.collection
            * self.pumped_fraction
        )

    def photon_sigma_s(self, t: float) -> float:
        """Temporal width of the emitted photon, set by the converted mode's bandwidth."""
        c = self.transducer(t).cooperativity(self.pump)
        p = self.profile
        return 1.0 / (2 * math.pi * (p.kappa_e_ex_hz + p.kappa_e_i_hz) * (1 + c))


@dataclass
class DetectorChannel:
    detector: Snspd
    enabled: bool = True
    bias_ua: float = k_.SNSPD_BIAS_NOMINAL_UA
    trigger_v: float = 0.1
    delay_set_ps: float = 0.0  # time-tagger input delay (compensation)

    def efficiency(self) -> float:
        return self.detector.efficiency(self.enabled, self.bias_ua, self.trigger_v)

    def dark_hz(self) -> float:
        return self.detector.dark_rate_hz(self.enabled, self.bias_ua, self.trigger_v)


@dataclass
class HeraldingStation:
    """A heralding station: beam splitter, two SNSPDs, a time tagger."""

    name: str
    seed: int
    herald_window_ps: float = 200_000.0
    profile: DeviceProfile = field(default_factory=lambda: get_profile(None))

    def __post_init__(self) -> None:
        rng = np.random.default_rng(stream_seed(self.seed, self.name, "truth"))
        p = self.profile
        self.channels = [
            DetectorChannel(Snspd(efficiency_sat=p.snspd_efficiency, dark_hz=p.snspd_dark_hz,
                                  jitter_fwhm_ps=p.snspd_jitter_fwhm_ps,
                                  knee_ua=rng.normal(k_.SNSPD_BIAS_KNEE_UA, 0.3)))
            for _ in range(2)
        ]
        s = lambda *n: stream_seed(self.seed, self.name, *n)  # noqa: E731
        # cable + electronics delay between the sync and a photon's arrival, per detector
        self.arrival_ps = [
            DriftingValue(rng.uniform(20e3, 80e3), 2.0, s("delay", str(i))) for i in range(2)
        ]

    def window_acceptance(self, t: float, sigma_s: float) -> float:
        """Fraction of photons inside the herald window, averaged over both detectors."""
        sigma_ps = math.hypot(sigma_s * 1e12, self.profile.snspd_jitter_fwhm_ps / 2.3548)
        half = self.herald_window_ps / 2
        acc = []
        for ch, arrival in zip(self.channels, self.arrival_ps, strict=True):
            offset = arrival(t) - ch.delay_set_ps
            z1 = (half - offset) / (sigma_ps * math.sqrt(2))
            z0 = (-half - offset) / (sigma_ps * math.sqrt(2))
            acc.append(0.5 * (math.erf(z1) - math.erf(z0)))
        return float(np.mean(acc))

    def detection_efficiency(self) -> float:
        return float(np.mean([ch.efficiency() for ch in self.channels]))

    def dark_click_probability(self) -> float:
        return sum(ch.dark_hz() for ch in self.channels) * self.herald_window_ps * 1e-12


@dataclass
class EngineSettings:
    protocol: str = "SING"
    attempt_rate_hz: float = 50e3


@dataclass
class Link:
    name: str
    node_a: Node
    node_b: Node
    station: HeraldingStation
    fiber_a: Fiber
    fiber_b: Fiber
    seed: int
    phase_set_rad: float = 0.0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(stream_seed(self.seed, self.name, "truth"))
        self.phase_true = DriftingValue(rng.uniform(0, 2 * math.pi), 0.05, stream_seed(
            self.seed, self.name, "phase"))

    def peer_of(self, node: Node) -> Node:
        return self.node_b if node is self.node_a else self.node_a

    def fiber_of(self, node: Node) -> Fiber:
        return self.fiber_a if node is self.node_a else self.fiber_b

    def phase_error(self, t: float) -> float:
        return (self.phase_set_rad - self.phase_true(t) + math.pi) % (2 * math.pi) - math.pi

    def round_trip_s(self) -> float:
        """Photon to the station and herald back, for the farther node."""
        return 2 * max(self.fiber_a.delay_s, self.fiber_b.delay_s)

    def attempt_period_s(self, engine: EngineSettings, swap_s: float) -> float:
        return max(1.0 / engine.attempt_rate_hz, self.round_trip_s() + swap_s)

    def optics(self, node: Node, t: float) -> NodeOptics:
        st = self.station
        accept = st.window_acceptance(t, node.photon_sigma_s(t))
        channel = self.fiber_of(node).transmission * st.detection_efficiency() * accept
        eta = node.photon_source_efficiency(t) * channel
        noise_photons = (
            node.added_noise(t)
            * node.conversion_efficiency(t)
            * node.collection
            * node.pumped_fraction
        )
        return NodeOptics(eta=eta, alpha=node.alpha, noise_click=noise_photons * channel,
                          t2_s=node.t2_s)

    def herald_setup(self, engine: EngineSettings, t: float) -> HeraldSetup:
        swap_s = max(self.node_a.swap_duration_s, self.node_b.swap_duration_s)
        return HeraldSetup(
            protocol=engine.protocol,
            a=self.optics(self.node_a, t),
            b=self.optics(self.node_b, t),
            dark_click=self.station.dark_click_probability(),
            visibility=self.node_a.profile.visibility,
            phase_error_rad=self.phase_error(t),
            phase_noise_rad=self.node_a.profile.phase_noise_rad,
            attempt_period_s=self.attempt_period_s(engine, swap_s),
            wait_s=self.round_trip_s(),
        )


class Lab:
    """One simulated lab: the world behind every instrument of one lab file."""

    def __init__(self, config: dict[str, Any], clock: VirtualClock | None = None,
                 seed: int | None = None, profile: str | None = None) -> None:
        self.config = config
        self.clock = clock or VirtualClock()
        self.seed = int(seed if seed is not None else config.get("seed", 0))
        self.name = str(config.get("name", "lab"))
        #: the device profile (``profile`` if given, else ``x-lab: {profile: ...}``)
        self.profile = lab_profile(config.get("profile"), profile)
        self.nodes: dict[str, Node] = {
            n: Node(n, self.seed, profile=self.profile) for n in _as_list(config.get("nodes", []))
        }
        self.stations: dict[str, HeraldingStation] = {
            n: HeraldingStation(n, self.seed, profile=self.profile)
            for n in _as_list(config.get("stations", []))
        }
        self.links: dict[str, Link] = {}
        for name, spec in (config.get("links") or {}).items():
            a, b = spec["nodes"]
            km = spec.get("fiber_km", [1.0, 1.0])
            self.links[name] = Link(
                name, self.nodes[a], self.nodes[b], self.stations[spec["station"]],
                Fiber(float(km[0]), self.profile.fiber_loss_db_per_km),
                Fiber(float(km[1]), self.profile.fiber_loss_db_per_km), self.seed,
            )
        self.engines: dict[str, EngineSettings] = {n: EngineSettings() for n in self.nodes}
        #: the instrument models' request bookkeeping (``models.link_requests.LinkLayer``),
        #: made by the first QNU model that needs it
        self.link_layer: Any = None

    def rng(self, *names: str) -> np.random.Generator:
        return np.random.default_rng(stream_seed(self.seed, *names))

    def now(self) -> float:
        return self.clock.now()

    def sync(self) -> float:
        """Bring every time-dependent state up to the clock; returns the time."""
        t = self.clock.now()
        for node in self.nodes.values():
            if node.fridge.t < t:
                self._apply_pump_load(node, node.fridge.t)
                node.fridge.advance(t)
            self._interlock_line(node)
        return t

    @staticmethod
    def _interlock_line(node: Node) -> None:
        """The fridge controller's interlock line drives the laser's remote interlock input:
        while tripped the laser cannot emit, and a trip switches a lit laser off for good."""
        ok = node.fridge.interlock == "OK"
        if not ok and node.pump.output_on:
            node.pump.output_on = False
            node.pump.interlock_cut = True
        node.pump.interlock_ok = ok

    def refresh_pulsing(self, node: Node) -> None:
        """Derive pump duty cycle and pulse width from the AOM and the attempt rate."""
        aom, rate = node.aom, self.engines[node.name].attempt_rate_hz
        if aom.mode == "CW":
            node.pump.duty_cycle, node.pump.pulse_s, node.pumped_fraction = 1.0, None, 1.0
            return
        if aom.mode == "OFF":
            node.pump.duty_cycle, node.pump.pulse_s, node.pumped_fraction = 0.0, None, 0.0
            return
        pulse_rate = rate if aom.trigger == "EXT" else 1.0 / aom.period_s
        node.pump.pulse_s = aom.width_s
        node.pump.duty_cycle = min(1.0, aom.width_s * pulse_rate)
        node.pumped_fraction = min(1.0, pulse_rate / rate)

    def _apply_pump_load(self, node: Node, t: float) -> None:
        node.fridge.pump_absorbed_w = node.transducer(t).heat_load_w(node.pump)

    def node_links(self, node: str) -> list[Link]:
        return [lk for lk in self.links.values() if node in (lk.node_a.name, lk.node_b.name)]

    def station_links(self, station: str) -> list[Link]:
        return [lk for lk in self.links.values() if lk.station.name == station]

    def truth(self, at: float | None = None) -> dict[str, Any]:
        """Hidden true parameters now, or the drifting ones as of lab time ``at`` (for tests
        and reports only; the fridge entry is always the present state)."""
        now = self.sync()
        t = now if at is None else at
        out: dict[str, Any] = {"t": t, "profile": self.profile.name, "nodes": {},
                               "stations": {}, "links": {}}
        for n, node in self.nodes.items():
            out["nodes"][n] = {
                "resonance_nm": node.resonance_m(t) * 1e9,
                "bias_offset_ma": node.bias_offset_ma(t),
                "swap_amplitude_opt": node.swap_opt(t),
                "t2_s": node.t2_s,
                "kappa_ex_hz": node.kappa_ex_hz,
                "kappa_i_hz": node.kappa_i_hz,
                "mxc_k": node.fridge.mxc_at(t) if t < now else node.fridge.mxc_k,
            }
        for s, st in self.stations.items():
            out["stations"][s] = {
                "arrival_ps": [a(t) for a in st.arrival_ps],
                "bias_knee_ua": [ch.detector.knee_ua for ch in st.channels],
            }
        for name, lk in self.links.items():
            out["links"][name] = {"phase_rad": lk.phase_true(t) % (2 * math.pi)}
        return out


def _as_list(value: Any) -> list[str]:
    if isinstance(value, dict):
        return list(value)
    return list(value or [])
