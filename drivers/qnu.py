"""Quantum Networking Unit: transducer readout, qubit interface, detectors, time tagger,
entanglement engine and link layer (QIRG CREATE / OK vocabulary).

A QNU at a node drives that node's transducer and communication qubit and issues link requests;
a QNU at a heralding station runs the midpoint detectors and time tagger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import qcodes.validators as vals
from qcodes.instrument import ChannelList
from qcodes.parameters import Parameter, ParameterWithSetpoints, create_on_off_val_mapping

from .base import QnetlabChannel, QnetlabModule, QnetlabVisaInstrument, ScpiErrorQueue

if TYPE_CHECKING:
    from typing import Unpack

    from qcodes.instrument import VisaInstrumentKWArgs

BASIS_TOKENS = ("X", "Y", "Z")
RESULT_COLUMNS = ("seq", "herald_time_s", "pattern", "attempts", "basis_index", "outcome")
MAX_RESULT_ROWS = 1_000_000  # the most pairs one request can deliver


def _float_block(instrument: QnetlabVisaInstrument, cmd: str, dtype: str = "<f8") -> np.ndarray:
    return np.frombuffer(instrument._query_binary(cmd), dtype=dtype)


class QNUTransducer(QnetlabModule):
    """Transducer readout: cavity photodiode, microwave-mode bias, efficiency and noise."""

    def __init__(self, parent: QnetlabQNU, name: str) -> None:
        super().__init__(parent, name)
        self.pd_voltage: Parameter = self.add_parameter(
            "pd_voltage", label="Reflection photodiode", unit="V", get_cmd="XDUC:PD:VOLT?",
            get_parser=float, docstring="Optical cavity reflection photodiode.")
        """Optical cavity reflection photodiode."""
        self.bias: Parameter = self.add_parameter(
            "bias", label="Microwave-mode bias", unit="mA", get_cmd="XDUC:MW:BIAS?",
            set_cmd="XDUC:MW:BIAS {:.6f}", get_parser=float, vals=vals.Numbers(-5, 5),
            docstring="Flux bias tuning the microwave mode.")
        """Flux bias tuning the microwave mode."""
        self.mw_frequency: Parameter = self.add_parameter(
            "mw_frequency", label="Microwave-mode frequency", unit="Hz", get_cmd="XDUC:MW:FREQ?",
            get_parser=float, snapshot_get=False,
            docstring="Measured microwave-mode frequency (a 50 ms measurement).")
        """Measured microwave-mode frequency (a 50 ms measurement)."""
        self.measure_time: Parameter = self.add_parameter(
            "measure_time", label="Integration time", unit="s", get_cmd="XDUC:MEAS:TIME?",
            set_cmd="XDUC:MEAS:TIME {:.6g}", get_parser=float, vals=vals.Numbers(0.01, 100),
            docstring="Integration time of efficiency and added-noise measurements.")
        """Integration time of efficiency and added-noise measurements."""
        self.efficiency: Parameter = self.add_parameter(
            "efficiency", label="Conversion efficiency", get_cmd="XDUC:EFF?", get_parser=float,
            snapshot_get=False, docstring="Measured conversion efficiency (takes measure_time).")
        """Measured conversion efficiency (takes measure_time)."""
        self.added_noise: Parameter = self.add_parameter(
            "added_noise", label="Added noise", unit="photons", get_cmd="XDUC:NADD?",
            get_parser=float, snapshot_get=False,
            docstring="Measured input-referred added noise (takes measure_time).")
        """Measured input-referred added noise (takes measure_time)."""
        self.pump_power: Parameter = self.add_parameter(
            "pump_power", label="Pump at device", unit="W", get_cmd="XDUC:PUMP:POW?",
            get_parser=float, docstring="Pump peak power arriving at the transducer.")
        """Pump peak power arriving at the transducer."""

    def pd_log(self) -> np.ndarray:
        """Photodiode voltages logged during the last pump-laser sweep (one per sweep point)."""
        return _float_block(self.root_instrument, "XDUC:PD:LOG:DATA?")  # type: ignore[arg-type]


class QNUQubit(QnetlabModule):
    """Communication-qubit interface: the swap into the transducer and the bright state."""

    def __init__(self, parent: QnetlabQNU, name: str) -> None:
        super().__init__(parent, name)
        self.frequency: Parameter = self.add_parameter(
            "frequency", label="Qubit frequency", unit="Hz", get_cmd="QUB:FREQ?",
            get_parser=float, docstring="Communication-qubit frequency.")
        """Communication-qubit frequency."""
        self.swap_amplitude: Parameter = self.add_parameter(
            "swap_amplitude", label="Swap amplitude", get_cmd="QUB:SWAP:AMPL?",
            set_cmd="QUB:SWAP:AMPL {:.6f}", get_parser=float, vals=vals.Numbers(0, 1),
            docstring="Swap pulse amplitude (full scale 1).")
        """Swap pulse amplitude (full scale 1)."""
        self.swap_duration: Parameter = self.add_parameter(
            "swap_duration", label="Swap duration", unit="s", get_cmd="QUB:SWAP:DUR?",
            set_cmd="QUB:SWAP:DUR {:.6e}", get_parser=float, vals=vals.Numbers(10e-9, 2e-6),
            docstring="Swap pulse duration.")
        """Swap pulse duration."""
        self.swap_shots: Parameter = self.add_parameter(
            "swap_shots", label="Swap shots", get_cmd="QUB:SWAP:SHOT?", set_cmd="QUB:SWAP:SHOT {}",
            get_parser=int, vals=vals.Ints(10, 1_000_000),
            docstring="Shots per swap-efficiency measurement (100 us each).")
        """Shots per swap-efficiency measurement (100 us each)."""
        self.swap_efficiency: Parameter = self.add_parameter(
            "swap_efficiency", label="Swap efficiency", get_cmd="QUB:SWAP:MEAS?", get_parser=float,
            snapshot_get=False, docstring="Measured fraction of the excitation swapped out.")
        """Measured fraction of the excitation swapped out."""
        self.alpha: Parameter = self.add_parameter(
            "alpha", label="Bright-state population", get_cmd="QUB:ALPH?",
            set_cmd="QUB:ALPH {:.6f}", get_parser=float, vals=vals.Numbers(0, 0.5),
            docstring="Bright-state population prepared for single-click attempts.")
        """Bright-state population prepared for single-click attempts."""
        self.t2: Parameter = self.add_parameter(
            "t2", label="Qubit T2", unit="s", get_cmd="QUB:T2?", get_parser=float,
            docstring="Characterised coherence time of the communication qubit.")
        """Characterised coherence time of the communication qubit."""


class QNUDetector(QnetlabChannel):
    """A superconducting nanowire single-photon detector."""

    def __init__(self, parent: QnetlabQNU, name: str, index: int) -> None:
        super().__init__(parent, name)
        self.index = index
        self.enabled: Parameter = self.add_parameter(
            "enabled", label="Enabled", get_cmd=f"DET{index}:ENAB?", set_cmd=f"DET{index}:ENAB {{}}",
            val_mapping=create_on_off_val_mapping("1", "0"), docstring="Bias on/off.")
        """Bias on/off."""
        self.bias: Parameter = self.add_parameter(
            "bias", label="Bias current", unit="uA", get_cmd=f"DET{index}:BIAS?",
            set_cmd=f"DET{index}:BIAS {{:.4f}}", get_parser=float, vals=vals.Numbers(0, 30),
            docstring="Bias current (latches above the switching current).")
        """Bias current (latches above the switching current)."""
        self.trigger_level: Parameter = self.add_parameter(
            "trigger_level", label="Trigger level", unit="V", get_cmd=f"DET{index}:TRIG?",
            set_cmd=f"DET{index}:TRIG {{:.4f}}", get_parser=float, vals=vals.Numbers(0, 1),
            docstring="Readout discriminator level.")
        """Readout discriminator level."""
        self.state: Parameter = self.add_parameter(
            "state", label="State", get_cmd=f"DET{index}:STAT?",
            val_mapping={"ok": "OK", "latched": "LATCHED", "off": "OFF"},
            docstring="ok, latched (bias above the switching current) or off.")
        """ok, latched (bias above the switching current) or off."""
        self.count_rate: Parameter = self.add_parameter(
            "count_rate", label="Count rate", unit="Hz", get_cmd=f"DET{index}:COUN?",
            get_parser=float, snapshot_get=False, docstring="Counts over a 1 s gate.")
        """Counts over a 1 s gate."""


class QNUTaggerInput(QnetlabChannel):
    """A time-tagger input (0: sync, 1-2: detectors)."""

    def __init__(self, parent: QNUTagger, name: str, index: int) -> None:
        super().__init__(parent, name)
        self.index = index
        self.delay: Parameter = self.add_parameter(
            "delay", label="Delay", unit="ps", get_cmd=f"TAG:INP{index}:DEL?",
            set_cmd=f"TAG:INP{index}:DEL {{}}", get_parser=int, vals=vals.Ints(0, 1_000_000_000),
            docstring="Photon arrival delay after the sync: the herald window is centred here.")
        """Photon arrival delay after the sync: the herald window is centred here."""
        self.count_rate: Parameter = self.add_parameter(
            "count_rate", label="Count rate", unit="Hz", get_cmd=f"TAG:INP{index}:COUN?",
            get_parser=float, docstring="Input count rate.")
        """Input count rate."""


class QNUTagger(QnetlabModule):
    """Time tagger: inputs, recordings, start-stop histograms and the raw tag stream."""

    def __init__(self, parent: QnetlabQNU, name: str) -> None:
        super().__init__(parent, name)
        inputs = ChannelList(self, "inputs", QNUTaggerInput, snapshotable=False)
        for index, label in enumerate(("sync", "det1", "det2")):
            channel = QNUTaggerInput(self, label, index)
            inputs.append(channel)
            self.add_submodule(label, channel)
        self.inputs = self.add_submodule("inputs", inputs.to_channel_tuple())
        """Inputs sync, det1, det2."""
        self.record_duration: Parameter = self.add_parameter(
            "record_duration", label="Recording duration", unit="s", get_cmd="TAG:REC:DUR?",
            set_cmd="TAG:REC:DUR {:.6g}", get_parser=float, vals=vals.Numbers(1e-3, 3600),
            docstring="Length of the next recording.")
        """Length of the next recording."""
        self.recording_state: Parameter = self.add_parameter(
            "recording_state", label="Recording", get_cmd="TAG:REC:STAT?", snapshot_get=False,
            val_mapping={"idle": "IDLE", "running": "RUNNING", "done": "DONE"},
            docstring="idle, running or done.")
        """idle, running or done."""
        self.hist_start_channel: Parameter = self.add_parameter(
            "hist_start_channel", label="Histogram start", get_cmd="TAG:HIST:STAR?",
            set_cmd="TAG:HIST:STAR {}", get_parser=int, vals=vals.Ints(0, 2),
            docstring="Reference input of the histogram (0 = sync).")
        """Reference input of the histogram (0 = sync)."""
        self.hist_stop_channel: Parameter = self.add_parameter(
            "hist_stop_channel", label="Histogram stop", get_cmd="TAG:HIST:STOP?",
            set_cmd="TAG:HIST:STOP {}", get_parser=int, vals=vals.Ints(0, 2),
            docstring="Input whose delays are histogrammed.")
        """Input whose delays are histogrammed."""
        self.bin_width: Parameter = self.add_parameter(
            "bin_width", label="Bin width", unit="ps", get_cmd="TAG:HIST:BWID?",
            set_cmd="TAG:HIST:BWID {}", get_parser=int, vals=vals.Ints(1, 1_000_000),
            docstring="Histogram bin width.")
        """Histogram bin width."""
        self.n_bins: Parameter = self.add_parameter(
            "n_bins", label="Bins", get_cmd="TAG:HIST:BCO?", set_cmd="TAG:HIST:BCO {}",
            get_parser=int, vals=vals.Ints(1, 65536), docstring="Number of histogram bins.")
        """Number of histogram bins."""
        self.time_bins: Parameter = self.add_parameter(
            "time_bins", label="Delay", unit="ps", get_cmd=self._time_bins,
            vals=vals.Arrays(shape=(self.n_bins.get_latest,)), snapshot_value=False,
            docstring="Left edges of the histogram bins.")
        """Left edges of the histogram bins."""
        self.histogram: ParameterWithSetpoints = self.add_parameter(
            "histogram", label="Counts", parameter_class=ParameterWithSetpoints,
            get_cmd=self._histogram, setpoints=(self.time_bins,),
            vals=vals.Arrays(shape=(self.n_bins.get_latest,)), snapshot_value=False,
            docstring="Start-stop histogram of the finished recording.")
        """Start-stop histogram of the finished recording."""

    def _time_bins(self) -> np.ndarray:
        return np.arange(self.n_bins()) * float(self.bin_width())

    def _histogram(self) -> np.ndarray:
        return _float_block(self.root_instrument, "TAG:HIST:DATA?", "<i8")  # type: ignore[arg-type]

    def start_recording(self) -> None:
        self.write("TAG:REC:STAR")

    def record(self, duration_s: float, poll_s: float = 0.1) -> None:
        """Record for ``duration_s`` of lab time and wait (on the lab clock) until done."""
        self.record_duration(duration_s)
        self.start_recording()
        root: QnetlabQNU = self.root_instrument  # type: ignore[assignment]
        root.wait_for(lambda: self.recording_state() == "done", duration_s + 10 * poll_s + 5,
                      poll_s, "end of recording")

    def tag_count(self) -> int:
        return int(self.ask("TAG:STR:COUN?"))

    def read_tags(self, chunk: int = 2_000_000) -> tuple[np.ndarray, np.ndarray]:
        """The finished recording's tags: (int64 times in ps, uint8 channels), read in chunks."""
        root: QnetlabQNU = self.root_instrument  # type: ignore[assignment]
        n = self.tag_count()
        times, channels = [], []
        for offset in range(0, n, chunk):
            count = min(chunk, n - offset)
            times.append(_float_block(root, f"TAG:STR:TIME? {offset},{count}", "<i8"))
            channels.append(_float_block(root, f"TAG:STR:CHAN? {offset},{count}", "u1"))
        if not times:
            return np.zeros(0, np.int64), np.zeros(0, np.uint8)
        return np.concatenate(times), np.concatenate(channels)


