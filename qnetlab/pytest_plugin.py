"""pytest plugin: simulated labs and stations for another project's CI (entry point ``pytest11``).

After ``pip install qnetlab`` these fixtures are available in any test suite:

- ``sim_lab``: factory ``sim_lab("link")`` -> :class:`SimLab` (seeded world, virtual clock,
  fault injection, hidden truth), reset after the test;
- ``sim_station``: a station brought up on the simulated lab (``sim_link`` unless the test is
  marked ``@pytest.mark.qnetlab_station("sim_chain")``), seeded, closed and reset afterwards;
- ``qnetlab_seed``: the seed (``--qnetlab-seed N`` on the command line, default 20261126);
- ``qnetlab_profile``: the device profile of the labs and stations above
  (``--qnetlab-profile sota-2025|target-2030``; default: each lab file's ``x-lab: profile``);
- ``qnetlab_data_dir``: a temporary data directory (also exported as ``QNETLAB_DATA``);
- ``qnetlab_store``: a :class:`~qnetlab.runstore.RunStore` in that directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

DEFAULT_SEED = 20261126
DEFAULT_STATION = "sim_link"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qnetlab", "qnetlab simulated lab")
    group.addoption("--qnetlab-seed", type=int, default=None,
                    help=f"seed of the simulated labs (default {DEFAULT_SEED})")
    group.addoption("--qnetlab-profile", default=None,
                    help="device profile of the simulated labs, e.g. sota-2025 or target-2030 "
                         "(default: each lab file's)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "qnetlab_station(name): station file the sim_station fixture brings up")


@dataclass
class SimLab:
    """A simulated lab as a test sees it: clock, faults, truth, reset."""

    library: Any  # pyvisa_qnetlab.QnetlabVisaLibrary
    seed: int
    profile: str | None = None  # device profile; None: the lab file's

    @property
    def clock(self) -> Any:
        return self.library.clock

    @property
    def faults(self) -> Any:
        return self.library.faults

    @property
    def world(self) -> Any:
        return self.library.lab

    @property
    def visalib(self) -> str:
        """The ``visalib`` string that opens this lab."""
        return f"{self.library.lab_path}@qnetlab"

    def truth(self) -> dict[str, Any]:
        """Hidden true parameters now (for assertions; drivers cannot see them)."""
        return self.library.lab.truth()

    def advance(self, seconds: float) -> float:
        return self.library.clock.advance(seconds)

    def reset(self, seed: int | None = None) -> None:
        self.library.reset_state(self.seed if seed is None else seed, self.profile)


@dataclass
class SimStation:
    """A station on the simulated lab: the bundle (station, topology, clock) plus the lab."""

    bundle: Any  # qnetlab.stations.StationBundle
    lab: SimLab

    @property
    def station(self) -> Any:
        return self.bundle.station

    @property
    def topology(self) -> Any:
        return self.bundle.topology

    @property
    def clock(self) -> Any:
        return self.bundle.clock

    def node(self, name: str) -> dict[str, Any]:
        return self.bundle.node(name)

    def herald(self, link: str) -> Any:
        return self.bundle.herald(link)

    def instrument(self, name: str) -> Any:
        return self.bundle.instrument(name)


def _library(spec: str) -> Any:
    import pyvisa

    from pyvisa_qnetlab import QnetlabVisaLibrary

    lib = pyvisa.ResourceManager(spec if "@" in spec else f"{spec}@qnetlab").visalib
    if not isinstance(lib, QnetlabVisaLibrary):
        raise TypeError(f"{spec!r} is not a simulated (@qnetlab) lab")
    return lib


def _station_visalibs(path: Path) -> set[str]:
    raw = yaml.safe_load(path.read_text())
    return {str(spec["init"]["visalib"]) for spec in raw["instruments"].values()
            if isinstance(spec, dict) and str((spec.get("init") or {}).get("visalib", ""))
            .endswith("@qnetlab")}


@pytest.fixture
def qnetlab_seed(request: pytest.FixtureRequest) -> int:
    seed = request.config.getoption("--qnetlab-seed")
    return DEFAULT_SEED if seed is None else int(seed)


@pytest.fixture
def qnetlab_profile(request: pytest.FixtureRequest) -> str | None:
    """The device profile asked for on the command line (None: each lab file's), checked."""
    name = request.config.getoption("--qnetlab-profile")
    if name is not None:
        from qnetlab.sim_instruments.physics.profiles import get_profile

        try:
            get_profile(name)
        except ValueError as exc:
            raise pytest.UsageError(f"--qnetlab-profile: {exc}") from None
    return name


@pytest.fixture
def qnetlab_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from qnetlab.datadir import set_data_dir

    path = tmp_path / "qnetlab-data"
    path.mkdir()
    monkeypatch.setenv("QNETLAB_DATA", str(path))
    set_data_dir(path)
    yield path
    set_data_dir(None)


@pytest.fixture
def qnetlab_store(qnetlab_data_dir: Path) -> Iterator[Any]:
    from qnetlab.runstore import RunStore

    store = RunStore(qnetlab_data_dir)
    yield store
    store.close()


@pytest.fixture
def sim_lab(qnetlab_seed: int, qnetlab_profile: str | None
            ) -> Iterator[Callable[..., SimLab]]:
    from qnetlab.sim_instruments import LABS, lab_spec

    made: list[SimLab] = []

    def factory(name: str = "link", seed: int | None = None,
                profile: str | None = None) -> SimLab:
        spec = lab_spec(name) if name in LABS else name
        lab = SimLab(_library(spec), qnetlab_seed if seed is None else seed,
                     profile or qnetlab_profile)
        lab.reset()
        made.append(lab)
        return lab

    yield factory
    _close_instruments_on({id(lab.library) for lab in made})
    for lab in made:
        lab.profile = None  # the next user finds the lab file's own device
        lab.reset()


def _close_instruments_on(visalibs: set[int]) -> None:
    """Close the QCoDeS instruments a test opened on the simulated labs the plugin handed
    out (they would not survive the labs' reset); the host project's others stay open."""
    from qcodes.instrument import Instrument

    # every instrument of every class, as Instrument.close_all walks them
    for name in list(Instrument._all_instruments):
        inst = Instrument._all_instruments.get(name)
        handle = getattr(inst, "visa_handle", None)
        if inst is not None and id(getattr(handle, "visalib", None)) in visalibs:
            inst.close()


@pytest.fixture
def sim_station(request: pytest.FixtureRequest, qnetlab_seed: int,
                qnetlab_profile: str | None, qnetlab_data_dir: Path) -> Iterator[SimStation]:
    from qnetlab.stations import load, station_file

    marker = request.node.get_closest_marker("qnetlab_station")
    name = marker.args[0] if marker and marker.args else DEFAULT_STATION
    path = station_file(name)
    libraries = [_library(spec) for spec in sorted(_station_visalibs(path))]
    if len(libraries) != 1:
        raise pytest.UsageError(f"{name}: sim_station needs a station on exactly one simulated "
                                f"lab, found {len(libraries)}")
    lab = SimLab(libraries[0], qnetlab_seed, qnetlab_profile)
    lab.reset()
    bundle = load(path)
    try:
        yield SimStation(bundle, lab)
    finally:
        bundle.close()  # the station's instruments, and no one else's
        _close_instruments_on({id(lab.library)})
        lab.profile = None
        lab.reset()
