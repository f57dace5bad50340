"""QNU behaviour: transducer readout, qubit interface, detectors, time tagger, link layer."""

from __future__ import annotations

import math

import numpy as np

from qnetlab.sim_instruments.physics import constants as k_
from qnetlab.sim_instruments.physics.detectors import Snspd
from qnetlab.sim_instruments.physics.heralding import basis_vector
from qnetlab.sim_instruments.physics.timetags import ChannelSpec, generate_stream, histogram
from qnetlab.sim_instruments.physics.world import DetectorChannel, HeraldingStation, Link
from qnetlab.sim_instruments.protocol import InstrumentRefusal, ieee_block

from .base import DeviceModel
from .linklayer import LinkLayer, request_tags, swap
from .pump_laser import current_reflection_power

MAX_RECORDED_TAGS = 20_000_000


class Recording:
    """One time-tagger acquisition: its parameters frozen at start, tags made on first read
    (from a running link request when there is one, else from the click probabilities)."""

    def __init__(self, t0: float, duration: float, sync_hz: float, specs: list[ChannelSpec],
                 rng: np.random.Generator, source=None) -> None:
        self.t0, self.duration, self.sync_hz, self.specs, self.rng = t0, duration, sync_hz, specs, rng
        self.source = source
        self._tags: tuple[np.ndarray, np.ndarray] | None = None

    def tags(self) -> tuple[np.ndarray, np.ndarray]:
        if self._tags is None:
            if self.source is not None:
                self._tags = self.source(self.rng)
            else:
                self._tags = generate_stream(self.rng, self.duration, self.sync_hz, self.specs,
                                             t0_ps=round(self.t0 * 1e12))
        return self._tags