class QNUEngine(QnetlabModule):
    """Entanglement engine: protocol, attempt clock, herald window, counters."""

    def __init__(self, parent: QnetlabQNU, name: str) -> None:
        super().__init__(parent, name)
        self.protocol: Parameter = self.add_parameter(
            "protocol", label="Protocol", get_cmd="EGEN:PROT?", set_cmd="EGEN:PROT {}",
            val_mapping={"single_click": "SING", "two_photon": "TWOP"},
            docstring="single_click (bright state alpha) or two_photon (Barrett-Kok).")
        """single_click (bright state alpha) or two_photon (Barrett-Kok)."""
        self.attempt_rate: Parameter = self.add_parameter(
            "attempt_rate", label="Attempt rate", unit="Hz", get_cmd="EGEN:RATE?",
            set_cmd="EGEN:RATE {:.6g}", get_parser=float, vals=vals.Numbers(1e3, 1e7),
            docstring="Attempt clock (capped in practice by the herald round trip).")
        """Attempt clock (capped in practice by the herald round trip)."""
        self.herald_window: Parameter = self.add_parameter(
            "herald_window", label="Herald window", unit="ps", get_cmd="EGEN:HER:WIND?",
            set_cmd="EGEN:HER:WIND {:.6g}", get_parser=float, vals=vals.Numbers(100, 1e7),
            docstring="Herald window width at the station.")
        """Herald window width at the station."""
        self.attempts: Parameter = self.add_parameter(
            "attempts", label="Attempts", get_cmd="EGEN:ATT?", get_parser=int,
            snapshot_get=False, docstring="Attempts made so far by this node's requests.")
        """Attempts made so far by this node's requests."""
        self.heralds: Parameter = self.add_parameter(
            "heralds", label="Heralds", get_cmd="EGEN:HER?", get_parser=int, snapshot_get=False,
            docstring="Heralds delivered to this node so far.")
        """Heralds delivered to this node so far."""


