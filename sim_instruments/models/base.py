"""Base of the instrument models bound to YAML commands by ``x-get``/``x-set``/``x-call``."""

from __future__ import annotations

from typing import Any

from qnetlab.sim_instruments.physics.world import Lab


class DeviceModel:
    """Behaviour behind one simulated resource.

    ``device`` is the backend's device (stored values, error queue); ``lab`` the shared world;
    ``binding`` the resource's ``x-bind`` (which node or station it belongs to).
    """

    VENDOR = "QNETLAB"
    MODEL = "SIM"
    FIRMWARE = "1.0.0"

    def __init__(self, device: Any, lab: Lab, binding: dict[str, Any], resource: str) -> None:
        self.device = device
        self.lab = lab
        self.binding = binding
        self.resource = resource
        self.setup()
        self.apply()

    def setup(self) -> None:
        """Find this instrument's place in the world (override)."""

    def apply(self) -> None:
        """Push every stored setting into the world (after setup and after a reset)."""

    # --- common IEEE-488.2 behaviour ---------------------------------------------------------
    def serial(self) -> str:
        where = self.binding.get("node") or self.binding.get("station") or "lab"
        return f"SN-{where.upper()}"

    def idn(self) -> str:
        return f"{self.VENDOR},{self.MODEL},{self.serial()},{self.FIRMWARE}"

    def cls(self) -> None:
        self.device.clear_status()

    def rst(self) -> None:
        with self.device.lock:
            self.lab.sync()
            for prop, default in self.device._defaults:
                if hasattr(prop._value, "default_factory"):
                    prop._value.clear()
                else:
                    prop._value = default
            self.on_reset()
            self.apply()

    def on_reset(self) -> None:
        """Extra state to clear on ``*RST`` and on a power cycle (override)."""

    def on_power_cycle(self) -> None:
        self.on_reset()
        self.apply()

    def stored(self, name: str, ch: str | None = None) -> Any:
        return self.device.stored(name, ch)

    def now(self) -> float:
        """Lab time, with the physics brought up to it."""
        return self.lab.sync()
