"""Lake Shore 372 behaviour: scanned thermometry, the MXC heater with PID, the still heater.

One world fridge (``lab.nodes[node].fridge``) sits behind both instruments of a node: this model
writes the heaters and the still, :mod:`.cryostat_triton` the pulse tube and the interlock
ceiling; each reads whatever the fridge's physics makes of both."""

from __future__ import annotations

import math

from qnetlab.sim_instruments.physics.cryostat import ruox_resistance
from qnetlab.sim_instruments.protocol import InstrumentRefusal

from .base import DeviceModel

#: Lake Shore input channel -> fridge stage (Bluefors-like wiring)
CHANNEL_STAGES = {"1": "50K", "2": "4K", "5": "still", "6": "mxc", "7": "cold_plate"}
CHANNEL_NAMES = {"1": "50K Flange", "2": "4K Flange", "5": "Still", "6": "MXC", "7": "Cold Plate"}
SENSOR_NOISE = 2e-3  # relative rms of a bridge reading


def _csv(value: str) -> list[str]:
    return [v.strip() for v in str(value).split(",")]


class LakeShore372Model(DeviceModel):
    """The Lake Shore Model 372 of a node: thermometry and heaters over one world fridge."""

    MODEL = "MODEL372"
    VENDOR = "LSCI"
    FIRMWARE = "1.4"

    def setup(self) -> None:
        self.node = self.lab.nodes[self.binding["node"]]
        self.fridge = self.node.fridge
        self._noise = self.lab.rng(self.node.name, "thermometry")
        self._readings: dict[tuple[str, int], float] = {}
        self.on_reset()

    def on_reset(self) -> None:
        for ch in map(str, range(1, 17)):
            wired = ch in CHANNEL_STAGES
            self.device.store("inset", "1,3,3,0,1" if wired else "0,3,3,0,1", ch)
            self.device.store("sensor_name", CHANNEL_NAMES.get(ch, f"Channel {ch}"), ch)
        # the YAML's default suits the warm-up heater's fields (stock @sim has one default for
        # every output); the sample heater drives a 120 ohm load
        self.device.store("htrset", "+120.000,0,+0.000,2", "0")
        self.device.store("htrset", "2,1,+0.000,1", "1")  # warm-up heater: 50 ohm, 0.45 A
        self.device.store("outmode", "0,0,0,0,0,1", "1")
        self.device.store("outmode", "4,0,0,0,0,1", "2")  # analog output drives the still

    def apply(self) -> None:
        self.lab.sync()
        h = self.fridge.heater
        mode, inp = _csv(self.stored("outmode", "0"))[:2]
        h.mode, h.input_channel = int(mode), int(inp)
        h.p, h.i, h.d = (float(x) for x in _csv(self.stored("pid", "0"))[:3])
        h.range_index = int(self.stored("range", "0"))
        h.setpoint_k = float(self.stored("setpoint", "0"))
        h.resistance_ohm = float(_csv(self.stored("htrset", "0"))[0])
        ramp_on, rate = _csv(self.stored("ramp", "0"))[:2]
        h.ramp_enabled, h.ramp_k_per_min = ramp_on == "1", float(rate)
        h.manual_percent = float(self.stored("manual_output", "0"))
        self.fridge.still_percent = float(self.stored("still"))

    def _change(self, name: str, value: object, ch: str | None = None) -> object:
        self.lab.sync()
        self.device.store(name, value, ch)
        self.apply()
        return value

    # --- thermometry: the scanner visits enabled channels in turn ----------------------------
    def _scan_plan(self) -> tuple[list[tuple[str, float]], float]:
        plan, total = [], 0.0
        for ch in map(str, range(1, 17)):
            fields = _csv(self.stored("inset", ch))
            if fields[0] == "1":
                total += float(fields[1]) + float(fields[2])
                plan.append((ch, total))  # reading completes at the end of the dwell
        return plan, total

    def _last_visit(self, ch: str, t: float) -> float | None:
        plan, cycle = self._scan_plan()
        for name, end in plan:
            if name == ch:
                if t < end - cycle:
                    return None
                return end + math.floor((t - end) / cycle) * cycle
        return None

    def _stage_temperature(self, ch: str) -> float | None:
        stage = CHANNEL_STAGES.get(ch)
        if stage is None:
            return None
        t = self.now()
        visit = self._last_visit(ch, t)
        if visit is None:
            return 0.0
        if stage == "mxc":
            true_t = self.fridge.mxc_at(max(visit, 0.0))
        else:
            true_t = self.fridge.temperature(stage)
        key = (ch, round(visit * 1e6))
        if key not in self._readings:
            if len(self._readings) > 4096:
                self._readings.clear()
            self._readings[key] = true_t * (1 + self._noise.normal(0.0, SENSOR_NOISE))
        return self._readings[key]

    def temperature(self, ch: str) -> float:
        value = self._stage_temperature(ch)
        return 0.0 if value is None else value

    def resistance(self, ch: str) -> float:
        value = self._stage_temperature(ch)
        if not value:
            return 0.0
        return ruox_resistance(value)

    def status(self, ch: str) -> int:
        return 0 if ch in CHANNEL_STAGES else 16  # unwired input: R.OVER (open sensor)

    def set_inset(self, ch: str, value: str) -> str:
        fields = _csv(value)
        if len(fields) != 5 or fields[0] not in ("0", "1"):
            raise InstrumentRefusal("data_out_of_range", f"INSET needs 5 fields, got {value!r}")
        dwell, pause = float(fields[1]), float(fields[2])
        if not (1 <= dwell <= 200 and 3 <= pause <= 200):
            raise InstrumentRefusal("data_out_of_range",
                                    f"dwell {dwell} not in 1..200 s or pause {pause} not in 3..200 s")
        return ",".join(fields)

    def normalise_csv(self, ch: str, value: str) -> str:
        return ",".join(_csv(value))

    # --- heaters -----------------------------------------------------------------------------
    def set_outmode(self, ch: str, value: str) -> str:
        fields = _csv(value)
        if len(fields) != 6 or int(fields[0]) not in range(7):
            raise InstrumentRefusal("data_out_of_range", f"OUTMODE needs 6 fields, got {value!r}")
        return self._change("outmode", ",".join(fields), ch)  # type: ignore[return-value]

    def set_pid(self, ch: str, value: str) -> str:
        p, i, d = (float(x) for x in _csv(value))
        if not (0 <= p <= 1000 and 0 <= i <= 10000 and 0 <= d <= 2500):
            raise InstrumentRefusal("data_out_of_range", f"PID {value!r} outside P 0-1000, "
                                    "I 0-10000, D 0-2500")
        return self._change("pid", f"{p:g},{i:g},{d:g}", ch)  # type: ignore[return-value]

    def set_range(self, ch: str, value: int) -> int:
        if ch != "0" and value > 1:
            raise InstrumentRefusal("data_out_of_range", f"output {ch} range is 0 (off) or 1 (on)")
        return self._change("range", value, ch)  # type: ignore[return-value]

    def set_setpoint(self, ch: str, value: float) -> float:
        return self._change("setpoint", value, ch)  # type: ignore[return-value]

    def set_htrset(self, ch: str, value: str) -> str:
        fields = _csv(value)
        if ch == "0" and not 1 <= float(fields[0]) <= 2000:
            raise InstrumentRefusal("data_out_of_range", f"heater resistance {fields[0]} not in "
                                    "1..2000 ohm")
        return self._change("htrset", ",".join(fields), ch)  # type: ignore[return-value]

    def set_ramp(self, ch: str, value: str) -> str:
        on, rate = _csv(value)[:2]
        if on not in ("0", "1") or not 0 <= float(rate) <= 100:
            raise InstrumentRefusal("data_out_of_range", f"RAMP {value!r}: enabled 0|1, rate "
                                    "0-100 K/min")
        return self._change("ramp", f"{on},{float(rate):g}", ch)  # type: ignore[return-value]

    def set_manual(self, ch: str, value: float) -> float:
        return self._change("manual_output", value, ch)  # type: ignore[return-value]

    def ramp_status(self, ch: str) -> int:
        self.now()
        return int(ch == "0" and self.fridge.heater.ramping())

    def heater_output(self, ch: str) -> float:
        self.now()
        if ch == "0":
            return self.fridge.heater.output_percent
        if ch == "2":
            return float(self.stored("still"))
        return 0.0

    def set_still(self, value: float) -> float:
        return self._change("still", value)  # type: ignore[return-value]
