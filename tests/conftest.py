"""Shared fixtures: simulated labs reset between tests, instruments closed after each test."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import hdf5plugin
import pytest
import pyvisa
from hypothesis import settings
from qcodes.instrument import Instrument

from pyvisa_qnetlab import QnetlabVisaLibrary
from qnetlab.sim_instruments import lab_spec

pytest_plugins = ["pytester"]

settings.register_profile("qnetlab", deadline=None, max_examples=60, derandomize=True)
settings.load_profile("qnetlab")

Opener = Callable[[str], pyvisa.resources.MessageBasedResource]


@pytest.fixture(autouse=True)
def _close_qcodes_instruments() -> Iterator[None]:
    yield
    Instrument.close_all()


def _fresh_lab(name: str) -> Iterator[pyvisa.ResourceManager]:
    rm = pyvisa.ResourceManager(lab_spec(name))
    rm.visalib.reset_state()
    yield rm
    rm.visalib.reset_state()


@pytest.fixture
def link_rm() -> Iterator[pyvisa.ResourceManager]:
    """A ResourceManager on the built-in two-node link, reset to its seed around the test."""
    yield from _fresh_lab("link")


@pytest.fixture
def node_rm() -> Iterator[pyvisa.ResourceManager]:
    """A ResourceManager on the built-in single node, reset to its seed around the test."""
    yield from _fresh_lab("node")


@pytest.fixture
def open_on(request) -> Callable[[pyvisa.ResourceManager], Opener]:
    """``open_on(rm)("TCPIP0::...")`` opens with the instrument's terminator; closed afterwards."""
    opened: list[pyvisa.resources.MessageBasedResource] = []

    def factory(rm: pyvisa.ResourceManager) -> Opener:
        def op(resource: str) -> pyvisa.resources.MessageBasedResource:
            lake_shore_or_triton = resource.endswith(("::7777::SOCKET", "::33576::SOCKET"))
            term = "\r\n" if lake_shore_or_triton else "\n"
            read = "\n" if resource.endswith("::33576::SOCKET") else term  # Triton answers LF
            inst = rm.open_resource(resource, read_termination=read, write_termination=term)
            inst.timeout = 500
            opened.append(inst)
            return inst  # type: ignore[return-value]

        return op

    yield factory
    for inst in opened:
        try:
            inst.close()
        except pyvisa.Error:
            pass


@pytest.fixture
def link(link_rm, open_on):
    """(library, opener) for the two-node link."""
    lib: QnetlabVisaLibrary = link_rm.visalib  # type: ignore[assignment]
    return lib, open_on(link_rm)


QNU_A = "TCPIP0::qnu-alice.lab::inst0::INSTR"
QNU_B = "TCPIP0::qnu-bob.lab::inst0::INSTR"
PUMP_A = "TCPIP0::pump-alice.lab::inst0::INSTR"
AOM_A = "TCPIP0::aom-alice.lab::5025::SOCKET"
FRIDGE_A = "TCPIP0::fridge-alice.lab::7777::SOCKET"
TRITON_A = "TCPIP0::triton-alice.lab::33576::SOCKET"
STATION = "TCPIP0::herald-mid.lab::inst0::INSTR"


def hdf5_refusals(data: Path) -> list[str]:
    """Every ``*.h5`` below ``data`` that a plain h5py open (reading every dataset) or the
    distribution's ``h5dump -H`` refuses, with the reason; empty when all read."""
    bad = []
    env = {**os.environ, "HDF5_PLUGIN_PATH": hdf5plugin.PLUGIN_PATH}
    for path in sorted(data.rglob("*.h5")):
        try:
            with h5py.File(path, "r") as f:
                f.visititems(lambda _n, o: o[()] if isinstance(o, h5py.Dataset) else None)
        except Exception as exc:  # any failure to read is the finding
            bad.append(f"{path.name}: {type(exc).__name__}: {exc}")
        if shutil.which("h5dump") and subprocess.run(
                ["h5dump", "-H", str(path)], env=env, capture_output=True).returncode:
            bad.append(f"{path.name}: h5dump -H fails")
    return bad


@pytest.fixture
def lab():
    """The built-in link lab's library, reset before and after the test (defaults, clock 0)."""
    lib = pyvisa.ResourceManager(lab_spec("link")).visalib
    lib.reset_state()
    yield lib
    lib.reset_state()
