"""SCPI parsed as instruments parse it, on the @qnetlab backend (issue 11, section 1).

Property-based: every spelling of a command that SCPI-99 allows (case, long/short forms, optional
nodes and suffixes, leading colon, unit suffixes) has the same effect as the manual's spelling;
every spelling it forbids queues the right error number in ``SYST:ERR?`` and changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvisa
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pyvisa_qnetlab.scpi import parse_pattern
from qnetlab.sim_instruments import lab_file, lab_spec

PUMP = "TCPIP0::pump-alice.lab::inst0::INSTR"
QNU = "TCPIP0::qnu-alice.lab::inst0::INSTR"
AOM = "TCPIP0::aom-alice.lab::5025::SOCKET"  # the Keysight 33522B gating the pump's AOM
FRIDGE = "TCPIP0::fridge-alice.lab::7777::SOCKET"
ERR = ":SYST:ERR?"

# (pattern as in the YAML, canonical query, value in the YAML's unit, unit spellings: factor)
SETTINGS = [
    ("[:SOURce[0]]:WAVelength[:CW]", ":SOUR0:WAV?", 1.5513e-6,
     {"": 1.0, "M": 1.0, "NM": 1e9, "UM": 1e6, "PM": 1e12, "MM": 1e3}),
    ("[:SOURce[0]]:POWer[:LEVel][:IMMediate][:AMPLitude]", ":SOUR0:POW?", 4.5,
     {"": 1.0, "DBM": 1.0}),
    ("[:SOURce[0]]:WAVelength:SWEep:DWELl", ":SOUR0:WAV:SWE:DWEL?", 0.25,
     {"": 1.0, "S": 1.0, "MS": 1e3, "US": 1e6}),
    ("[:SOURce[0]]:WAVelength:SWEep:SPEed", ":SOUR0:WAV:SWE:SPE?", 2.0e-8,
     {"": 1.0, "M/S": 1.0, "NM/S": 1e9, "PM/S": 1e12}),
    ("[:SOURce[0]]:WAVelength:SWEep:STEP", ":SOUR0:WAV:SWE:STEP?", 3.0e-12,
     {"": 1.0, "M": 1.0, "PM": 1e12, "NM": 1e9}),
    ("[:SOURce[0]]:WAVelength:FINE", ":SOUR0:WAV:FINE?", 12.5, {"": 1.0, "PM": 1.0, "NM": 1e-3}),
]


@pytest.fixture(scope="module")
def node():
    rm = pyvisa.ResourceManager(lab_spec("node"))
    rm.visalib.reset_state()
    opened = {}

    def op(resource: str):
        if resource not in opened:
            term = "\r\n" if resource.endswith("::7777::SOCKET") else "\n"
            inst = rm.open_resource(resource, read_termination=term, write_termination=term)
            inst.timeout = 500
            opened[resource] = inst
        return opened[resource]

    yield rm.visalib, op
    for inst in opened.values():
        inst.close()
    rm.visalib.reset_state()


def _fresh_pump(node):
    lib, op = node
    lib.reset_state()
    return op(PUMP)


@pytest.fixture
def pump(node):
    return _fresh_pump(node)


def _case(draw, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.lower() if f else c.upper() for c, f in zip(text, flips, strict=True))


def spell(draw, pattern: str, channel: str = "1") -> str:
    """Any header spelling SCPI allows for ``pattern`` (manual notation; ``{ch_id}`` = channel)."""
    parts = []
    for node in parse_pattern(pattern):
        if node.optional and draw(st.booleans()):
            continue
        word = draw(st.sampled_from([node.long, node.short]))
        suffix = ""
        if node.suffix == "ch":
            suffix = channel if channel != "1" or draw(st.booleans()) else ""
        elif node.suffix is not None:
            suffix = node.suffix if not node.suffix_optional or draw(st.booleans()) else ""
        parts.append(_case(draw, word) + suffix)
    header = ":".join(parts)
    return (":" if draw(st.booleans()) else "") + header


def _number(value: float, factor: float) -> str:
    return repr(value * factor)


def _errors(inst) -> list[str]:
    """Read the error queue until it says no error (it holds at most 10 entries)."""
    out = []
    for _ in range(12):
        reply = inst.query(ERR)
        if reply.lstrip("+").startswith("0,"):
            return out
        out.append(reply)
    raise AssertionError(f"error queue never emptied: {out[:3]}")


@given(data=st.data(), setting=st.sampled_from(SETTINGS))
def test_every_allowed_spelling_sets_the_same_value(node, data, setting):
    pump = _fresh_pump(node)
    pattern, canonical, value, units = setting
    header = spell(data.draw, pattern)
    unit = data.draw(st.sampled_from(sorted(units)))
    space = data.draw(st.sampled_from(["", " "])) if unit else ""
    pump.write(f"{header} {_number(value, units[unit])}{space}{_case(data.draw, unit)}")
    assert float(pump.query(canonical)) == pytest.approx(value, rel=1e-6)
    assert float(pump.query(f"{header}?")) == pytest.approx(value, rel=1e-6)
    assert _errors(pump) == []


def _static_queries(name: str) -> list[tuple[str, list[str]]]:
    """(getter pattern, channel ids) of every property whose reply is its stored value."""
    path = Path(lab_file("node")).parent.parent / f"{name}.yaml"
    (device,) = yaml.safe_load(path.read_text())["devices"].values()
    groups = [(device, ["1"])] + [(c, [str(i) for i in c["ids"]])
                                  for c in (device.get("channels") or {}).values()]
    return [(p["getter"]["q"], ids) for component, ids in groups
            for p in (component.get("properties") or {}).values()
            if "getter" in p and "x-get" not in p]


STATIC_QUERIES = [(PUMP, q, ids) for q, ids in _static_queries("pump_laser")] + [
    (QNU, q, ids) for q, ids in _static_queries("qnu")] + [
    (AOM, q, ids) for q, ids in _static_queries("awg_33522b")]


@given(data=st.data(), item=st.sampled_from(STATIC_QUERIES))
def test_every_query_of_every_scpi_yaml_answers_the_same_in_any_spelling(node, data, item):
    resource, pattern, ids = item
    _, op = node
    inst = op(resource)
    channel = data.draw(st.sampled_from(ids))
    literal = pattern.replace("{ch_id}", channel)
    assert inst.query(spell(data.draw, pattern.rstrip("?"), channel) + "?") == inst.query(literal)
    assert _errors(inst) == []


def _forbidden(draw, pattern: str) -> tuple[str, str]:
    """(a header spelling SCPI forbids for ``pattern``, its error number)."""
    nodes = [n for n in parse_pattern(pattern) if not n.optional]
    kind = draw(st.sampled_from(["truncated", "suffix", "unknown", "syntax"]))
    words = [n.short for n in nodes]
    i = draw(st.integers(0, len(nodes) - 1))
    node = nodes[i]
    if kind == "truncated" and len(node.long) > len(node.short) + 1:
        words[i] = node.long[: len(node.short) + 1]  # neither the short nor the long form
    elif kind == "suffix":
        words[i] = node.short + str(draw(st.integers(2, 9)))
    elif kind == "syntax":
        return ":" + ":".join(words) + draw(st.sampled_from(["::X", "#", "!"])), "-102"
    else:
        words[i] = node.short + "X"
    return ":" + ":".join(words), "-113"


@given(data=st.data(), setting=st.sampled_from(SETTINGS))
def test_every_forbidden_header_queues_its_error_and_changes_nothing(node, data, setting):
    pump = _fresh_pump(node)
    pattern, canonical, value, _units = setting
    before = pump.query(canonical)
    header, code = _forbidden(data.draw, pattern)
    pump.write(f"{header} {value!r}")
    assert pump.query(canonical) == before
    errors = _errors(pump)
    assert len(errors) == 1 and errors[0].startswith(code + ","), (header, errors)


BAD_PARAMETERS = [
    ("{h} 1550 HZ", "-131"),  # a unit of the wrong dimension
    ("{h} 1550 XYZ", "-131"),  # no unit at all
    ("{h} fifteen", "-104"),  # not a number
    ("{h}", "-109"),  # value missing
    ("{h} 5 KM", "-222"),  # converts, then out of range
    ("{h}? 3", "-108"),  # a query that takes no parameter
]


@given(data=st.data(), bad=st.sampled_from(BAD_PARAMETERS))
def test_every_forbidden_parameter_queues_its_error_and_changes_nothing(node, data, bad):
    pump = _fresh_pump(node)
    template, code = bad
    header = spell(data.draw, SETTINGS[0][0])
    before = pump.query(":SOUR0:WAV?")
    reply = None
    if "?" in template:
        reply = pump.query(template.format(h=header))
    else:
        pump.write(template.format(h=header))
    assert pump.query(":SOUR0:WAV?") == before
    errors = _errors(pump)
    assert len(errors) == 1 and errors[0].startswith(code + ","), (template, errors)
    assert reply in (None, "ERROR")


def test_compound_messages_follow_scpi_path_rules(pump):
    # relative to the previous command's path; ';:' resets; common commands keep the path
    pump.write(":SOUR0:WAV:SWE:STAR 1550.5NM;STOP 1551.5NM;*CLS;STEP 2PM;:TRIG0:OUTP STF;INP NEXT")
    assert float(pump.query(":SOUR0:WAV:SWE:STAR?")) == pytest.approx(1550.5e-9)
    assert float(pump.query(":SOUR0:WAV:SWE:STOP?")) == pytest.approx(1551.5e-9)
    assert float(pump.query(":SOUR0:WAV:SWE:STEP?")) == pytest.approx(2e-12)
    assert pump.query(":TRIG0:OUTP?") == "STF"
    assert pump.query(":TRIG0:INP?") == "NEXT"
    assert _errors(pump) == []
    # a following command without colon is NOT looked up from the root
    pump.write(":TRIG0:OUTP DIS;WAV 1552NM")
    assert pump.query(":TRIG0:OUTP?") == "DIS"
    assert float(pump.query(":SOUR0:WAV?")) != pytest.approx(1552e-9)
    assert [e[:4] for e in _errors(pump)] == ["-113"]


def test_compound_queries_answer_in_order(pump):
    pump.write(":SOUR0:WAV:SWE:STAR 1550.5NM;STOP 1551.5NM")
    assert pump.query(":sour0:wav:swe:star?") == "1.550500000E-06"
    pump.write("wav:swe:star?;stop?")
    assert pump.read() == "1.550500000E-06"
    assert pump.read() == "1.551500000E-06"


def test_min_max_def_and_booleans(pump):
    pump.write(":SOUR0:POW MAX")
    assert float(pump.query(":SOUR0:POW?")) == 13.0
    pump.write(":sour:pow min")
    assert float(pump.query(":SOUR0:POW?")) == -10.0
    pump.write("pow def")
    assert float(pump.query(":SOUR0:POW?")) == 0.0
    pump.write(":SOUR0:POW:STAT on")
    assert pump.query(":SOUR0:POW:STAT?") == "1"
    pump.write(":SOUR0:POW:STAT OFF")
    assert pump.query(":SOUR0:POW:STAT?") == "0"
    pump.write(":TRIG0:OUTP MAX")  # character data: MIN/MAX not allowed
    pump.write(":SOUR0:POW 2MW")  # watts convert to the dBm the command expects
    assert float(pump.query(":SOUR0:POW?")) == pytest.approx(3.0103, abs=1e-4)
    assert [e[:4] for e in _errors(pump)] == ["-222"]


def test_common_commands_and_status_byte(pump):
    assert pump.query("*idn?").startswith("Keysight Technologies,N7776C,")
    assert pump.query("*STB?") == "0"
    pump.write("*ESE 32;*OPC;*WAI")
    assert pump.query("*ese?") == "32"
    pump.write(":NOSUCH:NODE")
    assert int(pump.query("*STB?")) == 4 | 32  # error queue not empty, ESR & ESE
    assert int(pump.query("*ESR?")) & 32
    pump.write("*CLS")
    assert pump.query("*STB?") == "0" and pump.query("*OPC?") == "1"


def test_queue_overflow_keeps_the_first_errors_and_ends_with_350(pump):
    for _ in range(15):
        pump.write(":NOSUCH")
    errors = _errors(pump)
    assert len(errors) == 10
    assert all(e.startswith("-113,") for e in errors[:-1]) and errors[-1].startswith("-350,")


def test_unread_reply_is_discarded_by_a_new_message_with_410(pump):
    pump.write(":SOUR0:POW?")
    pump.write(":SOUR0:WAV?")  # the power reply was never read
    assert pump.read() == pump.query(":SOUR0:WAV?")
    assert [e[:4] for e in _errors(pump)] == ["-410"]


def test_reading_an_unterminated_query_times_out_with_420(pump):
    pump.write_raw(b":SOUR0:WAV?")  # no terminator: the instrument is still listening
    with pytest.raises(pyvisa.VisaIOError):
        pump.read()
    pump.write_raw(b"\n")
    assert float(pump.read()) > 0
    assert [e[:4] for e in _errors(pump)] == ["-420"]


def test_qnu_channel_suffixes_default_to_one(node):
    lib, op = node
    lib.reset_state()
    qnu = op(QNU)
    qnu.write("det2:bias 12.5 ua;:DET:BIAS 11")
    assert float(qnu.query("DET2:BIAS?")) == 12.5
    assert float(qnu.query("det1:bias?")) == 11.0
    qnu.write("DET3:BIAS 1")  # no third detector
    assert qnu.query("SYST:ERR?").startswith("-113,")


def test_lake_shore_side_keeps_its_own_rules_while_scpi_is_case_free(node):
    lib, op = node
    lib.reset_state()
    fridge, pump = op(FRIDGE), op(PUMP)
    assert float(fridge.query("KRDG? 6")) > 0
    assert fridge.query("krdg? 6") == "ERROR"  # Lake Shore: exact, case-sensitive
    assert int(fridge.query("*ESR?")) & 32
    assert float(pump.query(":sour0:wav?")) == float(pump.query(":SOUR0:WAV?"))
    assert _errors(pump) == []


def test_stock_sim_loads_the_laser_yaml_in_manual_notation():
    path = Path(lab_file("node")).parent.parent / "pump_laser.yaml"
    (resource,) = yaml.safe_load(path.read_text())["resources"]
    rm = pyvisa.ResourceManager(f"{path}@sim")
    inst = rm.open_resource(resource, read_termination="\n", write_termination="\n")
    inst.timeout = 300
    assert inst.query("*IDN?").startswith("Keysight Technologies,N7776C,")
    # stock @sim has no SCPI parser: it matches the manual's notation literally
    assert float(inst.query("[:SOURce[0]]:WAVelength[:CW]?")) == pytest.approx(1.55012e-6)
    inst.close()
    rm.visalib._init()


def test_empty_commands_do_nothing_and_whitespace_is_free(pump):
    pump.write(":SOUR0:WAV 1551NM;")
    pump.write("")
    pump.write("   :sour0:wav:swe:dwel    0.5   S  ;  ")
    assert float(pump.query(" :SOUR0:WAV? ")) == pytest.approx(1551e-9)
    assert float(pump.query(":SOUR0:WAV:SWE:DWEL?")) == 0.5
    assert _errors(pump) == []


def test_queries_answer_the_limits_of_numeric_settings(pump):
    assert pump.query(":SOUR0:POW? MAX") == "+1.30000000E+01"
    assert pump.query("sour:wav? min") == "1.480000000E-06"
    assert pump.query(":SOUR0:WAV:SWE:CYCL? max") == "999"
    assert pump.query(":SOUR0:POW? DEF") == "+0.00000000E+00"
    assert _errors(pump) == []
    assert pump.query(":TRIG0:OUTP? MAX") == "ERROR"  # character data has no limits
    assert pump.query(":SOUR0:POW:ACT? MAX") == "ERROR"  # not a setting
    assert [e[:4] for e in _errors(pump)] == ["-108", "-108"]
