"""A bare instrument YAML (no ``x-lab``, no ``x-bind``) loads on ``@qnetlab`` as a one-node lab.

Every instrument YAML found in ``sim_instruments/`` is covered, so an instrument added later is
checked without touching this file: it opens by path and by package path, answers ``*IDN?``,
its model is bound to the lab's one node, and every query its YAML computes from the physics
(``x-get``) answers without an error reported by the instrument.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyvisa
import yaml
from pyvisa import rname

import qnetlab.sim_instruments
from pyvisa_qnetlab import QnetlabVisaLibrary
from qnetlab.sim_instruments.physics.world import DEFAULT_NODE

FOLDER = Path(qnetlab.sim_instruments.__file__).parent
YAMLS = sorted(FOLDER.glob("*.yaml"))
ESR_ERRORS = 4 | 16 | 32  # query, execution, command error


def _concrete(command: str, channel: str | None = None) -> str:
    """The YAML's command in its shortest concrete form: optional ``[...]`` parts left out,
    a channel's ``{ch_id}`` filled in."""
    previous = None
    while previous != command:
        previous, command = command, re.sub(r"\[[^\[\]]*\]", "", command)
    return command.replace("{ch_id}", channel) if channel is not None else command


def _physics_queries(device: dict) -> list[str]:
    """Every getter the YAML computes from the physics (``x-get``), channels on their first id."""
    queries = [_concrete(p["getter"]["q"]) for p in (device.get("properties") or {}).values()
               if "x-get" in p]
    for channel in (device.get("channels") or {}).values():
        first = str(channel["ids"][0])
        queries += [_concrete(p["getter"]["q"], first)
                    for p in (channel.get("properties") or {}).values() if "x-get" in p]
    return queries


def _resources(path: Path) -> list[tuple[str, dict]]:
    """(resource name, device description) for each resource of an instrument YAML."""
    data = yaml.safe_load(path.read_text())
    return [(resource, data["devices"][spec["device"]])
            for resource, spec in data["resources"].items()]


def _open(rm: pyvisa.ResourceManager, resource: str, device: dict):
    parsed = rname.parse_resource_name(resource)
    eom = device["eom"][f"{parsed.interface_type} {parsed.resource_class}"]
    inst = rm.open_resource(resource, read_termination=eom["r"], write_termination=eom["q"])
    inst.timeout = 500
    return inst


def _errors(inst, device: dict) -> list[str]:
    """The instrument's pending errors: its SCPI error queue, else its ``*ESR?`` error bits;
    none for a product that answers errors in band (the Triton: checked reply by reply)."""
    error = device.get("error") or {}
    if "error_queue" not in error and "status_register" not in error:
        return []
    queue = error.get("error_queue")
    if queue:
        messages = []
        for _ in range(32):
            reply = inst.query(_concrete(queue[0]["q"]))
            if int(reply.split(",", 1)[0]) == 0:
                return messages
            messages.append(reply)
        return messages
    esr = int(inst.query("*ESR?"))
    return [f"*ESR? = {esr}"] if esr & ESR_ERRORS else []


@pytest.fixture(params=YAMLS, ids=[p.stem for p in YAMLS])
def bare(request) -> Iterator[tuple[Path, pyvisa.ResourceManager]]:
    """An instrument YAML of ``sim_instruments/`` opened on ``@qnetlab`` by its path."""
    path: Path = request.param
    rm = pyvisa.ResourceManager(f"{path}@qnetlab")
    rm.visalib.reset_state()
    yield path, rm
    rm.visalib.reset_state()


def test_the_folder_holds_the_instrument_yamls():
    assert {"pump_laser", "lakeshore372", "triton", "qnu"} <= {p.stem for p in YAMLS}


def test_bare_yaml_is_a_one_node_lab_and_answers_idn(bare):
    path, rm = bare
    lib: QnetlabVisaLibrary = rm.visalib  # type: ignore[assignment]
    assert list(lib.lab.nodes) == [DEFAULT_NODE]
    for resource, device in _resources(path):
        inst = _open(rm, resource, device)
        try:
            idn = inst.query("*IDN?")
            fields = idn.removeprefix("IDN:").split(":" if idn.startswith("IDN:") else ",")
            assert len(fields) == 4, f"{path.name} {resource}: *IDN? -> {idn!r}"
            model = lib.model(resource)
            assert model.node is lib.lab.nodes[DEFAULT_NODE]
        finally:
            inst.close()


def test_bare_yaml_answers_every_physics_query_without_error(bare):
    path, rm = bare
    for resource, device in _resources(path):
        queries = _physics_queries(device)
        assert queries, f"{path.name}: no x-get query to check"
        inst = _open(rm, resource, device)
        try:
            for query in queries:
                reply = inst.query(query)
                assert reply.strip(), f"{path.name}: {query!r} answered nothing"
                assert not reply.endswith("INVALID"), f"{path.name}: {query!r} -> {reply!r}"
                assert _errors(inst, device) == [], f"{path.name}: {query!r} -> {reply!r}"
        finally:
            inst.close()


def test_bare_yaml_opens_by_package_path_with_the_same_world():
    """``package.module:file.yaml@qnetlab`` names the same lab as the file's path."""
    by_package = pyvisa.ResourceManager("qnetlab.sim_instruments:pump_laser.yaml@qnetlab")
    by_path = pyvisa.ResourceManager(f"{FOLDER / 'pump_laser.yaml'}@qnetlab")
    assert by_package.visalib is by_path.visalib
    assert list(by_package.visalib.lab.nodes) == [DEFAULT_NODE]


def test_bare_pump_laser_drives_its_node_physics():
    """The laser of a bare YAML drives its node's physics: its power and output setting reach
    the pump state of the lab's one node."""
    rm = pyvisa.ResourceManager("qnetlab.sim_instruments:pump_laser.yaml@qnetlab")
    lib: QnetlabVisaLibrary = rm.visalib  # type: ignore[assignment]
    lib.reset_state()
    resource, device = _resources(FOLDER / "pump_laser.yaml")[0]
    inst = _open(rm, resource, device)
    try:
        node = lib.lab.nodes[DEFAULT_NODE]
        assert (node.pump.power_dbm, node.pump.output_on) != (3.0, True)
        inst.write(":SOUR0:POW 3")
        inst.write(":SOUR0:POW:STAT 1")
        assert _errors(inst, device) == []
        assert (node.pump.power_dbm, node.pump.output_on) == (3.0, True)
    finally:
        inst.close()
        lib.reset_state()