@dataclass(frozen=True)
class LinkRequest:
    """A CREATE as issued: the request id and the bases each end measures in."""

    id: int
    pairs: int
    keep: bool
    bases_here: tuple[str, ...]
    bases_peer: tuple[str, ...]


@dataclass(frozen=True)
class LinkStatus:
    state: str  # QUEUED, ACTIVE, DONE, EXPIRED, FAILED
    delivered: int
    requested: int

    @property
    def finished(self) -> bool:
        return self.state in ("DONE", "EXPIRED", "FAILED")


@dataclass(frozen=True)
class LinkResults:
    """Per-pair results seen from one node (numpy arrays of equal length)."""

    seq: np.ndarray
    herald_time_s: np.ndarray
    pattern: np.ndarray  # 1/2 single-click detector, 11/12/21/22 Barrett-Kok rounds
    attempts: np.ndarray
    basis_index: np.ndarray
    outcome: np.ndarray  # +1/-1, NaN for pairs kept in memory

    def __len__(self) -> int:
        return int(self.seq.size)

    @classmethod
    def from_rows(cls, flat: np.ndarray) -> LinkResults:
        """From the RES? block (float64 rows of RESULT_COLUMNS), one typed array per column."""
        rows = flat.reshape(-1, len(RESULT_COLUMNS))
        return cls(seq=rows[:, 0].astype(np.int64), herald_time_s=rows[:, 1].copy(),
                   pattern=rows[:, 2].astype(np.int16), attempts=rows[:, 3].astype(np.int64),
                   basis_index=rows[:, 4].astype(np.int16), outcome=rows[:, 5].copy())