class QnuModel(DeviceModel):
    MODEL = "QNU-1"

    def setup(self) -> None:
        self.node = self.lab.nodes.get(self.binding.get("node", ""))
        self.station: HeraldingStation | None = self.lab.stations.get(self.binding.get("station", ""))
        if self.node is None and self.station is None:
            raise ValueError(f"QNU {self.resource}: x-bind needs a node or a station")
        if self.station is not None:
            self.detectors = self.station.channels
            self.links: list[Link] = []
        else:
            self.detectors = [DetectorChannel(Snspd()) for _ in range(2)]
            self.links = self.lab.node_links(self.node.name)
        self.layer = LinkLayer.of(self.lab)
        self._rng = self.lab.rng(self.resource, "measurements")
        self.on_reset()

    def on_reset(self) -> None:
        self.recording: Recording | None = None

    def apply(self) -> None:
        self.lab.sync()
        for i, ch in enumerate(self.detectors, start=1):
            ch.enabled = bool(self.stored("det_enabled", str(i)))
            ch.bias_ua = float(self.stored("det_bias", str(i)))
            ch.trigger_v = float(self.stored("det_trigger", str(i)))
            ch.delay_set_ps = float(self.stored("input_delay", str(i)))
        if self.station is not None:
            self.station.herald_window_ps = float(self.stored("herald_window"))
            return
        node = self.node
        node.bias_ma = float(self.stored("bias"))
        node.swap_amplitude = float(self.stored("swap_amplitude"))
        node.swap_duration_s = float(self.stored("swap_duration"))
        node.alpha = float(self.stored("alpha"))
        engine = self.lab.engines[node.name]
        engine.protocol = str(self.stored("protocol"))
        engine.attempt_rate_hz = float(self.stored("attempt_rate"))
        self.lab.refresh_pulsing(node)

    def _change(self, name: str, value: object, ch: str | None = None) -> object:
        self.lab.sync()
        self.device.store(name, value, ch)
        self.apply()
        return value

    def _require_node(self, what: str) -> None:
        if self.node is None:
            raise InstrumentRefusal("execution_error", f"{what}: this QNU is a heralding station "
                                    "without a transducer or qubit")

    def _integrate(self, seconds: float) -> float:
        """A measurement that takes ``seconds`` of lab time; returns the time it started."""
        t = self.now()
        self.lab.wait(seconds)
        return t

    # --- transducer ----------------------------------------------------------------------
    def pd_voltage(self) -> float:
        if self.node is None:
            return float(self._rng.normal(0.0, k_.PD_NOISE_V))
        power = current_reflection_power(self.node, self.now())
        return k_.PD_RESPONSIVITY_V_PER_W * power + float(self._rng.normal(0.0, k_.PD_NOISE_V))

    def pd_log_points(self) -> str:
        return str(0 if self.node is None else self.node.pd_log.size)

    def pd_log_data(self) -> bytes:
        log = np.zeros(0) if self.node is None else self.node.pd_log
        return ieee_block(log, "<f8")

    def set_bias(self, value: float) -> float:
        return self._change("bias", value)  # type: ignore[return-value]

    def mw_frequency(self) -> float:
        self._require_node("XDUC:MW:FREQ?")
        t = self._integrate(0.05)
        f = self.node.transducer(t).mw_frequency_hz(self.node.bias_ma)
        return f + float(self._rng.normal(0.0, 20e3))

    def measured_efficiency(self) -> float:
        self._require_node("XDUC:EFF?")
        dur = float(self.stored("measure_time"))
        t = self._integrate(dur)
        eta = self.node.conversion_efficiency(t)
        return max(0.0, eta * (1 + self._rng.normal(0.0, 0.03 / math.sqrt(dur)))
                   + self._rng.normal(0.0, 1e-5 / math.sqrt(dur)))

    def measured_added_noise(self) -> float:
        self._require_node("XDUC:NADD?")
        dur = float(self.stored("measure_time"))
        t = self._integrate(dur)
        if not self.node.pump.emitting:
            return max(0.0, float(self._rng.normal(0.0, 0.005 / math.sqrt(dur))))
        n = self.node.added_noise(t)
        return max(0.0, n * (1 + self._rng.normal(0.0, 0.05 / math.sqrt(dur))))

    def pump_power(self) -> float:
        if self.node is None:
            return 0.0
        t = self.now()
        return self.node.transducer(t).pump_at_device_w(self.node.pump.peak_w())

    # --- qubit interface -----------------------------------------------------------------
    def qubit_frequency(self) -> float:
        return self.node.qubit_hz if self.node is not None else 0.0

    def set_swap_amplitude(self, value: float) -> float:
        return self._change("swap_amplitude", value)  # type: ignore[return-value]

    def set_swap_duration(self, value: float) -> float:
        return self._change("swap_duration", value)  # type: ignore[return-value]

    def set_alpha(self, value: float) -> float:
        return self._change("alpha", value)  # type: ignore[return-value]

    def swap_measure(self) -> float:
        self._require_node("QUB:SWAP:MEAS?")
        shots = int(self.stored("swap_shots"))
        t = self._integrate(shots * 100e-6)
        p = self.node.swap_efficiency(t)
        return self._rng.binomial(shots, min(max(p, 0.0), 1.0)) / shots

    def qubit_t2(self) -> float:
        if self.node is None:
            return 0.0
        spread = self.lab.rng(self.node.name, "t2-characterisation").normal(0.0, 0.03)
        return self.node.t2_s * (1 + spread)

    # --- detectors -----------------------------------------------------------------------
    def _detector(self, ch: str) -> DetectorChannel:
        return self.detectors[int(ch) - 1]

    def set_det_enabled(self, ch: str, value: int) -> int:
        return self._change("det_enabled", value, ch)  # type: ignore[return-value]

    def set_det_bias(self, ch: str, value: float) -> float:
        return self._change("det_bias", value, ch)  # type: ignore[return-value]

    def set_det_trigger(self, ch: str, value: float) -> float:
        return self._change("det_trigger", value, ch)  # type: ignore[return-value]

    def det_state(self, ch: str) -> str:
        d = self._detector(ch)
        return d.detector.state(d.enabled, d.bias_ua)

    def det_count_rate(self, ch: str) -> float:
        self._integrate(1.0)
        return float(self._rng.poisson(self._detector(ch).dark_hz()))

    # --- time tagger ---------------------------------------------------------------------
    def set_input_delay(self, ch: str, value: int) -> int:
        return self._change("input_delay", value, ch)  # type: ignore[return-value]

    def _tagger_link(self) -> Link | None:
        if self.station is not None:
            links = self.lab.station_links(self.station.name)
            return links[0] if links else None
        return None

    def _sync_hz(self) -> float:
        link = self._tagger_link()
        if link is not None:
            engine = self.lab.engines[link.node_a.name]
            return 1.0 / link.attempt_period_s(engine, link.node_a.swap_duration_s)
        if self.node is not None:
            return self.lab.engines[self.node.name].attempt_rate_hz
        return 0.0

    def input_count_rate(self, ch: str) -> float:
        self.now()
        if ch == "0":
            return self._sync_hz()
        return self._detector(ch).dark_hz()

    def _channel_specs(self, t: float) -> list[ChannelSpec]:
        """Per detector: click probability and arrival widths of both nodes' photons (each node
        its own width at its pump setting, weighted by its share of the clicks)."""
        link = self._tagger_link()
        jitter = self.lab.profile.snspd_jitter_fwhm_ps / 2.3548
        specs = []
        for i, det in enumerate(self.detectors, start=1):
            p_click, delay, sigma, widths = 0.0, 0.0, jitter, ()
            if link is not None and det.efficiency() > 0:
                shares = [(self._node_clicks(link, node, det, t),
                           math.hypot(jitter, node.photon_sigma_s(t) * 1e12))
                          for node in (link.node_a, link.node_b)]
                p_click = sum(p for p, _ in shares)
                delay = self.station.arrival_ps[i - 1](t)
                sigma, widths = max(s for _, s in shares), tuple(shares)
            specs.append(ChannelSpec(i, p_click, delay, sigma, det.dark_hz(),
                                     int(det.detector.dead_time_s * 1e12), widths))
        return specs

    def _node_clicks(self, link: Link, node, det: DetectorChannel, t: float) -> float:
        """Click probability per sync on one detector from one node's photons (signal and
        added noise; the beam splitter sends half to each detector)."""
        engine = self.lab.engines[link.node_a.name]
        channel = link.fiber_of(node).transmission * det.efficiency()
        emitted = node.photon_source_efficiency(t)
        photon = node.alpha * emitted if engine.protocol == "SING" else 0.5 * emitted
        noise = (node.added_noise(t) * node.conversion_efficiency(t)
                 * node.collection * node.pumped_fraction)
        return 0.5 * (photon + noise) * channel

    def record_start(self) -> None:
        t = self.now()
        duration = float(self.stored("record_duration"))
        sync = self._sync_hz()
        expected = duration * (sync + sum(d.dark_hz() for d in self.detectors))
        if expected > MAX_RECORDED_TAGS:
            raise InstrumentRefusal("execution_error", f"recording of {expected:.3g} tags exceeds "
                                    f"the buffer ({MAX_RECORDED_TAGS:.0e} tags)")
        rng = self.lab.rng(self.resource, "tags", f"{t:.9f}")
        specs = self._channel_specs(t)
        self.recording = Recording(t, duration, sync, specs, rng, self._request_source(t, duration,
                                                                                       specs))

    def _request_source(self, t: float, duration: float, specs: list[ChannelSpec]):
        """Tags of the link request running on this station's link, if any (last created)."""
        link = self._tagger_link()
        if link is None:
            return None
        running = [r for r in self.layer.requests.values() if r.link is link
                   and r.records is not None and r.t_start <= t < r.end_time()]
        if not running:
            return None
        req = running[-1]
        sigma = max(s.jitter_sigma_ps for s in specs)
        dead = specs[0].dead_time_ps
        station = self.station
        return lambda rng: request_tags(req, station, t, duration, rng, sigma, dead)

    def record_state(self) -> str:
        if self.recording is None:
            return "IDLE"
        return "DONE" if self.lab.clock.now() >= self.recording.t0 + self.recording.duration \
            else "RUNNING"

    def _finished(self) -> Recording:
        state = self.record_state()
        if state != "DONE":
            raise InstrumentRefusal("execution_error", f"no finished recording (state {state})")
        assert self.recording is not None
        return self.recording

    def stream_count(self) -> str:
        if self.recording is None:
            return "0"
        return str(self._finished().tags()[0].size)

    def _slice(self, args: str) -> slice:
        try:
            offset, count = (int(x) for x in args.split(","))
        except ValueError:
            raise InstrumentRefusal("data_type_error", f"expected <offset>,<count>, got {args!r}") \
                from None
        if offset < 0 or count < 0:
            raise InstrumentRefusal("data_out_of_range", f"offset {offset} and count {count} "
                                    "must be >= 0")
        return slice(offset, offset + count)

    def stream_times(self, args: str) -> bytes:
        sl = self._slice(args)
        return ieee_block(self._finished().tags()[0][sl], "<i8")

    def stream_channels(self, args: str) -> bytes:
        sl = self._slice(args)
        return ieee_block(self._finished().tags()[1][sl], "u1")

    def histogram_data(self) -> bytes:
        times, chans = self._finished().tags()
        hist = histogram(times, chans, int(self.stored("hist_start")), int(self.stored("hist_stop")),
                         int(self.stored("hist_bin_width")), int(self.stored("hist_bins")))
        return ieee_block(hist, "<i8")

    # --- entanglement engine and links ---------------------------------------------------
    def set_protocol(self, value: str) -> str:
        return self._change("protocol", value)  # type: ignore[return-value]

    def set_attempt_rate(self, value: float) -> float:
        return self._change("attempt_rate", value)  # type: ignore[return-value]

    def set_herald_window(self, value: float) -> float:
        return self._change("herald_window", value)  # type: ignore[return-value]

    def attempts(self) -> int:
        return 0 if self.node is None else self.layer.attempts(self.node.name)

    def heralds(self) -> int:
        return 0 if self.node is None else self.layer.heralds(self.node.name)

    def _link(self, ch: str) -> Link:
        i = int(ch) - 1
        if i >= len(self.links):
            raise InstrumentRefusal("settings_conflict", f"LINK{ch} is not connected")
        return self.links[i]

    def link_peer(self, ch: str) -> str:
        i = int(ch) - 1
        return self.links[i].peer_of(self.node).name if i < len(self.links) else "NONE"

    def link_fiber(self, ch: str) -> float:
        i = int(ch) - 1
        return self.links[i].fiber_of(self.node).length_km if i < len(self.links) else 0.0

    def set_link_fiber(self, ch: str, value: float) -> float:
        self.lab.sync()
        self._link(ch).fiber_of(self.node).length_km = value
        return value

    def link_swap(self, ch: str, args: str) -> str:
        self._require_node("LINK:SWAP?")
        fields = [f.strip() for f in args.split(",")]
        if len(fields) != 5:
            raise InstrumentRefusal("data_type_error", f"SWAP? needs 5 fields, got {args!r}")
        here, there = self.layer.get(fields[0]), self.layer.get(fields[1])
        if here.link is not self._link(ch):
            raise InstrumentRefusal("settings_conflict", f"request {here.id} is not on LINK{ch}")
        try:
            cutoff = float(fields[2])
        except ValueError:
            raise InstrumentRefusal("data_type_error", f"cutoff {fields[2]!r}") from None
        if not cutoff > 0:
            raise InstrumentRefusal("data_out_of_range", f"cutoff {cutoff} s must be > 0")
        bases = [f.upper().split("/") for f in fields[3:5]]
        for token in bases[0] + bases[1]:
            try:
                basis_vector(token)
            except ValueError as exc:
                raise InstrumentRefusal("data_out_of_range", str(exc)) from None
        rec = swap(self.layer, self.node.name, here, there, cutoff, bases[0], bases[1])
        return str(rec.id)

    def link_swap_results(self, ch: str, args: str) -> bytes:
        return ieee_block(self.layer.get_swap(args).bsm_rows(), "<f8")

    def link_phase(self, ch: str) -> float:
        i = int(ch) - 1
        return self.links[i].phase_set_rad if i < len(self.links) else 0.0

    def set_link_phase(self, ch: str, value: float) -> float:
        self.lab.sync()
        self._link(ch).phase_set_rad = value
        return value

    def link_create(self, ch: str, args: str) -> str:
        self._require_node("LINK:CRE?")
        return str(self.layer.create(self.node.name, self._link(ch), args))

    def link_request(self, ch: str, args: str) -> str:
        self._link(ch)
        return self.layer.status(args)

    def link_results(self, ch: str, args: str) -> bytes:
        self._link(ch)
        return ieee_block(self.layer.results(args, self.node.name), "<f8")
