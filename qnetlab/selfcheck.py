"""Lab self-check: bring up a lab, ask every instrument who it is and what it reports.

On the built-in simulated lab (``python -m qnetlab.selfcheck``) it also exercises the physics end
to end: a pump-laser sweep across each transducer's optical cavity read back through the QNU
photodiode log, the mixing-chamber response to the pump, and a short link-layer request whose
heralds come back with their detector patterns. Exit status 0 when every instrument answered and
no error queue holds an error; 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
import pyvisa

from qnetlab.clock import WallClock
from qnetlab.sim_instruments import LABS, lab_spec

ERROR_QUERIES = {"qnu": "SYST:ERR?", "pump_laser": ":SYST:ERR?", "aom_gate": "SYST:ERR?"}


@dataclass
class Check:
    resource: str
    ok: bool
    summary: str


def _open(rm: pyvisa.ResourceManager, resource: str) -> pyvisa.resources.MessageBasedResource:
    lake_shore = resource.endswith("SOCKET") and "::5025::" not in resource  # SCPI: port 5025
    term = "\r\n" if lake_shore else "\n"
    # the Lake Shore ends lines with CR LF; the Triton takes CR LF and answers with LF
    read = "\n" if resource.endswith("::33576::SOCKET") else term
    inst = rm.open_resource(resource, read_termination=read, write_termination=term)
    inst.timeout = 2000
    return inst  # type: ignore[return-value]


def _kind(idn: str) -> str:
    if "QNU" in idn:
        return "qnu"
    if "N777" in idn:
        return "pump_laser"
    if "33522B" in idn:
        return "aom_gate"
    if "OXFORD" in idn:
        return "triton"
    return "lakeshore372"


def _errors(inst, kind: str) -> list[str]:
    """Drain the instrument's error reporting: SCPI queue, Lake Shore *ESR? bits, or none
    (the Triton answers errors in band)."""
    if kind == "triton":
        return []
    if kind == "lakeshore372":
        esr = int(inst.query("*ESR?"))
        return [f"*ESR?={esr}"] if esr & (4 | 16 | 32) else []
    out = []
    for _ in range(20):
        msg = inst.query(ERROR_QUERIES[kind])
        if msg.lstrip("+").startswith("0,"):
            break
        out.append(msg)
    return out


def _describe(inst, kind: str) -> str:
    if kind == "lakeshore372":
        names = {"1": "50K", "2": "4K", "5": "still", "6": "MXC"}
        return ", ".join(f"{n} {float(inst.query(f'KRDG? {c}')):.4g} K" for c, n in names.items())
    if kind == "triton":
        def tail(path: str) -> str:
            return inst.query(path).rsplit(":", 1)[-1]
        return (f"pulse tube {tail('READ:DEV:COMP:PUMP:SIG:STATE')}, OVC "
                f"{tail('READ:DEV:P1:PRES:SIG:PRES')}; interlock {tail('READ:SYS:INTLK:STAT')}")
    if kind == "pump_laser":
        wl = float(inst.query(":SOUR0:WAV?")) * 1e9
        return (f"{wl:.4f} nm, {float(inst.query(':SOUR0:POW?')):.2f} dBm set, "
                f"output {inst.query(':SOUR0:POW:STAT?')}")
    if kind == "aom_gate":
        return (f"AOM gate output {inst.query('OUTP1?')}, {inst.query('SOUR1:FUNC?')}, width "
                f"{float(inst.query('SOUR1:FUNC:PULS:WIDT?')):.3g} s, burst "
                f"{inst.query('SOUR1:BURS:STAT?')}, trigger {inst.query('TRIG1:SOUR?')}")
    dets = ", ".join(f"D{i} {inst.query(f'DET{i}:STAT?')}" for i in (1, 2))
    peer = inst.query("LINK1:PEER?")
    return f"detectors {dets}; LINK1 peer {peer}; protocol {inst.query('EGEN:PROT?')}"


def cavity_sweep(rm, pump, qnu, span_pm: float = 60.0) -> tuple[float, float]:
    """Sweep the pump across the cavity, read the photodiode log, return (dip nm, depth)."""
    centre = float(pump.query(":SOUR0:WAV?"))
    pump.write(":SOUR0:POW 0")
    pump.write(":SOUR0:POW:STAT 1")
    pump.write(f":SOUR0:WAV:SWE:STAR {centre - span_pm * 1e-12:.6e}")
    pump.write(f":SOUR0:WAV:SWE:STOP {centre + span_pm * 1e-12:.6e}")
    pump.write(":SOUR0:WAV:SWE:STEP 1e-13")
    pump.write(":TRIG0:OUTP STF;:SOUR0:WAV:SWE:LLOG 1")  # lambda logging's prerequisites
    pump.write(":SOUR0:WAV:SWE STAR")
    clock = getattr(rm.visalib, "clock", None) or WallClock()
    while pump.query(":SOUR0:WAV:SWE?") == "1":
        clock.sleep(0.05)
    wl = pump.query_binary_values(":SOUR0:READ:DATA? LLOG", datatype="d", container=np.array)
    pd = qnu.query_binary_values("XDUC:PD:LOG:DATA?", datatype="d", container=np.array)
    pump.write(":SOUR0:POW:STAT 0")
    if wl.size == 0 or pd.size != wl.size:
        return float("nan"), float("nan")
    i = int(np.argmin(pd))
    return wl[i] * 1e9, 1 - pd[i] / np.median(pd)


def run(lab: str, visalib: str | None = None) -> list[Check]:
    spec = visalib or lab_spec(lab)
    rm = pyvisa.ResourceManager(spec)
    checks: list[Check] = []
    resources = [r for r in rm.list_resources("?*")]
    for resource in resources:
        try:
            inst = _open(rm, resource)
            idn = inst.query("*IDN?")
            kind = _kind(idn)
            summary = f"{idn} | {_describe(inst, kind)}"
            errs = _errors(inst, kind)
            checks.append(Check(resource, not errs, summary + (f" | ERRORS {errs}" if errs else "")))
        except (pyvisa.VisaIOError, ValueError) as exc:
            checks.append(Check(resource, False, f"no answer: {exc}"))
    if hasattr(rm.visalib, "lab"):
        checks.extend(_physics_checks(rm))
    return checks


def _physics_checks(rm) -> list[Check]:
    lab = rm.visalib.lab
    out = []
    for node in lab.nodes:
        pump = _open(rm, f"TCPIP0::pump-{node}.lab::inst0::INSTR")
        qnu = _open(rm, f"TCPIP0::qnu-{node}.lab::inst0::INSTR")
        fridge = _open(rm, f"TCPIP0::fridge-{node}.lab::7777::SOCKET")
        gate = _open(rm, f"TCPIP0::aom-{node}.lab::5025::SOCKET")
        gate.write("SOUR1:FUNC DC;:OUTP1 1")  # AOM held open: CW pump
        dip_nm, depth = cavity_sweep(rm, pump, qnu)
        before = float(fridge.query("KRDG? 6"))
        pump.write(":SOUR0:POW 10")
        pump.write(":SOUR0:POW:STAT 1")
        rm.visalib.clock.advance(600)
        after = float(fridge.query("KRDG? 6"))
        pump.write(":SOUR0:POW:STAT 0")
        gate.write("OUTP1 0")
        rm.visalib.clock.advance(1800)
        ok = depth > 0.5 and after > before
        out.append(Check(f"{node} physics", ok,
                         f"cavity dip at {dip_nm:.4f} nm (depth {depth:.2f}); MXC {before * 1e3:.2f}"
                         f" mK -> {after * 1e3:.2f} mK after 10 min of CW pump at 10 dBm"))
    for name, link in lab.links.items():
        out.append(link_request_check(rm, name, link.node_a.name))
    return out


def link_request_check(rm, name: str, node: str, pairs: int = 20,
                       max_time_s: float = 3600.0) -> Check:
    """Ask ``node``'s QNU for ``pairs`` measured pairs on link ``name`` within ``max_time_s``
    of lab time. The link passes only when the request is DONE: an EXPIRED request delivered
    fewer pairs than asked, so the link does not work as it should."""
    qnu = _open(rm, f"TCPIP0::qnu-{node}.lab::inst0::INSTR")
    rid = qnu.query(f"LINK1:CRE? {pairs},0,{max_time_s:g},M,Z,Z")
    rm.visalib.clock.advance(max_time_s)
    status = qnu.query(f"LINK1:REQ? {rid}")
    rows = qnu.query_binary_values(f"LINK1:RES? {rid}", datatype="d", container=np.array)
    rows = rows.reshape(-1, 6)
    patterns = np.unique(rows[:, 2]).astype(int).tolist() if rows.size else []
    rate = len(rows) / max(rows[-1, 1] - rows[0, 1], 1e-9) if len(rows) > 1 else 0.0
    done = status.startswith("DONE")
    why = "" if done else f" (not DONE: {len(rows)} of {pairs} pairs in {max_time_s:g} s)"
    return Check(f"link {name}", done,
                 f"request {rid}: {status}{why}; detector patterns {patterns}; "
                 f"uncalibrated herald rate {rate:.3g}/s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="qnetlab-selfcheck", description=__doc__.split("\n")[0])
    ap.add_argument("--lab", default="link", choices=LABS, help="built-in simulated lab")
    ap.add_argument("--visalib", help="VISA library spec instead, e.g. lab.yaml@qnetlab")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    checks = run(args.lab, args.visalib)
    width = max(len(c.resource) for c in checks)
    for c in checks:
        print(f"{'PASS' if c.ok else 'FAIL'}  {c.resource:<{width}}  {c.summary}")
    bad = sum(not c.ok for c in checks)
    print(f"{len(checks) - bad} passed, {bad} failed in {time.perf_counter() - t0:.2f} s wall")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
