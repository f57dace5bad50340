"""Every instrument YAML and lab file loads on stock @sim and on @qnetlab; internals smoke test."""

from __future__ import annotations

import warnings
from importlib.resources import files
from pathlib import Path

import pytest
import pyvisa
import pyvisa_sim
import yaml
from qcodes.instrument_drivers.Lakeshore import LakeshoreModel372

from qnetlab.sim_instruments import LABS, lab_file, lab_spec

SIM = Path(str(files("qnetlab.sim_instruments")))
INSTRUMENT_YAMLS = sorted(SIM.glob("*.yaml"))
IDN_PREFIX = {"qnu.yaml": "QNETLAB,QNU", "pump_laser.yaml": "Keysight Technologies,N7776C",
              "awg_33522b.yaml": "Keysight Technologies,33522B", "lakeshore372.yaml": "LSCI",
              "triton.yaml": "IDN:OXFORD INSTRUMENTS:TRITON", "optical_switch.yaml": "Polatis,"}


STATION_REFUSES = {"XDUC:MW:FREQ?", "XDUC:EFF?", "XDUC:NADD?", "QUB:SWAP:MEAS?"}


def _term(resource: str) -> str:
    # the Lake Shore (port 7777) and the Triton (33576) take CR LF; SCPI products LF
    return "\r\n" if resource.endswith(("::7777::SOCKET", "::33576::SOCKET")) else "\n"


def _read_term(resource: str) -> str:
    """The Triton (port 33576) takes CR LF and answers with LF."""
    return "\n" if resource.endswith("::33576::SOCKET") else _term(resource)


@pytest.mark.parametrize("path", INSTRUMENT_YAMLS, ids=lambda p: p.name)
def test_instrument_yaml_loads_on_stock_sim_and_answers_idn(path):
    rm = pyvisa.ResourceManager(f"{path}@sim")
    try:
        (resource,) = rm.list_resources("?*")
        inst = rm.open_resource(resource, read_termination=_read_term(resource),
                                write_termination=_term(resource))
        inst.timeout = 500
        assert inst.query("*IDN?").startswith(IDN_PREFIX[path.name])
        inst.close()
    finally:
        rm.visalib._init()  # pyvisa-sim keeps state per path; start the next user afresh


@pytest.mark.parametrize("lab", LABS)
@pytest.mark.parametrize("backend", ["sim", "qnetlab"])
def test_lab_files_load_and_every_instrument_answers(lab, backend):
    rm = pyvisa.ResourceManager(f"{lab_file(lab)}@{backend}")
    resources = rm.list_resources("?*")
    expected = yaml.safe_load(Path(lab_file(lab)).read_text())["resources"]
    assert len(resources) == len(expected)
    for resource in resources:
        inst = rm.open_resource(resource, read_termination=_read_term(resource),
                                write_termination=_term(resource))
        inst.timeout = 500
        assert inst.query("*IDN?")
        inst.close()
    if backend == "sim":
        rm.visalib._init()
    else:
        rm.visalib.reset_state()


def test_stock_sim_gives_static_values_where_qnetlab_gives_physics():
    resource = "TCPIP0::fridge-alice.lab::7777::SOCKET"
    static = pyvisa.ResourceManager(f"{lab_file('node')}@sim").open_resource(
        resource, read_termination="\r\n", write_termination="\r\n")
    live = pyvisa.ResourceManager(lab_spec("node")).open_resource(
        resource, read_termination="\r\n", write_termination="\r\n")
    assert float(static.query("KRDG? 6")) == 0.0
    assert float(live.query("KRDG? 6")) == pytest.approx(0.008, rel=0.02)
    static.close(), live.close()


def _queries(device_dict: dict) -> list[str]:
    """Every query the YAML defines: dialogues with '?' and every getter, per channel id."""
    queries = [d["q"] for d in device_dict.get("dialogues", [])
               if "?" in d["q"] or d["q"].startswith("READ:")]  # Triton: READ: paths
    queries += [p["getter"]["q"] for p in device_dict.get("properties", {}).values()
                if "getter" in p]
    for group in device_dict.get("channels", {}).values():
        for p in group.get("properties", {}).values():
            if "getter" in p:
                queries += [p["getter"]["q"].format(ch_id=i) for i in group["ids"]]
    return queries


