"""The link check: a short entanglement run whose fidelity decides whether a link is ready.
It sits at the end of the calibration graph, after the link phase.

The rule (docs/calibration.md): a link is ready when its measured fidelity F (the quick
estimate from <XX>, <YY>, <ZZ>) is at least ``threshold`` (0.6). The same rule decides the
short check and the full calibration; a measurement below it is never passed on the strength of
its error bar (F = 0.574 +- 0.065 is not ready). A device whose calibrated operating points
predict less than ``threshold`` (today's hardware, ``expected_fidelity`` of its nodes) is ready
when its link does what the device allows: F at least that prediction less ``tolerance``; the
verification then reports plainly whether the pairs are entangled."""

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
    tolerance: float = 0.1  # below a device's predicted F that still counts as performing
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
        return self.judge(f, err, rate, self.expected(ctx, target))

    @staticmethod
    def expected(ctx: CalContext, target: str) -> float | None:
        """The fidelity the link's calibrated operating points predict (the lower node's)."""
        values = [ctx.live("expected_fidelity", n) for n in ctx.topology.links[target].nodes]
        return None if None in values else float(min(values))  # type: ignore[type-var]

    def bar(self, expected: float | None = None) -> float:
        """``threshold``, or for a device predicted below it, its prediction less ``tolerance``."""
        if expected is None or expected >= self.threshold:
            return self.threshold
        return expected - self.tolerance

    def ready(self, fidelity: float, expected: float | None = None) -> bool:
        """The acceptance rule: the measured F is at least :meth:`bar` (nan is not ready)."""
        return bool(fidelity >= self.bar(expected))

    def judge(self, fidelity: float, err: float, rate: float,
              expected: float | None = None) -> Check:
        """The check's outcome for a measured F: in spec when ready, out of spec when close
        (within 0.25, worth a recalibration), else bad data (something upstream is wrong)."""
        bar = self.bar(expected)
        device = "" if bar == self.threshold else (
            f"; the device predicts F = {expected:.3g}, below {self.threshold:g}")
        detail = (f"F = {plus_minus(fidelity, err)} at {rate:.1f} heralds/s "
                  f"({'ready' if self.ready(fidelity, expected) else 'not ready'}: "
                  f"F >= {bar:.3g}{device})")
        if self.ready(fidelity, expected):
            return Check(Outcome.IN_SPEC, detail)
        close = fidelity >= bar - 0.25
        return Check(Outcome.OUT_OF_SPEC if close else Outcome.BAD_DATA, detail)

    def calibrate(self, ctx: CalContext, target: str) -> list[Update]:
        f, err, rate, _ = self._measure(ctx, target, self.pairs, "calibrate")
        expected = self.expected(ctx, target)
        if not self.ready(f, expected):
            raise CalibrationFailed(f"link {target} not ready: F = {plus_minus(f, err)} below "
                                    f"{self.bar(expected):.3g}")
        return [Update("link_fidelity", f, err), Update("link_rate_hz", rate)]


class _Guid:
    """Lets a generation's run be listed among a calibration step's runs."""

    def __init__(self, guid: str) -> None:
        self.guid = guid
