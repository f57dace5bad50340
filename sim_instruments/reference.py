"""Command reference tables generated from the instrument YAMLs (the one place syntax lives).

``python -m qnetlab.sim_instruments.reference docs/instruments`` rewrites one Markdown page per
instrument; a test fails when a committed page no longer matches its YAML.
"""

from __future__ import annotations

import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

INSTRUMENTS = ("qnu", "pump_laser", "awg_33522b", "lakeshore372", "triton", "optical_switch")


def _range(p: dict[str, Any]) -> str:
    specs = p.get("specs") or {}
    if "valid" in specs:
        return " \\| ".join(str(v) for v in specs["valid"])
    lo, hi = specs.get("min"), specs.get("max")
    if lo is not None or hi is not None:
        return f"{lo if lo is not None else ''} .. {hi if hi is not None else ''}"
    return specs.get("type", "")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").replace("\r", "")


def _rows(component: dict[str, Any], ids: list[str] | None = None) -> list[list[str]]:
    rows = []
    for d in component.get("dialogues", []) or []:
        reply = d.get("r", "(no reply)")
        rows.append([f"`{d['q']}`", d.get("x-unit", ""), "", f"`{reply}`", d.get("x-doc", "")])
    for name, p in (component.get("properties") or {}).items():
        cmds = []
        if "setter" in p:
            cmds.append(f"`{p['setter']['q']}`")
        if "getter" in p:
            cmds.append(f"`{p['getter']['q']}`")
        if "getter" in p:
            reply = p["getter"].get("r", "")
        elif "r" in p.get("setter", {}):
            reply = p["setter"]["r"]
        else:
            reply = "(no reply)"
        doc = p.get("x-doc", name.replace("_", " "))
        default = p.get("default")
        if default not in (None, ""):
            doc = f"{doc} (default {default})"
        rows.append([" / ".join(cmds), p.get("x-unit", ""), _range(p), f"`{reply}`", doc])
    return rows


_SCPI_NOTE = (
    "Parsing (SCPI-99, on `@qnetlab`): commands are written in the manual's notation. Headers "
    "are case-insensitive; each keyword takes its long form or its short form (the upper-case "
    "part), nothing in between; `[...]` nodes may be left out; `[0]` is a numeric suffix that may "
    "be left out; `{ch_id}` is a channel number (left out: 1); the leading colon is optional. "
    "`;` joins commands: one without a leading colon continues the previous command's path, "
    "`*XXX` common commands keep it. Numeric settings with a range take MIN, MAX and DEF, and "
    "unit suffixes with SI multipliers converted to the unit shown (`1550NM`, `1.55UM`, `2MW` "
    "for dBm, `200NS`, `12UA`), and their queries answer `? MIN`, `? MAX`, `? DEF`; 0/1 "
    "settings take ON/OFF. Errors: -102 syntax, -104 data type, "
    "-108 parameter not allowed, -109 missing parameter, -113 undefined header, -131 invalid "
    "suffix, -222 out of range, -350 queue overflow, -410 reply discarded by a new command, "
    "-420 read before the query was terminated. Stock `@sim` matches only the literal strings.")
_EXACT_NOTE = ("Parsing: not SCPI. Commands match exactly as written here (case-sensitive), "
               "as the product's own protocol does.")


def render(name: str) -> str:
    path = Path(str(files("qnetlab.sim_instruments") / f"{name}.yaml"))
    data = yaml.load(path.read_text(), Loader=yaml.BaseLoader)
    (_dev_name, dd), = data["devices"].items()
    out = [f"# `{name}.yaml`: command reference", "",
           f"{dd.get('x-doc', '')}", "",
           f"Generated from `sim_instruments/{name}.yaml` by "
           "`python -m qnetlab.sim_instruments.reference docs/instruments`; do not edit.", ""]
    eoms = ", ".join(f"{k}: write `{v['q']!r}` / read `{v['r']!r}`" for k, v in dd["eom"].items())
    out += [f"Terminators: {eoms}.", ""]
    out += [_SCPI_NOTE if str(dd.get("x-scpi", "")).lower() == "true" else _EXACT_NOTE, ""]
    err = dd.get("error", {})
    for q in err.get("error_queue", []):
        codes = ", ".join(f"`{v}`" for k, v in q.items() if k not in ("q", "default"))
        out += [f"Error queue `{q['q']}` (empty: `{q['default']}`): {codes}. Refusals append the "
                "detail (value, limit, command) inside the quotes.", ""]
    for r in err.get("status_register", []):
        bits = ", ".join(f"{v} {k}" for k, v in r.items() if k != "q")
        out += [f"Status register `{r['q']}`: {bits}.", ""]
    if "query_error" in err.get("response", {}):
        out += [f"A refused or unknown *query* answers `{err['response']['query_error']}` at once "
                "on the `@qnetlab` backend (stock `@sim` sends nothing and the read times out).", ""]
    if "command_error" in err.get("response", {}):
        out += [f"An unknown command answers `{err['response']['command_error']}` (in-band, as "
                "the product does).", ""]
    header = ["| command | unit | range | reply | meaning |", "|---|---|---|---|---|"]
    out += ["## Commands", "", *header]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in _rows(dd)]
    for group, cd in (dd.get("channels") or {}).items():
        ids = ", ".join(cd["ids"])
        out += ["", f"## Channels `{group}` (`{{ch_id}}` in {ids})", "", cd.get("x-doc", ""), "",
                *header]
        out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in _rows(cd)]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "docs/instruments")
    target.mkdir(parents=True, exist_ok=True)
    for name in INSTRUMENTS:
        (target / f"{name}.md").write_text(render(name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
