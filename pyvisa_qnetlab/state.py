"""Instrument state: stored settings models read and write, and the power-on reset.

``reset_to_defaults`` restores the YAML defaults and empties queues and registers without
breaking open sessions (unlike pyvisa-sim's re-parse), as an instrument that resets itself.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pyvisa_sim.channels import ChannelProperty


class State:
    """Stored values and reset of a :class:`~pyvisa_qnetlab.device.PhysDevice`."""

    def stored(self, name: str, ch: str | None = None) -> Any:
        """The stored (set) value of a YAML property, for the model to read."""
        if ch is None:
            return self._properties[name]._value
        for channels in self._channels.values():
            if name in channels._properties:
                return channels._properties[name]._value[str(ch)]
        raise KeyError(name)

    def store(self, name: str, value: Any, ch: str | None = None) -> None:
        """Overwrite a stored value (the instrument changed it itself)."""
        if ch is None:
            self._properties[name]._value = value
            return
        for channels in self._channels.values():
            if name in channels._properties:
                channels._properties[name]._value[str(ch)] = value
                return
        raise KeyError(name)

    def reset_to_defaults(self) -> None:
        """Power-on state: YAML defaults, empty buffers/queues/registers; sessions stay open."""
        with self.lock:
            for prop, default in self._defaults:
                if isinstance(prop, ChannelProperty):
                    prop._value = defaultdict(lambda d=default: d)
                else:
                    prop._value = default
            self.clear_output()
            self.clear_status(every_session=True)
