"""Topology specs: the short names of generated networks (``chain:16``, ``star:8``, ``twosite``).

A spec is ``KIND:ARGS``: a kind and its whole-number arguments separated by commas
(``chain:16``; a kind with two, say a data center, ``dc:8,2``); a kind with defaults may stand
alone (``twosite`` means ``twosite:4``). Each kind declares its arguments with their ranges
(:class:`Param`), so a bad spec is a one-line :class:`SpecError` naming the spec, the value and
what is allowed, and a new kind is one more registry entry, not a new parser.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MIN_NODES = 2
MAX_NODES = 64
#: looks like ``word:args`` with no dot or path separator (``pkg.module:file.yaml`` is not one)
_SPEC_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9_]*:[^./\\]*")


class SpecError(ValueError):
    """A topology spec is wrong: the message names the spec, the value and what is allowed."""


@dataclass(frozen=True)
class Param:
    """One whole-number argument of a kind of spec, with its allowed range."""

    name: str
    low: int
    high: int

    def describe(self) -> str:
        return f"{self.name} {self.low}..{self.high}"


#: the node count of chain, star and twosite
NODES = Param("N", MIN_NODES, MAX_NODES)


@dataclass(frozen=True)
class TopologySpec:
    """A parsed spec: the kind and its arguments (canonical text: :attr:`text`)."""

    kind: str
    args: tuple[int, ...]

    @property
    def n(self) -> int:
        """The first argument: the node count of chain, star and twosite."""
        return self.args[0]

    @property
    def text(self) -> str:
        """The canonical spec, ``chain:16``: the same for ``chain:016`` and ``CHAIN:16``."""
        return f"{self.kind}:{','.join(map(str, self.args))}"

    @property
    def slug(self) -> str:
        """A file-name form of the spec, ``chain-16`` (``dc-8-2``)."""
        return "-".join((self.kind, *map(str, self.args)))


def looks_like_spec(text: str, defaults: Sequence[str]) -> bool:
    """True if ``text`` is meant as a topology spec rather than a file or package resource:
    ``word:args`` without dots or slashes that is not an existing file, or a kind that may
    stand alone (``defaults``, e.g. ``twosite``). ``ring:4`` is a spec (an unknown kind)."""
    text = str(text)
    if os.path.exists(text):
        return False
    return bool(_SPEC_SHAPE.fullmatch(text)) or text.lower() in defaults


def usage(kinds: Mapping[str, Sequence[Param]]) -> str:
    """What specs are allowed: ``chain:N, star:N, twosite:N with N 2..64``."""
    forms = ", ".join(f"{k}:{','.join(p.name for p in params)}" for k, params in kinds.items())
    ranges = {p.describe() for params in kinds.values() for p in params}
    return f"{forms} with {', '.join(sorted(ranges))}"


def parse_spec(text: str, kinds: Mapping[str, Sequence[Param]],
               defaults: Mapping[str, tuple[int, ...]]) -> TopologySpec:
    """``"chain:16"`` -> ``TopologySpec("chain", (16,))``; :class:`SpecError` otherwise.
    ``kinds`` gives each kind's arguments, ``defaults`` the arguments of a bare kind."""
    raw = str(text).strip()
    kind, sep, arg = raw.partition(":")
    kind = kind.lower()
    allowed = usage(kinds)
    if kind not in kinds:
        raise SpecError(f"topology spec {raw!r}: unknown kind {kind!r} (allowed: {allowed})")
    params = kinds[kind]
    if not sep and kind in defaults:
        return TopologySpec(kind, defaults[kind])
    form = f"{kind}:{','.join(p.name for p in params)}"
    values = arg.split(",") if sep else []
    if len(values) != len(params):
        raise SpecError(f"topology spec {raw!r}: needs {form} ({len(params)} whole "
                        f"number{'s' if len(params) > 1 else ''}; allowed: {allowed})")
    return TopologySpec(kind, tuple(_value(raw, p, v, allowed) for p, v in
                                    zip(params, values, strict=True)))


def _value(raw: str, param: Param, value: str, allowed: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SpecError(f"topology spec {raw!r}: {param.name}={value!r} is not a whole number "
                        f"(allowed: {allowed})") from None
    if not param.low <= number <= param.high:
        raise SpecError(f"topology spec {raw!r}: {param.name}={number} is out of range "
                        f"(allowed: {allowed})")
    return number
