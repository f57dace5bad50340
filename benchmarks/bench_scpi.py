"""SCPI header matching against exact-string matching, on the pump laser of the built-in node."""

from __future__ import annotations

import time

import pyvisa

from qnetlab.sim_instruments import lab_spec

PUMP = "TCPIP0::pump-alice.lab::inst0::INSTR"
# (as a user writes it, as the YAML writes it): queries and settings without physics hooks, so
# the figure is dominated by matching, not by the instrument model
COMMANDS = [
    (":sour0:wavelength:sweep:start?", "[:SOURce[0]]:WAVelength:SWEep:STARt?"),
    ("WAV:SWE:STOP?", "[:SOURce[0]]:WAVelength:SWEep:STOP?"),
    (":SOURce:WAVelength:SWEep:STEP?", "[:SOURce[0]]:WAVelength:SWEep:STEP?"),
    (":sour0:wav:swe:mode?", "[:SOURce[0]]:WAVelength:SWEep:MODE?"),
    (":trig0:outp?", ":TRIGger[0]:OUTPut?"),
    (":sour0:wav:swe:cycl 3", "[:SOURce[0]]:WAVelength:SWEep:CYCLes 3"),
    ("wav:swe:dwel 0.002", "[:SOURce[0]]:WAVelength:SWEep:DWELl 0.002"),
    (":SOUR0:WAV:SWE:STEP 0.1PM", "[:SOURce[0]]:WAVelength:SWEep:STEP 1e-13"),
]


def _per_command_us(device, session, commands: list[bytes], n: int) -> float:
    """Mean cost of one command through ``device.write`` (match + reply queued), in us.

    Each reply is dropped before the next command (as if read), so no -410 is ever queued."""
    device._use(session)
    out, ready = device._output_buffers, device._ready_at
    t0 = time.perf_counter()
    for _ in range(n):
        for cmd in commands:
            device.write(cmd)
            out.clear()
            ready.clear()
    return (time.perf_counter() - t0) / (n * len(commands)) * 1e6


def match_ratio_vs_exact(rounds: int = 7, n: int = 400) -> float:
    """Per-command cost of SCPI matching over exact matching, best of ``rounds``, interleaved.

    SCPI: ``PhysDevice.write`` of commands spelled as users write them (lower case, long forms,
    optional nodes left out, unit suffixes), through the SCPI grammar. Exact: the same commands
    spelled exactly as the YAML writes them, on the same device with the grammar switched off
    (pyvisa-sim's exact-string matching, as on stock @sim). Both include the lookup, the
    property set/get and the queued reply; the difference is the grammar. Resolved headers are
    cached (per path and header string; parameterless commands whole), so this is the cost of a
    driver's repeated commands; settings still convert their value (units, MIN/MAX) each time.
    """
    rm = pyvisa.ResourceManager(lab_spec("node"))
    rm.visalib.reset_state()
    inst = rm.open_resource(PUMP, read_termination="\n", write_termination="\n")
    device = rm.visalib.device(PUMP)
    session = rm.visalib.sessions[inst.session]
    user = [u.encode() + b"\n" for u, _ in COMMANDS]
    exact = [e.encode() + b"\n" for _, e in COMMANDS]
    grammar = device.scpi
    scpi_t, exact_t = [], []
    try:
        with device.lock:
            for _ in range(rounds):
                device.scpi = grammar
                scpi_t.append(_per_command_us(device, session, user, n))
                device.scpi = None
                exact_t.append(_per_command_us(device, session, exact, n))
            errors = [list(q._queue) for q in device._error_queues.values() if q._queue]
    finally:
        device.scpi = grammar
        inst.close()
        rm.visalib.reset_state()
    if errors:
        raise RuntimeError(f"benchmark commands were refused: {list(errors[0])[:3]}")
    return min(scpi_t) / min(exact_t)


def run() -> dict[str, float]:
    return {"scpi.match_ratio_vs_exact": match_ratio_vs_exact()}


if __name__ == "__main__":
    print(run())
