"""Oxford Triton behaviour: gas handling, pulse tube, turbo, pressures, thermometry view, interlock.

The Triton of a node shares the node's world fridge with the node's Lake Shore 372
(:mod:`.cryostat`): it writes the pulse tube and the interlock ceiling, and reads the stages, the
gauges and the interlock state. Replies are the Triton's in-band ``STAT:...`` strings; every
``READ:``/``SET:`` command costs :attr:`TritonModel.REPLY_S` of lab time (the Triton software
goes to the fridge's hardware and answers slowly); ``*IDN?`` is answered by the software alone.
"""

from __future__ import annotations

from qnetlab.sim_instruments.physics.cryostat import DilutionFridge

from .base import DeviceModel

#: Triton thermometer -> fridge stage (T6..T16 are not fitted: NOT_FOUND).
THERMOMETERS = {"1": "50K", "2": "4K", "3": "cold_plate", "4": "still", "5": "mxc"}
#: The thermometer whose temperature loop exists (the mixing chamber).
LOOP_CHANNEL = "5"
#: Heater range index (the Lake Shore's sample heater) -> full-scale current in mA.
RANGE_MA = (0.0, 0.0316, 0.1, 0.316, 1.0, 3.16, 10.0, 31.6, 100.0)
ON_OFF = ("ON", "OFF")


def _gauges(fridge: DilutionFridge, turbo_on: bool) -> dict[str, float]:
    """Gauge readings in mbar from the fridge state (P6 is not fitted)."""
    still = fridge.still_percent
    return {"1": fridge.ovc_mbar, "2": 0.05 + 1.0 * still / 100.0, "3": 300.0 + 5.0 * still,
            "4": 820.0 if fridge.pulse_tube_on else 830.0, "5": 1.5 if turbo_on else 5.0}


