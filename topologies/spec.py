"""Topology specs: the short names of generated networks (``chain:16``, ``star:8``, ``twosite``).

A spec is ``KIND:N`` (``twosite`` alone means ``twosite:4``). Bad specs are one-line
:class:`SpecError` messages naming the spec, the value and what is allowed. The kinds and their
builders are registered in :data:`KINDS` (``qnetlab.topologies.network``), so a new kind (a data
center, say) is one more entry, not a new parser.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

MIN_NODES = 2
MAX_NODES = 64
#: kinds that may be written without ``:N``, with the N they mean
DEFAULT_N = {"twosite": 4}
#: looks like ``word:args`` with no dot or path separator (``pkg.module:file.yaml`` is not one)
_SPEC_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9_]*:[^./\\]*")


class SpecError(ValueError):
    """A topology spec is wrong: the message names the spec, the value and what is allowed."""


@dataclass(frozen=True)
class TopologySpec:
    """A parsed spec: the kind and its node count (canonical text: :attr:`text`)."""

    kind: str
    n: int

    @property
    def text(self) -> str:
        """The canonical spec, ``chain:16``: the same for ``chain:016`` and ``CHAIN:16``."""
        return f"{self.kind}:{self.n}"

    @property
    def slug(self) -> str:
        """A file-name form of the spec, ``chain-16``."""
        return f"{self.kind}-{self.n}"


def looks_like_spec(text: str, kinds: tuple[str, ...]) -> bool:
    """True if ``text`` is meant as a topology spec rather than a file or package resource:
    ``word:args`` without dots or slashes that is not an existing file, or a bare kind that may
    stand alone (``twosite``). ``ring:4`` is a spec (an unknown kind, reported as such)."""
    text = str(text)
    if os.path.exists(text):
        return False
    return bool(_SPEC_SHAPE.fullmatch(text)) or text.lower() in DEFAULT_N


def parse_spec(text: str, kinds: tuple[str, ...]) -> TopologySpec:
    """``"chain:16"`` -> ``TopologySpec("chain", 16)``; :class:`SpecError` otherwise."""
    raw = str(text).strip()
    kind, sep, arg = raw.partition(":")
    kind = kind.lower()
    allowed = ", ".join(f"{k}:N" for k in kinds) + f" with N {MIN_NODES}..{MAX_NODES}"
    if kind not in kinds:
        raise SpecError(f"topology spec {raw!r}: unknown kind {kind!r} (allowed: {allowed})")
    if not sep and kind in DEFAULT_N:
        return TopologySpec(kind, DEFAULT_N[kind])
    if not sep:
        raise SpecError(f"topology spec {raw!r}: no node count (allowed: {allowed}, e.g. "
                        f"{kind}:8)")
    try:
        n = int(arg)
    except ValueError:
        raise SpecError(f"topology spec {raw!r}: N={arg!r} is not a whole number "
                        f"(allowed: {allowed})") from None
    if not MIN_NODES <= n <= MAX_NODES:
        raise SpecError(f"topology spec {raw!r}: N={n} is out of range (allowed: {allowed})")
    return TopologySpec(kind, n)
