"""Requests and replies of the data center's link layer, after the QuTech link layer
(Dahlberg et al., SIGCOMM 2019; draft-dahlberg-ll-quantum) and NetQASM's request parameters.

A :class:`Create` asks for ``pairs`` entangled pairs between its ``origin`` and ``remote``
QPUs, each at least ``min_fidelity`` when delivered, within ``max_time_s`` of lab time. The link
layer answers at once with an :class:`Ack` (the create id) or an :class:`Err`, then one
:class:`Ok` per delivered pair, and an :class:`Err` if the request ends short:

- ``UNSUPP``: the request asks for something this data center cannot do (unknown node, a node
  with itself, a basis other than X, Y, Z);
- ``REJECTED``: no link or path can meet ``min_fidelity`` with the present calibration;
- ``EXPIRE``: ``max_time_s`` passed before the request was ever served (it expired queued);
- ``TIMEOUT``: ``max_time_s`` passed while it was served, with fewer pairs than asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

BASES = ("X", "Y", "Z")
MAX_PAIRS = 1_000_000
MAX_TIME_S = 7 * 86400.0


class ErrorCode(StrEnum):
    UNSUPP = "UNSUPP"
    REJECTED = "REJECTED"
    TIMEOUT = "TIMEOUT"
    EXPIRE = "EXPIRE"


@dataclass(frozen=True)
class Create:
    """CREATE: ``pairs`` pairs between ``origin`` and ``remote``.

    ``kind`` "K" keeps each pair in the QPUs' communication qubits; "M" measures both qubits at
    once in a basis drawn from ``bases`` (the OK carries basis and outcome). ``priority``: higher
    is served first. ``purpose_id`` names the application (port-like)."""

    origin: str
    remote: str
    pairs: int = 1
    min_fidelity: float = 0.5
    max_time_s: float = 10.0
    priority: int = 0
    kind: str = "K"
    bases: tuple[str, ...] = ("Z",)
    purpose_id: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.pairs, int) or not 1 <= self.pairs <= MAX_PAIRS:
            raise ValueError(f"pairs={self.pairs!r} must be an integer in 1..{MAX_PAIRS}")
        if not 0.0 <= self.min_fidelity <= 1.0:
            raise ValueError(f"min_fidelity={self.min_fidelity!r} must be in 0..1")
        if not 0.0 < self.max_time_s <= MAX_TIME_S:
            raise ValueError(f"max_time_s={self.max_time_s!r} must be in (0, {MAX_TIME_S:g}] s")
        if self.kind not in ("K", "M"):
            raise ValueError(f"kind={self.kind!r} must be 'K' (keep) or 'M' (measure)")
        if not isinstance(self.priority, int):
            raise ValueError(f"priority={self.priority!r} must be an integer (higher first)")


@dataclass(frozen=True)
class Ack:
    create_id: int
    t: float  # lab time of the acknowledgement


class Ok(NamedTuple):
    """One delivered pair (a named tuple: a data center delivers tens of thousands a minute).
    ``goodness`` is the link layer's fidelity estimate at
    ``time_of_goodness`` (the herald); ``bell_state`` the heralded Bell state. For type M,
    ``basis`` and ``outcome`` (+1/-1) of the origin's qubit (the remote's in ``remote_outcome``)."""

    create_id: int
    pair_id: int
    sequence: int
    goodness: float
    time_of_goodness: float
    bell_state: str
    station: str
    purpose_id: int = 0
    basis: str = ""
    outcome: int = 0
    remote_outcome: int = 0


@dataclass(frozen=True)
class Err:
    create_id: int
    code: ErrorCode
    detail: str
    t: float


@dataclass
class Outcome:
    """Everything the link layer answered to one request."""

    create: Create
    reply: Ack | Err
    oks: list[Ok] = field(default_factory=list)
    error: Err | None = None
    t_submit: float = 0.0
    t_done: float | None = None

    @property
    def create_id(self) -> int:
        return self.reply.create_id

    @property
    def completed(self) -> bool:
        """All pairs delivered within ``max_time_s`` (each OK's goodness meets the minimum)."""
        return (isinstance(self.reply, Ack) and self.error is None
                and len(self.oks) == self.create.pairs)

    @property
    def status(self) -> str:
        if isinstance(self.reply, Err):
            return self.reply.code.value
        if self.error is not None:
            return self.error.code.value
        return "DONE" if self.completed else "ACTIVE"
