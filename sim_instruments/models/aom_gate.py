"""AOM pulse gate: a Keysight 33522B whose channel 1 gates the pump AOM's RF driver.

The generator's settings decide when pump light reaches the transducer: this model turns them
into the node's :class:`~qnetlab.sim_instruments.physics.world.AomSettings` (what the physics
reads), so the pump's duty cycle, pulse width and heating follow whatever a client sets, with
qnetlab's driver or QCoDeS's stock ``Keysight33522B``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import DeviceModel

GATE_CHANNEL = "1"  # the channel wired to the AOM RF driver's gate input


@dataclass(frozen=True)
class GateOutput:
    """What one generator channel is set to (the settings that shape the gate)."""

    output: bool
    function: str
    width_s: float
    frequency_hz: float
    burst: bool
    burst_mode: str
    burst_period_s: float
    ncycles: int
    trigger: str
    timer_s: float


def aom_settings(g: GateOutput) -> tuple[str, float, float, str]:
    """``(mode, width_s, period_s, trigger)`` of the AOM for a gate channel's settings.

    Output off: the AOM stays closed (``OFF``). DC: held open (``CW``). PULS: pulses of the set
    width every 1 / FREQ; any other waveform is a 50 % gate at its frequency. In burst mode the
    pulses come per trigger: EXT (or a gated burst) is the QNU's attempt clock, IMM and TIM
    repeat N cycles every burst period or timer, BUS only on ``*TRG`` (dark in between)."""
    period = 1.0 / g.frequency_hz
    width = g.width_s if g.function == "PULS" else period / 2
    if not g.output:
        return "OFF", width, period, "BUS"
    if g.function == "DC":
        return "CW", width, period, "IMM"
    if not g.burst:
        return "PULS", width, period, "IMM"
    if g.burst_mode == "GAT" or g.trigger == "EXT":
        return "BURS", width, period, "EXT"
    if g.trigger == "BUS":
        return "OFF", width, period, "BUS"
    every = g.timer_s if g.trigger == "TIM" else g.burst_period_s
    return "BURS", width, max(every / g.ncycles, period), "IMM"


class AomGateModel(DeviceModel):
    """Keysight 33522B on the ``x-bind`` node: channel 1 gates that node's pump AOM."""

    VENDOR = "Keysight Technologies"
    MODEL = "33522B"
    FIRMWARE = "5.02-2.00-2.00"

    def setup(self) -> None:
        self.node = self.lab.nodes[self.binding["node"]]

    def serial(self) -> str:
        return f"MY5{self.node.name.upper()[:5]}"

    def _gate(self) -> GateOutput:
        s = lambda name: self.stored(name, GATE_CHANNEL)  # noqa: E731
        return GateOutput(
            output=int(s("output")) == 1, function=str(s("function")),
            width_s=float(s("pulse_width")), frequency_hz=float(s("frequency")),
            burst=int(s("burst_state")) == 1, burst_mode=str(s("burst_mode")),
            burst_period_s=float(s("burst_period")), ncycles=int(s("burst_ncycles")),
            trigger=str(s("trigger_source")), timer_s=float(s("trigger_timer")))

    def apply(self) -> None:
        """Write the gate's present effect into the node's AOM and re-derive the pump pulsing."""
        self.lab.sync()
        aom = self.node.aom
        aom.mode, aom.width_s, aom.period_s, aom.trigger = aom_settings(self._gate())
        self.lab.refresh_pulsing(self.node)

    def _change(self, name: str, ch: str, value: object) -> object:
        """Store a channel setting and, for the gate channel, push its effect into the world."""
        self.lab.sync()  # the physics up to now ran with the old setting
        self.device.store(name, value, ch)
        if str(ch) == GATE_CHANNEL:
            self.apply()
        return value

    # --- x-set (channel id first) -----------------------------------------------------------
    def set_function(self, ch: str, value: str) -> object:
        return self._change("function", ch, value)

    def set_frequency(self, ch: str, value: float) -> object:
        return self._change("frequency", ch, value)

    def set_period(self, ch: str, value: float) -> object:
        self._change("frequency", ch, 1.0 / value)
        return value

    def set_pulse_width(self, ch: str, value: float) -> object:
        return self._change("pulse_width", ch, value)

    def set_burst_state(self, ch: str, value: int) -> object:
        return self._change("burst_state", ch, value)

    def set_burst_mode(self, ch: str, value: str) -> object:
        return self._change("burst_mode", ch, value)

    def set_burst_ncycles(self, ch: str, value: int) -> object:
        return self._change("burst_ncycles", ch, value)

    def set_burst_period(self, ch: str, value: float) -> object:
        return self._change("burst_period", ch, value)

    def set_trigger_source(self, ch: str, value: str) -> object:
        return self._change("trigger_source", ch, value)

    def set_trigger_timer(self, ch: str, value: float) -> object:
        return self._change("trigger_timer", ch, value)

    def set_output(self, ch: str, value: int) -> object:
        return self._change("output", ch, value)

    # --- x-get / x-call -------------------------------------------------------------------
    def period(self, ch: str) -> float:
        return 1.0 / float(self.stored("frequency", ch))

    def trigger(self) -> None:
        """``*TRG``: one burst on bus-triggered channels; a single pulse heats nothing
        measurable, so the pulsing the physics sees does not change."""
        self.lab.sync()