class QNULink(QnetlabChannel):
    """The link layer toward one peer."""

    def __init__(self, parent: QnetlabQNU, name: str, index: int) -> None:
        super().__init__(parent, name)
        self.index = index
        self.peer: Parameter = self.add_parameter(
            "peer", label="Peer node", get_cmd=f"LINK{index}:PEER?",
            docstring="Node at the other end (NONE if not connected).")
        """Node at the other end (NONE if not connected)."""
        self.fiber_length: Parameter = self.add_parameter(
            "fiber_length", label="Fiber to station", unit="km", get_cmd=f"LINK{index}:FIB?",
            set_cmd=f"LINK{index}:FIB {{:.4f}}", get_parser=float, vals=vals.Numbers(0, 500),
            docstring="Fiber from this node to the heralding station (set: fiber-spool switch).")
        """Fiber from this node to the heralding station (set: fiber-spool switch)."""
        self.phase: Parameter = self.add_parameter(
            "phase", label="Phase setpoint", unit="rad", get_cmd=f"LINK{index}:PHAS?",
            set_cmd=f"LINK{index}:PHAS {{:.6f}}", get_parser=float, vals=vals.Numbers(0, 6.2832),
            docstring="Interferometer phase setpoint (single-click).")
        """Interferometer phase setpoint (single-click)."""

    def create(self, pairs: int, min_fidelity: float = 0.0, max_time_s: float = 3600.0,
               keep: bool = False, bases_here: tuple[str, ...] = ("Z",),
               bases_peer: tuple[str, ...] = ("Z",)) -> LinkRequest:
        """Issue a CREATE: ``pairs`` heralded pairs, measured directly (default) or kept.

        Bases are X, Y, Z or ``A<degrees>`` (angle from Z toward X); each pair picks one at
        random per end. Values are checked here before anything is sent."""
        vals.Ints(1, 1_000_000).validate(pairs, "pairs")
        vals.Numbers(0, 1).validate(min_fidelity, "min_fidelity")
        vals.Numbers(1e-6, 7 * 86400).validate(max_time_s, "max_time_s")
        for token in (*bases_here, *bases_peer):
            if token.upper() not in BASIS_TOKENS and not (
                    token.upper().startswith("A") and _is_number(token[1:])):
                raise ValueError(f"basis {token!r} is not one of X, Y, Z or A<degrees>; "
                                 f"Parameter: {self.full_name}.create")
        args = (f"{pairs},{min_fidelity:g},{max_time_s:g},{'K' if keep else 'M'},"
                f"{'/'.join(bases_here)},{'/'.join(bases_peer)}")
        cmd = f"LINK{self.index}:CRE? {args}"
        reply = self.ask(cmd)
        try:
            request_id = int(reply)
        except ValueError:
            root: QnetlabQNU = self.root_instrument  # type: ignore[assignment]
            root.raise_on_errors(cmd)
            raise
        return LinkRequest(request_id, pairs, keep, tuple(bases_here), tuple(bases_peer))

    def status(self, request: LinkRequest | int) -> LinkStatus:
        rid = request.id if isinstance(request, LinkRequest) else request
        state, delivered, requested = self.ask(f"LINK{self.index}:REQ? {rid}").split(",")
        return LinkStatus(state, int(delivered), int(requested))

    def results(self, request: LinkRequest | int, start: int = 0, count: int | None = None
                ) -> LinkResults:
        """Pairs delivered so far, seen from this node: all of them, or (``start``, ``count``)
        the pairs with ``seq`` from ``start``, at most ``count`` of them.

        Reading only the new pairs on each poll (``start`` = pairs already read) keeps the
        transfer per poll proportional to the new pairs, not to all pairs so far."""
        return LinkResults.from_rows(self.result_rows(request, start, count))

    def result_rows(self, request: LinkRequest | int, start: int = 0, count: int | None = None
                    ) -> np.ndarray:
        """:meth:`results` as the instrument sends them: float64 rows of ``RESULT_COLUMNS``."""
        rid = request.id if isinstance(request, LinkRequest) else request
        cmd = f"LINK{self.index}:RES? {rid}"
        if start or count is not None:
            vals.Ints(0).validate(start, "start")
            count = MAX_RESULT_ROWS if count is None else count
            vals.Ints(0).validate(count, "count")
            cmd += f",{start},{count}"
        flat = _float_block(self.root_instrument, cmd)  # type: ignore[arg-type]
        return flat.reshape(-1, len(RESULT_COLUMNS))

    def swap(self, here: LinkRequest | int, there: LinkRequest | int, cutoff_s: float,
             bases_here_end: tuple[str, ...] = ("Z",), bases_far_end: tuple[str, ...] = ("Z",)
             ) -> int:
        """At a middle node: Bell-measure the kept pairs of ``here`` (this link) and ``there``
        (the other link), discarding pairs stored longer than ``cutoff_s``; both ends then
        measure. Returns the swap id (ends read it with ``results``)."""
        vals.Numbers(1e-9, 3600).validate(cutoff_s, "cutoff_s")
        ids = [r.id if isinstance(r, LinkRequest) else int(r) for r in (here, there)]
        cmd = (f"LINK{self.index}:SWAP? {ids[0]},{ids[1]},{cutoff_s:g},"
               f"{'/'.join(bases_here_end)},{'/'.join(bases_far_end)}")
        reply = self.ask(cmd)
        try:
            return int(reply)
        except ValueError:
            root: QnetlabQNU = self.root_instrument  # type: ignore[assignment]
            root.raise_on_errors(cmd)
            raise

    def bsm_results(self, swap_id: int) -> dict[str, np.ndarray]:
        """Bell-state measurements of a swap: outcome 0-3 (Phi+, Phi-, Psi+, Psi-), the two
        herald patterns and the storage time of each pair."""
        rows = _float_block(self.root_instrument, f"LINK{self.index}:BSM? {swap_id}")  # type: ignore[arg-type]
        rows = rows.reshape(-1, 7)
        return {"seq": rows[:, 0].astype(np.int64), "time_s": rows[:, 1],
                "bsm": rows[:, 2].astype(np.int8), "pattern_here": rows[:, 3].astype(np.int16),
                "pattern_there": rows[:, 4].astype(np.int16), "storage_here_s": rows[:, 5],
                "storage_there_s": rows[:, 6]}

    def wait(self, request: LinkRequest | int, timeout_s: float, poll_s: float = 1.0) -> LinkStatus:
        """Wait on the lab clock until the request has finished; returns its final status."""
        root: QnetlabQNU = self.root_instrument  # type: ignore[assignment]
        status = self.status(request)
        deadline = root.clock.now() + timeout_s
        while not status.finished:
            if root.clock.now() >= deadline:
                raise TimeoutError(f"{self.full_name}: request still {status.state} "
                                   f"({status.delivered}/{status.requested}) after {timeout_s} s")
            root.clock.sleep(poll_s)
            status = self.status(request)
        return status


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class QnetlabQNU(QnetlabVisaInstrument):
    """Quantum Networking Unit (SCPI, ``SYST:ERR?`` error queue).

    Args:
        name: instrument name.
        address: VISA resource.
        **kwargs: see :class:`~qnetlab.drivers.base.QnetlabVisaInstrument`.
    """

    default_terminator = "\n"
    error_reporting = ScpiErrorQueue("SYST:ERR?")

    def __init__(self, name: str, address: str, **kwargs: Unpack[VisaInstrumentKWArgs]) -> None:
        super().__init__(name, address, **kwargs)
        self.transducer: QNUTransducer = self.add_submodule(
            "transducer", QNUTransducer(self, "transducer"))
        """Transducer readout."""
        self.qubit: QNUQubit = self.add_submodule("qubit", QNUQubit(self, "qubit"))
        """Communication-qubit interface."""
        detectors = ChannelList(self, "detectors", QNUDetector, snapshotable=False)
        for index in (1, 2):
            det = QNUDetector(self, f"det{index}", index)
            detectors.append(det)
            self.add_submodule(f"det{index}", det)
        self.detectors = self.add_submodule("detectors", detectors.to_channel_tuple())
        """SNSPDs det1, det2."""
        self.tagger: QNUTagger = self.add_submodule("tagger", QNUTagger(self, "tagger"))
        """Time tagger."""
        self.engine: QNUEngine = self.add_submodule("engine", QNUEngine(self, "engine"))
        """Entanglement engine."""
        links = ChannelList(self, "links", QNULink, snapshotable=False)
        for index in (1, 2):
            link = QNULink(self, f"link{index}", index)
            links.append(link)
            self.add_submodule(f"link{index}", link)
        self.links = self.add_submodule("links", links.to_channel_tuple())
        """Link layer toward each peer (link1, link2)."""
        self._finish_init()

    def link_to(self, peer: str) -> QNULink:
        """The link channel whose peer is ``peer``."""
        for link in self.links:
            if link.peer() == peer:
                return link
        raise KeyError(f"{self.name} has no link to {peer!r}")
