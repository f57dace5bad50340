"""SCPI grammar: YAML command patterns in manual notation, compiled into matchers.

One job: turn what a client sends (``:sour:wavelength 1550nm;:sour:pow 5dbm``) into the literal
commands written in the instrument's YAML (``[:SOURce[0]]:WAVelength 1.55e-06``), which the
pyvisa-sim tables then match exactly. The YAML stays the one place where syntax is written.

Pattern notation (as in the manuals): ``SOURce`` has long form SOURCE and short form SOUR (the
upper-case part); ``[:NODE]`` is an optional node; ``NODE[0]`` a numeric suffix that may be
omitted (then it is 0); ``NODE{ch_id}`` a channel suffix (omitted means 1, as SCPI says).

Rules applied to what is received (IEEE 488.2 / SCPI-99): any case; long or short form, no other
truncation; optional leading colon; ``;`` separates commands and a command without a leading
colon is relative to the previous command's path (``*XXX`` common commands keep the path); MIN /
MAX / DEF for numeric settings with limits; unit suffixes with SI multipliers converted to the
property's ``x-unit``; ON / OFF for 0/1 settings. A refusal is a :class:`ScpiError` whose ``key``
names the error-queue entry (``undefined_header`` is -113, ``invalid_suffix`` -131, ...).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any

_PATTERN_NODE = re.compile(
    r"(?P<opt>\[)?:?(?P<kw>\*?[A-Za-z]+)(?:\[(?P<osuf>\d+)\]|(?P<suf>\d+)|(?P<ch>\{ch_id\}))?\]?")
_INPUT_NODE = re.compile(r"([A-Za-z]+)(\d*)\Z")
_HEADER_CHARS = re.compile(r"[A-Za-z0-9:*?]+\Z")
_NUMBER = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z/]*)\s*\Z")
_MULTIPLIERS = {"EX": 1e18, "PE": 1e15, "T": 1e12, "G": 1e9, "MA": 1e6, "K": 1e3, "M": 1e-3,
                "U": 1e-6, "N": 1e-9, "P": 1e-12, "F": 1e-15, "A": 1e-18, "": 1.0}
_BASE_UNITS = ("OHM", "DBM", "HZ", "M", "S", "W", "A", "V", "K")
_BOOLEANS = {"ON": "1", "OFF": "0"}


class ScpiError(ValueError):
    """A command the SCPI rules refuse; ``key`` names its error-queue entry."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class _Node:
    long: str
    short: str
    optional: bool
    suffix: str | None  # fixed suffix digits, "ch" for a channel id, None for none
    suffix_optional: bool


@dataclass
class Command:
    """One YAML command: its literal header and how its parameters are checked."""

    literal: str  # header as written in the YAML (may contain ``{ch_id}``)
    kind: str  # "query", "set", "call" or "event"
    spec: dict[str, Any] = field(default_factory=dict)
    unit: str | None = None
    default: Any = None
    fixed_params: frozenset[str] = frozenset()
    channels: tuple[str, ...] = ()  # valid ``{ch_id}`` values
    reply_format: str = "{}"  # a getter's ``r``, for the limits asked with MIN/MAX/DEF


class Reply(str):
    """A reply the grammar gives itself: a setting's limit asked as ``<query>? MIN|MAX|DEF``."""


def _keyword(text: str) -> tuple[str, str]:
    if text.startswith("*"):
        return text.upper(), text.upper()
    short = re.match(r"[A-Z]*", text).group(0) or text.upper()
    return text.upper(), short


def parse_pattern(header: str) -> list[_Node]:
    """``[:SOURce[0]]:WAVelength`` -> its nodes (the trailing ``?`` removed beforehand)."""
    nodes, pos = [], 0
    while pos < len(header):
        m = _PATTERN_NODE.match(header, pos)
        if not m or m.end() == pos:
            raise ValueError(f"SCPI pattern {header!r}: cannot read from {header[pos:]!r}")
        long, short = _keyword(m["kw"])
        if m["ch"]:
            suffix, sopt = "ch", True
        elif m["osuf"] is not None:
            suffix, sopt = m["osuf"], True
        else:
            suffix, sopt = m["suf"], False
        nodes.append(_Node(long, short, bool(m["opt"]), suffix, sopt))
        pos = m.end()
    return nodes


