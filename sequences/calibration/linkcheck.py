"""The link check: a short entanglement run whose fidelity decides whether a link is ready.
It sits at the end of the calibration graph, after the link phase.

The rule (docs/calibration.md): a link is ready when its measured fidelity F (the quick
estimate from <XX>, <YY>, <ZZ>) is at least ``threshold`` (0.6). The same rule decides the
short check and the full calibration; a measurement below it is never passed on the strength of
its error bar (F = 0.574 +- 0.065 is not ready)."""

from __future__ import annotations

from typing import ClassVar

from qnetlab.sequences.entanglement.generation import generate
from qnetlab.sequences.entanglement.verification import quick_fidelity
from qnetlab.uncertain import plus_minus

from .engine import (
    CalContext,
    Calibration,
    CalibrationFailed,
    Check,
    Outcome,
    Quantity,
    Update,
)


class LinkCheck(Calibration):
    name = "link_check"
    scope = "link"
    depends_on = ("link_phase",)
    timeout_s = 3600.0
    threshold: float = 0.6
    check_pairs: int = 300
    pairs: int = 1000
    quantities: ClassVar[dict[str, Quantity]] = {
        "link_fidelity": Quantity(""),
        "link_rate_hz": Quantity("Hz"),
    }

    def _measure(self, ctx: CalContext, target: str, pairs: int, kind: str
                 ) -> tuple[float, float, float, str | None]:
        gen = generate(ctx.bundle, target, pairs, bases=("X", "Y", "Z"), runs=ctx.runs,
                       name=f"{self.name}.{kind}", max_time_s=3600,
                       calibration=ctx.store.as_dict())
        if gen.run_guid:
            ctx.current_runs.append(_Guid(gen.run_guid))
        if len(gen) < pairs // 2:
            raise CalibrationFailed(f"only {len(gen)} of {pairs} pairs in an hour")
        f, err = quick_fidelity(gen)
        return f, err, gen.rate_hz, gen.run_guid

    def check_data(self, ctx: CalContext, target: str) -> Check:
        try:
            f, err, rate, _ = self._measure(ctx, target, self.check_pairs, "check")
        except CalibrationFailed as exc:
            return Check(Outcome.BAD_DATA, str(exc))
        return self.judge(f, err, rate)

    def ready(self, fidelity: float) -> bool:
        """The acceptance rule: the measured F is at least ``threshold`` (nan is not ready)."""
        return bool(fidelity >= self.threshold)

    def judge(self, fidelity: float, err: float, rate: float) -> Check:
        """The check's outcome for a measured F: in spec when ready, out of spec when close
        (within 0.25, worth a recalibration), else bad data (something upstream is wrong)."""
        detail = (f"F = {plus_minus(fidelity, err)} at {rate:.1f} heralds/s "
                  f"({'ready' if self.ready(fidelity) else 'not ready'}: F >= {self.threshold:g})")
        if self.ready(fidelity):
            return Check(Outcome.IN_SPEC, detail)
        close = fidelity >= self.threshold - 0.25
        return Check(Outcome.OUT_OF_SPEC if close else Outcome.BAD_DATA, detail)

    def calibrate(self, ctx: CalContext, target: str) -> list[Update]:
        f, err, rate, _ = self._measure(ctx, target, self.pairs, "calibrate")
        if not self.ready(f):
            raise CalibrationFailed(f"link {target} not ready: F = {plus_minus(f, err)} below "
                                    f"{self.threshold:g}")
        return [Update("link_fidelity", f, err), Update("link_rate_hz", rate)]


class _Guid:
    """Lets a generation's run be listed among a calibration step's runs."""

    def __init__(self, guid: str) -> None:
        self.guid = guid