@pytest.mark.parametrize("backend", ["sim", "qnetlab"])
def test_every_query_of_every_yaml_answers_promptly_without_error(backend):
    """Walk the YAMLs on the link lab: each getter and query dialogue gets a prompt reply."""
    lab = Path(lab_file("link"))
    rm = pyvisa.ResourceManager(f"{lab}@{backend}")
    if backend == "qnetlab":
        rm.visalib.reset_state()
    resources = yaml.load(lab.read_text(), Loader=yaml.BaseLoader)["resources"]
    try:
        for resource, rdict in resources.items():
            spec = yaml.load((lab.parent / rdict["filename"]).read_text(), Loader=yaml.BaseLoader)
            dd = spec["devices"][rdict["device"]]
            inst = rm.open_resource(resource, read_termination=_read_term(resource),
                                    write_termination=_term(resource))
            inst.timeout = 300
            for q in _queries(dd):
                if backend == "qnetlab" and (q == "TAG:HIST:DATA?" or (
                        "herald" in resource and q in STATION_REFUSES)):
                    continue  # refused by design (no recording yet / no transducer at a station)
                inst.write(q)
                reply = inst.read_raw()
                assert not reply.startswith((b"ERROR", b"INVALID")), (resource, q)
            if "error_queue" not in dd["error"] and "status_register" not in dd["error"]:
                inst.close()  # in-band errors only (Triton): checked reply by reply above
                continue
            errq = next(iter(dd["error"].get("error_queue", [{"q": "*ESR?"}])))["q"]
            reply = inst.query(errq)
            assert reply.lstrip("+").split(",")[0] == "0", (resource, reply)
            inst.close()
    finally:
        if backend == "sim":
            rm.visalib._init()
        else:
            rm.visalib.reset_state()


def test_chain_middle_node_has_two_links(open_on):
    rm = pyvisa.ResourceManager(lab_spec("chain"))
    rm.visalib.reset_state()
    bob = open_on(rm)("TCPIP0::qnu-bob.lab::inst0::INSTR")
    assert (bob.query("LINK1:PEER?"), bob.query("LINK2:PEER?")) == ("alice", "carol")
    carol = open_on(rm)("TCPIP0::qnu-carol.lab::inst0::INSTR")
    assert (carol.query("LINK1:PEER?"), carol.query("LINK2:PEER?")) == ("bob", "NONE")


def test_pyvisa_sim_internals_the_backend_relies_on():
    """Smoke test for the pinned pyvisa-sim (>=0.7.1,<0.8): fail loudly if its internals move."""
    from pyvisa_sim import parser
    from pyvisa_sim.channels import ChannelProperty, Channels
    from pyvisa_sim.component import NoResponse, Property
    from pyvisa_sim.devices import Device, ErrorQueue, StatusRegister
    from pyvisa_sim.highlevel import SimVisaLibrary

    assert tuple(int(x) for x in pyvisa_sim.__version__.split(".")[:2]) == (0, 7)
    for name in ("_match_dialog", "_match_getters", "_match_setters", "_match_registers",
                 "_match_errors_queues", "error_response"):
        assert hasattr(Device, name)
    assert hasattr(Property, "validate_value") and hasattr(ChannelProperty, "init_value")
    assert hasattr(Channels, "match")
    assert hasattr(parser, "Loader") and hasattr(parser, "get_device")
    assert hasattr(parser.Loader, "get_device_dict") and parser.SPEC_VERSION_TUPLE[0] == 1
    assert hasattr(ErrorQueue, "clear") and hasattr(StatusRegister, "set")
    assert hasattr(SimVisaLibrary, "_init") and NoResponse is not None
    dev = pyvisa.ResourceManager(lab_spec("node")).visalib.device(
        "TCPIP0::pump-alice.lab::inst0::INSTR")
    for attr in ("_properties", "_channels", "_output_buffers", "_input_buffer",
                 "_error_queues", "_status_registers", "_error_response", "_query_eom"):
        assert hasattr(dev, attr), attr


def test_qcodes_lakeshore_372_connects_and_snapshots_every_parameter(caplog):
    lib = pyvisa.ResourceManager(lab_spec("link")).visalib
    lib.reset_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ls = LakeshoreModel372("ls372", "TCPIP0::fridge-alice.lab::7777::SOCKET",
                               visalib=lab_spec("link"), timeout=1)
        snap = ls.snapshot(update=True)
    assert "Could not update" not in caplog.text
    assert ls.ch06.sensor_name() == "MXC"
    assert ls.ch06.temperature() == pytest.approx(0.008, rel=0.02)
    assert snap["submodules"]["sample_heater"]["parameters"]["output_range"]["value"] == "off"
    ls.sample_heater.setpoint(0.025)
    ls.sample_heater.input_channel(6)
    ls.sample_heater.P(20)
    ls.sample_heater.I(30)
    ls.sample_heater.output_range("3.16mA")
    ls.sample_heater.mode("closed_loop")
    lib.clock.advance(3600)
    assert ls.ch06.temperature() == pytest.approx(0.025, rel=0.02)
    ls.close()
    lib.reset_state()
