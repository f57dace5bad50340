"""Generated topologies: lab and station files for networks of any size (``chain:16``).

``qnetlab.stations.load("chain:16")``, ``qnetlab --station star:8 calibrate``,
``qnetlab sim serve twosite`` and a visalib ``"chain:16@qnetlab"`` all take a spec; the files
are generated into a cache directory (:mod:`.cache`) on first use, and ``qnetlab sim generate
SPEC --out DIR`` writes them for a user to edit. This package imports nothing of qnetlab: the
station side (``qnetlab.stations``) and the simulated lab (``pyvisa_qnetlab``) both build on it.
"""

from __future__ import annotations

import functools
from pathlib import Path

from .cache import cache_dir, write_if_changed
from .network import KINDS, NETWORK_KINDS, Instrument, Kind, LinkDesc, Network, NetworkKind
from .render import lab_yaml, station_yaml
from .spec import MAX_NODES, MIN_NODES, Param, SpecError, TopologySpec, looks_like_spec, parse_spec
from .spec import usage as _usage

__all__ = [
    "KINDS", "MAX_NODES", "MIN_NODES", "NETWORK_KINDS", "Instrument", "Kind", "LinkDesc",
    "Network", "NetworkKind", "Param", "SpecError", "TopologySpec", "build", "cache_dir",
    "is_spec", "lab_file", "lab_yaml", "parse", "station_file", "station_yaml", "usage",
    "write_files",
]


def is_spec(text: str) -> bool:
    """True if ``text`` names a generated topology (valid or not) rather than a file."""
    defaults = [k for k, kind in NETWORK_KINDS.items() if kind.default is not None]
    return looks_like_spec(str(text), defaults)


def usage() -> str:
    """The specs allowed, for messages: ``chain:N, star:N, twosite:N with N 2..64``."""
    return _usage({k: kind.params for k, kind in NETWORK_KINDS.items()})


def parse(text: str) -> TopologySpec:
    """The spec ``text`` parsed; :class:`SpecError` (one line) if it is wrong."""
    return parse_spec(text, {k: kind.params for k, kind in NETWORK_KINDS.items()},
                      {k: kind.default for k, kind in NETWORK_KINDS.items()
                       if kind.default is not None})


def build(text: str, seed: int | None = None) -> Network:
    """The :class:`Network` of a spec (``seed``: the world's seed, default the generator's)."""
    spec = parse(text)
    return NETWORK_KINDS[spec.kind].build(spec, seed)


def lab_file(text: str, instruments_dir: str | Path) -> Path:
    """The cached lab file of a spec, generated (atomically) if missing or out of date."""
    spec = parse(text)
    path = _cached_lab(spec.text, str(Path(instruments_dir).resolve()), str(cache_dir()))
    return path if path.is_file() else _cached_lab.__wrapped__(
        spec.text, str(Path(instruments_dir).resolve()), str(cache_dir()))


@functools.lru_cache(maxsize=64)
def _cached_lab(spec: str, instruments_dir: str, directory: str) -> Path:
    # every instrument of a station opens the lab through this: write once per process
    network = build(spec)
    return write_if_changed(Path(directory) / f"{parse(spec).slug}.yaml",
                            lab_yaml(network, instruments_dir))


def station_file(text: str) -> Path:
    """The cached station file of a spec; its instruments open ``"<spec>@qnetlab"``."""
    spec = parse(text)
    network = build(spec.text)
    return write_if_changed(cache_dir() / f"{spec.slug}.station.yaml",
                            station_yaml(network, f"{spec.text}@qnetlab"))


def write_files(text: str, out_dir: str | Path, instruments_dir: str | Path,
                seed: int | None = None) -> tuple[Path, Path]:
    """Write a spec's lab file and station file into ``out_dir`` for a user to edit:
    ``<slug>.yaml`` and ``<slug>.station.yaml``, the station opening that lab file by its
    absolute path. Returns (lab file, station file)."""
    spec = parse(text)
    network = build(spec.text, seed)
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    lab = write_if_changed(out / f"{spec.slug}.yaml", lab_yaml(network, instruments_dir))
    station = write_if_changed(out / f"{spec.slug}.station.yaml",
                               station_yaml(network, f"{lab}@qnetlab"))
    return lab, station
