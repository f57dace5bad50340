"""Argument parsing of the link layer's SCPI commands (``:LINK:CREATE``, ``:LINK:RES?``): what a
request may ask for, refused with the error-queue entry a real QNU would give."""

from __future__ import annotations

from qnetlab.sim_instruments.physics.heralding import (
    basis_vector,
)
from qnetlab.sim_instruments.protocol import InstrumentRefusal

MAX_PAIRS = 1_000_000


MAX_TIME_S = 7 * 86400.0


def parse_create(args: str) -> tuple[int, float, float, str, list[str], list[str]]:
    """``<pairs>,<min fidelity>,<max time s>,<K|M>[,<bases here>[,<bases peer>]]``."""
    fields = [f.strip() for f in args.split(",")]
    if len(fields) < 4 or len(fields) > 6:
        raise InstrumentRefusal("data_type_error", f"CREATE needs 4 to 6 fields, got {args!r}")
    try:
        n, fmin, tmax = int(fields[0]), float(fields[1]), float(fields[2])
    except ValueError as exc:
        raise InstrumentRefusal("data_type_error", f"CREATE {args!r}: {exc}") from None
    kind = fields[3].upper()
    if not 1 <= n <= MAX_PAIRS:
        raise InstrumentRefusal("data_out_of_range", f"pairs {n} not in 1..{MAX_PAIRS}")
    if not 0.0 <= fmin <= 1.0:
        raise InstrumentRefusal("data_out_of_range", f"min fidelity {fmin} not in 0..1")
    if not 0.0 < tmax <= MAX_TIME_S:
        raise InstrumentRefusal("data_out_of_range", f"max time {tmax} s not in (0, {MAX_TIME_S}]")
    if kind not in ("K", "M"):
        raise InstrumentRefusal("data_out_of_range", f"type {kind!r} is not K or M")
    here = (fields[4] if len(fields) > 4 else "Z").split("/")
    peer = (fields[5] if len(fields) > 5 else "Z").split("/")
    for token in here + peer:
        try:
            basis_vector(token)
        except ValueError as exc:
            raise InstrumentRefusal("data_out_of_range", str(exc)) from None
    return n, fmin, tmax, kind, [b.strip().upper() for b in here], [b.strip().upper() for b in peer]


def parse_results(args: str) -> tuple[str, int, int | None]:
    """``<id>[,<start>,<count>]`` -> (id, start, count or None for all)."""
    fields = [f.strip() for f in args.split(",")]
    if len(fields) not in (1, 3):
        raise InstrumentRefusal("data_type_error",
                                f"RES? takes <id> or <id>,<start>,<count>, got {args!r}")
    if len(fields) == 1:
        return fields[0], 0, None
    try:
        start, count = int(fields[1]), int(fields[2])
    except ValueError:
        raise InstrumentRefusal("data_type_error", f"RES? {args!r}: start and count must be "
                                "integers") from None
    if start < 0 or count < 0:
        raise InstrumentRefusal("data_out_of_range", f"RES? {args!r}: start {start} and count "
                                f"{count} must be >= 0")
    return fields[0], start, count
