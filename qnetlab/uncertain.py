"""Values with their uncertainty, written with the digits the uncertainty supports.

One helper for the command line, the calibration tables and the reports: the uncertainty is
rounded to two significant digits and the value to the same decimal place, so
``1550.13811012 +- 2.35e-06 nm`` reads ``1550.1381101 +- 0.0000024 nm`` (not ``1550.14``, which
throws away the calibration's precision, nor ``1550.13811012``, which invents some).
"""

from __future__ import annotations

import math

SIG_DIGITS = 2
"""Significant digits kept in an uncertainty."""
PLAIN_RANGE = (1e-3, 1e6)
"""Magnitudes written without an exponent; outside it a common exponent is factored out."""


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _decimals(err: float) -> int:
    """Decimal places that keep ``SIG_DIGITS`` significant digits of ``err`` (may be < 0)."""
    return SIG_DIGITS - 1 - math.floor(math.log10(err))


def _fixed(x: float, decimals: int) -> str:
    if decimals > 0:
        return f"{x:.{decimals}f}"
    return f"{round(x, decimals):.0f}"


def _with_unit(text: str, unit: str) -> str:
    return f"{text} {unit}" if unit else text


def plus_minus(value: float | None, err: float | None = None, unit: str = "") -> str:
    """``value +- err unit`` with the digits ``err`` supports.

    Without a usable uncertainty (None, 0, nan, inf) the value keeps six significant digits and
    no ``+-``; a value that is not a number reads ``n/a``."""
    if not _finite(value):
        return _with_unit("n/a", unit)
    assert value is not None
    if not _finite(err) or err == 0:
        return _with_unit(f"{value:.6g}", unit)
    assert err is not None
    err = abs(err)
    # round the uncertainty first: 0.0996 at two digits is 0.10, which has one decimal fewer
    err = float(f"{err:.{SIG_DIGITS - 1}e}")
    size = max(abs(value), err)
    if PLAIN_RANGE[0] <= size < PLAIN_RANGE[1]:
        decimals = _decimals(err)
        return _with_unit(f"{_fixed(value, decimals)} +- {_fixed(err, decimals)}", unit)
    exponent = math.floor(math.log10(size))
    scale = 10.0 ** exponent
    decimals = _decimals(err / scale)
    body = f"({_fixed(value / scale, decimals)} +- {_fixed(err / scale, decimals)})e{exponent:+03d}"
    return _with_unit(body, unit)


def sigmas(value: float, err: float, bound: float) -> float:
    """How many standard errors ``value`` lies above ``bound`` (negative: below)."""
    if not (_finite(value) and _finite(err)):
        return math.nan
    if err == 0:
        return math.copysign(math.inf, value - bound) if value != bound else 0.0
    return (value - bound) / err
