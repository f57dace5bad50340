"""YAML properties whose value a model computes (``x-get``) or observes on set (``x-set``).

:func:`pyvisa_qnetlab.device.promote` swaps pyvisa-sim's property classes for these; a refused
set is noted on the device (its error queue says why) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyvisa_sim.channels import ChannelProperty
from pyvisa_sim.component import Property

from .error_queues import _classify

if TYPE_CHECKING:
    from .device import PhysDevice


class HookedProperty(Property):
    """A property whose value may be computed (``x-get``) or observed on set (``x-set``)."""

    _device: PhysDevice | None = None
    _xget: Callable[[], Any] | None = None
    _xset: Callable[[Any], Any] | None = None

    def get_value(self) -> Any:
        if self._xget is not None:
            return self._xget()
        return self._value

    def set_value(self, string_value: str) -> None:
        try:
            value = self.validate_value(string_value)
            if self._xset is not None:
                replaced = self._xset(value)
                value = value if replaced is None else replaced
        except ValueError as exc:
            if self._device is not None:
                self._device.note_error(*_classify(exc))
            raise
        self._value = value


class HookedChannelProperty(ChannelProperty):
    """Per-channel variant: hooks receive the channel id first."""

    _device: PhysDevice | None = None
    _xget: Callable[[str], Any] | None = None
    _xset: Callable[[str, Any], Any] | None = None

    def get_value(self) -> Any:
        if self._xget is not None:
            return self._xget(self._channel._selected)
        return self._value[self._channel._selected]

    def set_value(self, string_value: str) -> None:
        ch = self._channel._selected
        try:
            value = self.validate_value(string_value)
            if self._xset is not None:
                replaced = self._xset(ch, value)
                value = value if replaced is None else replaced
        except ValueError as exc:
            if self._device is not None:
                self._device.note_error(*_classify(exc))
            raise
        self._value[ch] = value