def _variants(nodes: list[_Node]) -> list[tuple[_Node, ...]]:
    optional = [i for i, n in enumerate(nodes) if n.optional]
    out = []
    for keep in itertools.product((True, False), repeat=len(optional)):
        dropped = {i for i, k in zip(optional, keep, strict=True) if not k}
        variant = tuple(n for i, n in enumerate(nodes) if i not in dropped)
        if variant:
            out.append(variant)
    return out


class Grammar:
    """The compiled command set of one SCPI instrument."""

    def __init__(self) -> None:
        self._table: dict[tuple[tuple[str, ...], bool], list[tuple[tuple[_Node, ...], Command]]]
        self._table = {}
        self._forms: dict[str, set[str]] = {}  # accepted spelling (upper) -> long forms
        self._cache: dict[tuple[tuple[str, ...], str], tuple[Command, str, tuple[str, ...]]] = {}
        self._literals: dict[str, Command] = {}  # headers exactly as the YAML writes them
        self._resolved: dict[tuple[tuple[str, ...], str], tuple[str, tuple[str, ...]]] = {}

    # --- compiling ---------------------------------------------------------------------------
    def add(self, pattern: str, command: Command) -> None:
        """Register a YAML header (``...?`` for queries) for ``command``."""
        query = pattern.endswith("?")
        if "{ch_id}" not in pattern:
            self._literals[pattern] = command
        nodes = parse_pattern(pattern.rstrip("?"))
        for node in nodes:
            self._forms.setdefault(node.long, set()).add(node.long)
            self._forms.setdefault(node.short, set()).add(node.long)
        for variant in _variants(nodes):
            key = (tuple(n.long for n in variant), query)
            self._table.setdefault(key, []).append((variant, command))

    # --- matching ----------------------------------------------------------------------------
    def split(self, message: str) -> list[str]:
        """Split a program message at ``;`` outside quoted strings."""
        if '"' not in message and "'" not in message:
            return message.split(";")
        parts, start, quote = [], 0, ""
        for i, c in enumerate(message):
            if quote:
                quote = "" if c == quote else quote
            elif c in "\"'":
                quote = c
            elif c == ";":
                parts.append(message[start:i])
                start = i + 1
        parts.append(message[start:])
        return parts

    def resolve(self, text: str, path: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        """One command -> (the YAML's literal command, the path for the next command)."""
        done = self._resolved.get((path, text))
        if done is not None:
            return done
        stripped = text.strip()
        done = self._resolve(stripped, path)
        if " " not in stripped and len(self._resolved) < 4096:
            self._resolved[(path, text)] = done  # a polled query costs one lookup
        return done

    def _resolve(self, text: str, path: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        header, _, params = text.partition(" ")
        if not header:
            raise ScpiError("syntax_error", "empty command")
        key = (path, header)
        hit = self._cache.get(key)
        if hit is None and header in self._literals and (not path or header[0] in ":*"):
            hit = self._literals[header], header, _literal_path(header, path)
        elif hit is None:
            hit = self._resolve_header(header, path)
            if len(self._cache) < 4096:
                self._cache[key] = hit
        command, literal, next_path = hit
        return self._with_params(command, literal, params.strip()), next_path

    def _resolve_header(self, header: str, path: tuple[str, ...]):
        text = header
        if not _HEADER_CHARS.match(header) or "?" in header[:-1] or "::" in header:
            raise ScpiError("syntax_error", f"header {header!r}")
        query = header.endswith("?")
        body = header.rstrip("?")
        if body.startswith("*"):
            tokens, next_path = [body], path
        else:
            rooted = body.startswith(":")
            tokens = [*(() if rooted else path), *body.lstrip(":").split(":")]
            next_path = tuple(tokens[:-1])
        longs, suffixes = [], []
        for token in tokens:
            m = _INPUT_NODE.match(token) if not token.startswith("*") else None
            word, suffix = (m.group(1).upper(), m.group(2)) if m else (token.upper(), "")
            candidates = self._forms.get(word)
            if candidates is None:
                raise ScpiError("undefined_header", text)
            longs.append(sorted(candidates))
            suffixes.append(suffix)
        for names in itertools.product(*longs):
            for variant, command in self._table.get((names, query), ()):
                literal = _fill(variant, suffixes, command)
                if literal is not None:
                    return command, literal, next_path
        raise ScpiError("undefined_header", text)

    def _with_params(self, command: Command, literal: str, params: str) -> str:
        if command.kind == "call":
            return f"{literal} {params}" if params else literal
        if command.kind in ("query", "event"):
            if command.fixed_params:
                word = params.upper()
                if not word:
                    raise ScpiError("missing_parameter", f"{literal} needs {_one_of(command)}")
                if word not in command.fixed_params:
                    raise ScpiError("parameter_not_allowed", f"{literal} {params}")
                return f"{literal} {word}"
            if params:
                return _limit_reply(command, literal, params)
            return literal
        if not params:
            raise ScpiError("missing_parameter", f"{literal} needs a value")
        return f"{literal} {convert_value(params, command)}"


def _literal_path(header: str, path: tuple[str, ...]) -> tuple[str, ...]:
    """The path after a header received exactly as the YAML writes it (as stock @sim takes)."""
    if header.startswith("*"):
        return path
    if "[" in header:  # manual notation sent literally: not SCPI input, so no path to follow
        return ()
    return tuple(header.rstrip("?").lstrip(":").split(":")[:-1])


def _limit_reply(command: Command, literal: str, params: str) -> Reply:
    """``:POW? MAX``: the limit of a numeric setting, formatted as its getter replies."""
    word = params.upper()
    spec = command.spec
    if word not in ("MIN", "MAX", "DEF") or "min" not in spec or "max" not in spec:
        raise ScpiError("parameter_not_allowed", f"{literal} takes no parameter {params!r}")
    value = {"MIN": spec["min"], "MAX": spec["max"], "DEF": command.default}[word]
    number = int(value) if spec.get("type") == "int" else float(value)
    return Reply(command.reply_format.format(number))


def _one_of(command: Command) -> str:
    return " or ".join(sorted(command.fixed_params))


def _fill(variant: tuple[_Node, ...], suffixes: list[str], command: Command) -> str | None:
    """Check the received suffixes against the pattern; the literal with the channel filled."""
    channel = None
    for node, got in zip(variant, suffixes, strict=True):
        if node.suffix is None:
            if got:
                return None
        elif node.suffix == "ch":
            channel = str(int(got)) if got else "1"
        elif got:
            if int(got) != int(node.suffix):
                return None
        elif not node.suffix_optional:
            return None
    if channel is not None:
        if channel not in command.channels:
            return None
        return command.literal.replace("{ch_id}", channel)
    return command.literal


def _unit_scale(unit: str) -> tuple[str, float] | None:
    """``pm`` -> ("M", 1e-12); ``mA`` -> ("A", 1e-3); None when not a known unit."""
    upper = unit.upper()
    if upper == "DBM":
        return "DBM", 1.0
    for base in _BASE_UNITS:
        if upper.endswith(base):
            prefix = upper[: -len(base)]
            if prefix in _MULTIPLIERS:
                mega = prefix == "M" and base in ("HZ", "OHM")  # MHZ, MOHM: SCPI's exceptions
                return base, 1e6 if mega else _MULTIPLIERS[prefix]
    return None


def _suffix_value(number: float, suffix: str, unit: str | None) -> float:
    if unit and unit.upper().endswith("/S") and suffix.upper().endswith("/S"):
        unit, suffix = unit[:-2], suffix[:-2]  # rates (nm/s against m/s): scale the numerator
    target = _unit_scale(unit) if unit else None
    got = _unit_scale(suffix)
    if target is None or got is None:
        raise ScpiError("invalid_suffix", f"suffix {suffix!r} (unit {unit or 'none'})")
    (tbase, tscale), (gbase, gscale) = target, got
    if tbase == gbase:
        return number * gscale / tscale
    if tbase == "DBM" and gbase == "W":
        watts = number * gscale
        if watts <= 0:
            raise ScpiError("data_out_of_range", f"{number}{suffix} is not a positive power")
        return 10 * math.log10(watts / 1e-3)
    raise ScpiError("invalid_suffix", f"suffix {suffix!r} where {unit} is expected")


def convert_value(text: str, command: Command) -> str:
    """A received parameter -> the text the YAML's setter expects (units, MIN/MAX, ON/OFF)."""
    spec = command.spec
    kind = spec.get("type", "str")
    word = text.upper()
    if kind == "str":
        return word if "valid" in spec else text
    if word in ("MIN", "MAX", "DEF"):
        if word == "DEF":
            return str(command.default)
        if "min" not in spec or "max" not in spec:
            raise ScpiError("data_type_error", f"{word} not allowed for {command.literal}")
        return str(spec["min"] if word == "MIN" else spec["max"])
    if word in _BOOLEANS and {str(v) for v in spec.get("valid", ())} == {"0", "1"}:
        return _BOOLEANS[word]
    m = _NUMBER.match(text)
    if not m:
        raise ScpiError("data_type_error", f"{text!r} is not a number")
    number, suffix = m.groups()
    value = _suffix_value(float(number), suffix, command.unit) if suffix else float(number)
    if kind == "float":
        return number if not suffix else repr(value)
    return str(round(value))


def compile_device(device_dict: dict[str, Any]) -> Grammar:
    """The grammar of one YAML device: every dialogue, getter and setter, channels included."""
    grammar = Grammar()
    _add_component(grammar, device_dict, ())
    for channel in (device_dict.get("channels") or {}).values():
        _add_component(grammar, channel, tuple(str(i) for i in channel.get("ids", ())))
    err = device_dict.get("error") or {}
    if isinstance(err, dict):
        for entry in (*err.get("status_register", ()), *err.get("error_queue", ())):
            grammar.add(entry["q"], Command(entry["q"], "query"))
    return grammar


def _add_component(grammar: Grammar, component: dict[str, Any], ids: tuple[str, ...]) -> None:
    fixed: dict[str, set[str]] = {}
    for dia in component.get("dialogues") or ():
        header, _, param = dia["q"].strip().partition(" ")
        if param:
            fixed.setdefault(header, set()).add(param.strip().upper())
        else:
            kind = "query" if header.endswith("?") else "event"
            grammar.add(header, Command(header, kind, channels=ids))
    for header, params in fixed.items():
        grammar.add(header, Command(header, "query" if header.endswith("?") else "event",
                                    fixed_params=frozenset(params), channels=ids))
    for prop in (component.get("properties") or {}).values():
        if "getter" in prop:
            getter = prop["getter"]["q"].strip()
            settable = dict(prop.get("specs") or {}) if "setter" in prop else {}
            grammar.add(getter, Command(getter, "query", settable, default=prop.get("default"),
                                        channels=ids, reply_format=prop["getter"].get("r", "{}")))
        if "setter" in prop:
            header = prop["setter"]["q"].strip().partition(" ")[0]
            kind = "call" if "x-call" in prop else "set"
            grammar.add(header, Command(header, kind, dict(prop.get("specs") or {}),
                                        prop.get("x-unit"), prop.get("default"), channels=ids))