class TritonModel(DeviceModel):
    """The Oxford Triton system controller of a node."""

    VENDOR = "OXFORD INSTRUMENTS"
    MODEL = "TRITON"
    FIRMWARE = "2.5"
    #: Lab time each reply costs: the Triton PC software answers in hundreds of ms (up to 10 s
    #: when busy); sequences that poll it pay for it on the lab clock.
    REPLY_S = 0.25

    def setup(self) -> None:
        self.node = self.lab.nodes[self.binding["node"]]
        self.fridge = self.node.fridge
        self.on_reset()

    def on_reset(self) -> None:
        for ch in map(str, range(1, 17)):
            self.device.store("meas_enab", "ON" if ch in THERMOMETERS else "OFF", ch)

    def on_power_cycle(self) -> None:
        """A restart of the Triton software: the interlock ceiling is saved configuration and
        the compressor is separate hardware, so neither falls back to a default (a restart
        must not raise the ceiling by itself); the rest comes back at power-on defaults."""
        self.device.store("interlock_tmax", self.fridge.interlock_max_k)
        self.device.store("comp_state", "ON" if self.fridge.pulse_tube_on else "OFF")
        super().on_power_cycle()

    def apply(self) -> None:
        self.lab.sync()
        self.fridge.pulse_tube_on = self.stored("comp_state") == "ON"
        self.fridge.interlock_max_k = float(self.stored("interlock_tmax"))

    def slow(self) -> None:
        """Charge the reply's lab time (static replies go through here too)."""
        self.lab.wait(self.REPLY_S)
        self.lab.sync()

    def idn(self) -> str:
        """Answered by the Triton PC software itself, without asking the fridge: not slow."""
        return f"IDN:{self.VENDOR}:{self.MODEL}:{self.serial()}:{self.FIRMWARE}"

    # --- system ------------------------------------------------------------------------------
    def sys_time(self) -> str:
        self.slow()
        seconds = int(self.lab.clock.now()) % 86400
        return f"STAT:SYS:TIME:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def action(self) -> str:
        self.slow()
        return "STAT:SYS:DR:ACTN:NONE"

    def dr_status(self) -> str:
        self.slow()
        state = "Circulating" if self.fridge.pulse_tube_on else "Warming up"
        return f"STAT:SYS:DR:STATUS:{state}"

    # --- pumps -------------------------------------------------------------------------------
    def _set_pump(self, pump: str, prop: str, value: str) -> str:
        self.slow()
        reply = f"STAT:SET:DEV:{pump}:PUMP:SIG:STATE:{value}"
        if value not in ON_OFF:
            return f"{reply}:INVALID"
        self.device.store(prop, value)
        self.apply()
        return f"{reply}:VALID"

    def comp_state(self) -> str:
        self.slow()
        return self.stored("comp_state")

    def set_comp_state(self, value: str) -> str:
        return self._set_pump("COMP", "comp_state", value)

    def turb1_state(self) -> str:
        self.slow()
        return self.stored("turb1_state")

    def set_turb1_state(self, value: str) -> str:
        return self._set_pump("TURB1", "turb1_state", value)

    def turbo_speed(self) -> str:
        self.slow()
        speed = 820.0 if self.stored("turb1_state") == "ON" else 0.0
        return f"STAT:DEV:TURB1:PUMP:SIG:SPD:{speed:.1f}Hz"

    # --- gauges and thermometers -------------------------------------------------------------
    def pressure(self, ch: str) -> str:
        self.slow()
        value = _gauges(self.fridge, self.stored("turb1_state") == "ON").get(ch)
        tail = "NOT_FOUND" if value is None else f"{value:.4E}mB"
        return f"STAT:DEV:P{ch}:PRES:SIG:PRES:{tail}"

    def temperature(self, ch: str) -> str:
        self.slow()
        stage = THERMOMETERS.get(ch)
        tail = "NOT_FOUND" if stage is None else f"{self.fridge.temperature(stage):.6f}K"
        return f"STAT:DEV:T{ch}:TEMP:SIG:TEMP:{tail}"

    def meas_enab(self, ch: str) -> str:
        self.slow()
        return f"STAT:DEV:T{ch}:TEMP:MEAS:ENAB:{self.stored('meas_enab', ch)}"

    def set_meas_enab(self, ch: str, value: str) -> str:
        self.slow()
        reply = f"STAT:SET:DEV:T{ch}:TEMP:MEAS:ENAB:{value}"
        if ch not in THERMOMETERS:
            return f"{reply}:NOT_FOUND"
        if value not in ON_OFF:
            return f"{reply}:INVALID"
        self.device.store("meas_enab", value, ch)
        return f"{reply}:VALID"

    # --- temperature loop (read-only view of the Lake Shore's sample heater) -----------------
    def _loop(self, ch: str, path: str, value: str) -> str:
        self.slow()
        tail = value if ch == LOOP_CHANNEL else "NOT_FOUND"
        return f"STAT:DEV:T{ch}:TEMP:LOOP:{path}:{tail}"

    def loop_mode(self, ch: str) -> str:
        return self._loop(ch, "MODE", "ON" if self.fridge.heater.closed_loop() else "OFF")

    def loop_tset(self, ch: str) -> str:
        return self._loop(ch, "TSET", f"{self.fridge.heater.setpoint_k:.6f}K")

    def loop_ramp_enab(self, ch: str) -> str:
        return self._loop(ch, "RAMP:ENAB", "ON" if self.fridge.heater.ramp_enabled else "OFF")

    def loop_ramp_rate(self, ch: str) -> str:
        return self._loop(ch, "RAMP:RATE", f"{self.fridge.heater.ramp_k_per_min:.4f}K/min")

    def loop_p(self, ch: str) -> str:
        return self._loop(ch, "P", f"{self.fridge.heater.p:.4f}")

    def loop_i(self, ch: str) -> str:
        return self._loop(ch, "I", f"{self.fridge.heater.i:.4f}")

    def loop_d(self, ch: str) -> str:
        return self._loop(ch, "D", f"{self.fridge.heater.d:.4f}")

    def loop_range(self, ch: str) -> str:
        index = min(max(int(self.fridge.heater.range_index), 0), len(RANGE_MA) - 1)
        return self._loop(ch, "RANGE", f"{RANGE_MA[index]:g}mA")

    def set_loop(self, ch: str, value: str) -> str:
        """Heating is the Lake Shore's in this lab: the Triton refuses (DENIED), changing nothing."""
        self.slow()
        tail = "DENIED" if ch == LOOP_CHANNEL else "NOT_FOUND"
        return f"STAT:SET:DEV:T{ch}:TEMP:LOOP:{value}:{tail}"

    # --- interlock ---------------------------------------------------------------------------
    def interlock_state(self) -> str:
        self.slow()
        return f"STAT:SYS:INTLK:STAT:{self.fridge.interlock}"

    def interlock_tmax(self) -> str:
        self.slow()
        return f"STAT:SYS:INTLK:TMAX:{float(self.stored('interlock_tmax')):.4f}K"

    def set_interlock_tmax(self, value: str) -> str:
        self.slow()
        reply = f"STAT:SET:SYS:INTLK:TMAX:{value}"
        try:
            kelvin = float(value.removesuffix("K"))
        except ValueError:
            return f"{reply}:INVALID"
        if not 0.01 <= kelvin <= 0.1:
            return f"{reply}:INVALID"
        self.device.store("interlock_tmax", kelvin)
        self.apply()
        return f"{reply}:VALID"

    def interlock_reset(self) -> str:
        self.slow()
        try:
            self.fridge.reset_interlock()
        except ValueError:
            return "STAT:SET:SYS:INTLK:RST:INVALID"
        return "STAT:SET:SYS:INTLK:RST:VALID"
