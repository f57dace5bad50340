"""Safety: hard limits no station file can widen, and emission or heating never coming back by
itself.

- :class:`HardLimitParameter` checks a hard range on every set, outside the validator a station
  file's ``limits:`` replaces, so the range can be narrowed but never widened.
- :class:`SafetySettings` keeps the settings to put back after a power-on reset, except those
  that emit light or heat (:attr:`~SafetySettings.EMITS_OR_HEATS`) and actions, and gives each
  driver the hooks to put and read back its emitters and heaters in a safe state.
"""

from __future__ import annotations

from typing import Any, ClassVar

from qcodes.parameters import Parameter

from qnetlab.errors import SafetyLimitError


class HardLimitParameter(Parameter):
    """A parameter with a hard safety range checked on every set, whatever ``vals`` says.

    A station file's ``limits:`` replaces a parameter's validator; this check is not a
    validator, so it cannot be widened (only narrowed by the validator)."""

    def __init__(self, name: str, *, hard_min: float, hard_max: float, **kwargs: Any) -> None:
        self.hard_min = hard_min
        self.hard_max = hard_max
        super().__init__(name, **kwargs)

    def validate(self, value: Any) -> None:
        super().validate(value)
        if not self.hard_min <= value <= self.hard_max:
            raise SafetyLimitError(
                f"{value!r} is outside the hard safety limit [{self.hard_min}, {self.hard_max}]"
                f"{' ' + self.unit if self.unit else ''}; Parameter: {self.full_name}")


class SafetySettings:
    """Mixin of :class:`~qnetlab.drivers.base.QnetlabVisaInstrument`: the settings replayed
    after a reset (never those that emit or heat) and the safe-state hooks drivers override."""

    #: Write heads that are actions, not settings: never replayed after a reset.
    ACTIONS: ClassVar[tuple[str, ...]] = ()
    #: Write heads of settings that make the instrument emit light or heat (laser output,
    #: AOM gate output, heater range and output): never replayed after a reset, so that emission and
    #: heating return only through an explicit call, never by themselves.
    EMITS_OR_HEATS: ClassVar[tuple[str, ...]] = ()

    _settings: dict[str, str]

    def safe_state(self) -> None:
        """Put every emitter and heater of the instrument into its safe state (default: the
        instrument has none). Called on interrupts, signals and watchdog trips."""

    def safety_readback(self) -> str:
        """The state of the instrument's emitters and heaters, read back from it (empty when
        it has none): what an operator checks after :meth:`safe_state`."""
        return ""

    def after_reset(self) -> None:
        """Called once the settings are back after a power-on reset (default: nothing).
        Drivers of emitters close what a power-on default could have left open."""

    def _remember(self, cmd: str) -> None:
        """Keep the last value of every setting, to put back after the instrument resets;
        settings that emit or heat (:attr:`EMITS_OR_HEATS`) are never kept."""
        head, sep, args = cmd.partition(" ")
        if not sep or "?" in head or cmd.startswith(self.ACTIONS):
            return
        if cmd.startswith(self.EMITS_OR_HEATS):
            return
        key = f"{head} {args.split(',')[0]}" if "," in args else head
        self._settings.pop(key, None)
        self._settings[key] = cmd
