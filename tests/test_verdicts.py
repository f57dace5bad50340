"""Honest verdicts: values with the digits their uncertainty supports, claims made only at their
stated significance, one acceptance rule for the link check, a self-check that fails an expired
link request."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from qnetlab import selfcheck
from qnetlab.sequences.calibration.engine import Outcome
from qnetlab.sequences.calibration.linkcheck import LinkCheck
from qnetlab.sequences.entanglement.estimators import chsh, correlator_shortfall
from qnetlab.sequences.entanglement.verification import (
    CLAIM_SIGMAS,
    bell_verdict,
    entanglement_verdict,
)
from qnetlab.uncertain import plus_minus, sigmas

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value,err,unit,text", [
    (1550.13811012, 2.35e-6, "nm", "1550.1381101 +- 0.0000023 nm"),  # was 1550.14 +- 2.35e-06
    (57683.4867, 218.0, "ps", "57680 +- 220 ps"),
    (0.70012, 0.0321, "", "0.700 +- 0.032"),
    (1.9234, 0.111, "", "1.92 +- 0.11"),
    (0.7, 0.0996, "", "0.70 +- 0.10"),  # the error rounds up a decade: one decimal fewer
    (5.3e9, 4.93e3, "Hz", "(5.3000000 +- 0.0000049)e+09 Hz"),
    (1.2e-9, 3e-12, "s", "(1.2000 +- 0.0030)e-09 s"),
    (2e-8, None, "s", "2e-08 s"),
    (0.5, 0.0, "", "0.5"),
    (float("nan"), float("nan"), "", "n/a"),
])
def test_values_show_the_digits_their_uncertainty_supports(value, err, unit, text):
    assert plus_minus(value, err, unit) == text


@pytest.mark.parametrize("value", [1550.13811012, 0.70012, 57683.4867, 3.3e-5, -0.0421])
@pytest.mark.parametrize("err", [2.35e-6, 0.032, 218.0, 0.5])
def test_formatted_values_keep_two_significant_digits_of_error_and_stay_within_it(value, err):
    text = plus_minus(value, err)
    match = re.fullmatch(r"\(?(-?[0-9.]+) \+- ([0-9.]+)\)?(e[+-]\d+)?", text)
    assert match, text
    scale = 10.0 ** int(match.group(3)[1:]) if match.group(3) else 1.0
    shown_value, shown_err = float(match.group(1)) * scale, float(match.group(2)) * scale
    assert shown_err == pytest.approx(float(f"{err:.1e}"))  # two significant digits
    assert abs(shown_value - value) <= 0.05 * err + 1e-12 * abs(value)


def test_significance_is_counted_in_standard_errors():
    assert sigmas(0.7, 0.04, 0.5) == pytest.approx(5.0)
    assert sigmas(1.9, 0.05, 2.0) == pytest.approx(-2.0)
    assert math.isnan(sigmas(float("nan"), 0.1, 0.5))


def test_entanglement_is_claimed_only_beyond_three_standard_errors():
    strong = entanglement_verdict(0.700, 0.030)
    assert strong.holds and strong.line() == ("entanglement witnessed: yes (F = 0.700 +- 0.030, "
                                              "6.7 standard errors above 0.5)")
    weak = entanglement_verdict(0.574, 0.065)  # above 1/2, but only by 1.1 standard errors
    assert not weak.holds
    assert weak.line() == ("entanglement witnessed: no (F = 0.574 +- 0.065, 1.1 standard errors "
                           f"above 0.5; {CLAIM_SIGMAS:g} needed)")
    assert not entanglement_verdict(float("nan"), float("nan")).holds


def test_bell_violation_verdict_from_measured_correlations():
    rng = np.random.default_rng(7)
    n = 4000
    sa, sb = rng.integers(0, 2, n), rng.integers(0, 2, n)
    # ideal Tsirelson correlations E = +-1/sqrt(2): |S| = 2 sqrt(2)
    e = np.where((sa == 1) & (sb == 1), -1, 1) / np.sqrt(2)
    out_a = rng.choice([-1.0, 1.0], n)
    out_b = np.where(rng.random(n) < (1 + e) / 2, out_a, -out_a)
    quantum = bell_verdict(chsh(sa, sb, out_a, out_b))
    assert abs(quantum.value - 2 * np.sqrt(2)) < 3 * quantum.err
    assert quantum.holds and quantum.line().startswith("Bell violation: yes (|S| = 2.")
    # equal outcomes 90 % of the time whatever the settings: E = 0.8, S = 1.6
    classical = bell_verdict(chsh(sa, sb, out_a, np.where(rng.random(n) < 0.9, out_a, -out_a)))
    assert not classical.holds and "standard errors below 2" in classical.line()


def test_fidelity_shortfall_names_what_is_missing():
    assert "got XX 0, YY 0, ZZ 0" in correlator_shortfall(np.array(["X"]), np.array(["Z"]))
    letters = np.array(list("XXYYZZ"))
    assert correlator_shortfall(letters, letters) is None
    assert "at least 2 pairs" in correlator_shortfall(letters[:5], letters[:5])


def test_link_check_passes_only_what_its_documentation_states():
    docs = (ROOT / "docs" / "calibration.md").read_text()
    stated = float(re.search(r"the link is ready when F >= ([0-9.]+)", docs).group(1))
    check = LinkCheck()
    assert check.threshold == stated
    # the case of the issue: 0.574 +- 0.065 was passed as "consistent with ready"
    assert check.judge(0.574, 0.065, 270.0).outcome is Outcome.OUT_OF_SPEC
    assert check.judge(stated, 0.065, 270.0).outcome is Outcome.IN_SPEC
    assert check.judge(0.2, 0.05, 270.0).outcome is Outcome.BAD_DATA
    assert check.judge(float("nan"), float("nan"), 0.0).outcome is Outcome.BAD_DATA
    assert "not ready: F >= 0.6" in check.judge(0.574, 0.065, 270.0).detail


def test_self_check_fails_a_link_whose_request_expired(link_rm):
    done = selfcheck.link_request_check(link_rm, "ab", "alice", pairs=5, max_time_s=3600)
    assert done.ok and "DONE" in done.summary
    # an uncalibrated link heralds about 0.2 pairs/s: 50 pairs cannot arrive within a minute
    expired = selfcheck.link_request_check(link_rm, "ab", "alice", pairs=50, max_time_s=60)
    assert not expired.ok and "EXPIRED" in expired.summary and "of 50 pairs" in expired.summary
