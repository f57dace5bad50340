"""Drivers on a real VISA transport: pyvisa-py (``@py``) over TCP to a small SCPI socket server.

The server runs in the test on 127.0.0.1 (port 0, one thread per connection) and speaks just
enough SCPI for a qnetlab driver: ``*IDN?``, ``SYST:ERR?`` and ``DATA?``, whose reply is an
IEEE-488.2 definite-length block of float64 values. Each test tells the server how to send
the block: whole, split over many TCP segments with delays, stalled midway, or truncated.
"""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from qnetlab.clock import VirtualClock
from qnetlab.drivers.base import QnetlabVisaInstrument, RecoveryPolicy
from qnetlab.drivers.qnu import _float_block
from qnetlab.errors import InstrumentError, InstrumentTimeout, RecoveryFailed

pytest.importorskip("pyvisa_py")

#: Five float64 values whose little-endian bytes hold 0x0A (the terminator) mid-payload.
FIVE = np.array([1.0, 2.0, 3.5, 5.0e-324 * 10, 1550.12e-9])


def block(values: np.ndarray) -> bytes:
    """The IEEE-488.2 definite-length block of ``values`` as little-endian float64."""
    payload = values.astype("<f8").tobytes()
    digits = str(len(payload)).encode()
    return b"#" + str(len(digits)).encode() + digits + payload


#: A pause inside a reply: shorter than the driver's 0.5 s timeout, longer than pyvisa-py's
#: first wait for data (half the timeout), after which it would return what has come.
PAUSE_S = 0.35

Sender = Callable[[socketserver.StreamRequestHandler, bytes], None]


def send_whole(handler: socketserver.StreamRequestHandler, reply: bytes) -> None:
    handler.wfile.write(reply + b"\n")


@dataclass
class Script:
    """What the server answers: ``DATA?`` replies go through ``senders`` in turn (the last
    one repeats); every ``DATA?`` received is counted."""

    values: np.ndarray
    senders: list[Sender] = field(default_factory=lambda: [send_whole])
    data_queries: int = 0
    release: threading.Event = field(default_factory=threading.Event)

    def sender(self) -> Sender:
        self.data_queries += 1
        return self.senders[min(self.data_queries, len(self.senders)) - 1]


class ScpiHandler(socketserver.StreamRequestHandler):
    """One client connection: read LF-terminated commands, answer the few the tests need."""

    def handle(self) -> None:
        try:
            self._serve(self.server.script)  # type: ignore[attr-defined]
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away mid-reply

    def _serve(self, script: Script) -> None:
        for line in self.rfile:
            cmd = line.strip().decode()
            if cmd == "*IDN?":
                self.wfile.write(b"qnetlab,TCP test server,0,1.0\n")
            elif cmd == "SYST:ERR?":
                self.wfile.write(b'+0,"No error"\n')
            elif cmd == "SLOW?":  # a reply with a pause longer than half the driver's timeout
                self.wfile.write(b"+1.25")
                self.wfile.flush()
                time.sleep(PAUSE_S)
                self.wfile.write(b"E-03\n")
            elif cmd == "*ESR?":
                self.wfile.write(b"0\n")  # no power-on reset (asked after a reconnect)
            elif cmd == "DATA?":
                script.sender()(self, block(script.values))
                if getattr(self, "hang_up", False):
                    return  # the server closes this connection
            else:
                self.wfile.write(b'-113,"Undefined header"\n')


class ScpiServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    block_on_close = True  # server_close() joins the connection threads

    def __init__(self, script: Script) -> None:
        self.script = script
        super().__init__(("127.0.0.1", 0), ScpiHandler)


class BlockReader(QnetlabVisaInstrument):
    """The smallest qnetlab driver with an array query (the drivers' own block helper)."""

    default_timeout = 0.5

    def data(self) -> np.ndarray:
        return _float_block(self, "DATA?")


@pytest.fixture
def script() -> Script:
    return Script(values=FIVE)


@pytest.fixture
def server(script: Script) -> Iterator[ScpiServer]:
    threads_before = set(threading.enumerate())
    srv = ScpiServer(script)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield srv
    script.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)
    assert set(threading.enumerate()) <= threads_before, "server threads leaked"


@pytest.fixture
def connect(server: ScpiServer) -> Iterator[Callable[..., BlockReader]]:
    made: list[BlockReader] = []

    def make(**kwargs) -> BlockReader:
        port = server.server_address[1]
        inst = BlockReader(f"tcp{len(made)}", f"TCPIP0::127.0.0.1::{port}::SOCKET", visalib="@py",
                           terminator="\n", clock=VirtualClock(), print_connect_message=False,
                           **kwargs)
        made.append(inst)
        return inst

    yield make
    for inst in made:
        inst.close()  # before the server joins its connection threads


def test_payload_holding_the_terminator_is_read_whole(connect, script):
    assert b"\n" in block(FIVE)[3:]  # the case: 0x0A inside the payload
    inst = connect()
    np.testing.assert_array_equal(inst.data(), FIVE)
    assert inst.ask("*IDN?").startswith("qnetlab,")  # next reply in step


def test_large_block_full_of_terminators(connect, script):
    script.values = np.frombuffer(np.full(80_000, 0x0A, dtype=np.uint8).tobytes(), "<f8")
    inst = connect()
    np.testing.assert_array_equal(inst.data(), script.values)
    assert inst.ask("*IDN?").startswith("qnetlab,")


def send_in_segments(handler: socketserver.StreamRequestHandler, reply: bytes) -> None:
    data = reply + b"\n"
    for start in range(0, len(data), 7):  # 7-byte segments: header and terminator split too
        handler.wfile.write(data[start : start + 7])
        handler.wfile.flush()
        time.sleep(0.002)  # the server side: the driver's clock is never involved


def test_block_split_over_many_segments(connect, script):
    script.senders = [send_in_segments]
    inst = connect()
    np.testing.assert_array_equal(inst.data(), FIVE)
    assert inst.ask("*IDN?").startswith("qnetlab,")


#: How long a stalled server stops answering (longer than the driver's 0.5 s timeout).
STALL_S = 0.8


def send_with_pauses(handler: socketserver.StreamRequestHandler, reply: bytes) -> None:
    for part in (reply[:2], reply[2:30]):  # header and payload both split by a pause
        handler.wfile.write(part)
        handler.wfile.flush()
        time.sleep(PAUSE_S)
    handler.wfile.write(reply[30:] + b"\n")


def test_pauses_inside_replies_do_not_end_them(connect, script):
    script.senders = [send_with_pauses]
    inst = connect()
    np.testing.assert_array_equal(inst.data(), FIVE)
    assert float(inst.ask("SLOW?")) == 1.25e-3


def send_half_then_stall(handler: socketserver.StreamRequestHandler, reply: bytes) -> None:
    """Part of the block, up to just past a 0x0A in the payload, then nothing for STALL_S:
    that reply is lost, later commands are answered."""
    cut = reply.index(b"\n", 4) + 2
    assert cut < len(reply)
    handler.wfile.write(reply[:cut])
    handler.wfile.flush()
    handler.server.script.release.wait(STALL_S)  # type: ignore[attr-defined]


def test_stall_mid_block_raises_timeout_without_recovery(connect, script):
    script.senders = [send_half_then_stall]
    inst = connect(recovery=None)
    with pytest.raises(InstrumentTimeout, match="DATA"):
        inst.data()


def test_stall_mid_block_is_recovered_like_any_call(connect, script, caplog):
    script.senders = [send_half_then_stall, send_whole]
    inst = connect(recovery=RecoveryPolicy(attempts=2, backoff_s=(1.0,)))
    t0 = inst.clock.now()
    np.testing.assert_array_equal(inst.data(), FIVE)
    assert script.data_queries == 2
    assert inst.clock.now() - t0 >= 1.0  # the backoff waited on the driver's clock
    assert any("InstrumentTimeout" in r.getMessage() for r in caplog.records)
    assert inst.ask("*IDN?").startswith("qnetlab,")


def send_part_then_hang_up(handler: socketserver.StreamRequestHandler, reply: bytes) -> None:
    handler.wfile.write(reply[: reply.index(b"\n", 4) + 2])
    handler.hang_up = True  # type: ignore[attr-defined]


def test_connection_lost_mid_block_reconnects_and_asks_again(connect, script, caplog):
    script.senders = [send_part_then_hang_up, send_whole]
    inst = connect()  # the default recovery policy, as every driver has
    first_session = inst.visa_handle
    np.testing.assert_array_equal(inst.data(), FIVE)
    assert inst.visa_handle is not first_session  # a new session to the same address
    messages = [r.getMessage() for r in caplog.records]
    assert any("InstrumentConnectionError" in m for m in messages)
    assert any("reconnected: new session" in m for m in messages)
    np.testing.assert_array_equal(inst.data(), FIVE)  # the new session reads blocks too


def send_truncated(handler: socketserver.StreamRequestHandler, reply: bytes) -> None:
    handler.wfile.write(reply[:-9] + b"\n")  # header says 40 bytes; 31 come, then the LF


def test_truncated_block_is_never_returned_short(connect, script):
    script.senders = [send_truncated]
    inst = connect(recovery=RecoveryPolicy(attempts=1, backoff_s=(0.5,)))
    with pytest.raises(RecoveryFailed, match=r"no reply to 'DATA\?'"):
        inst.data()
    assert script.data_queries == 2  # asked again once, like any other timed-out call


def send_bad_header(handler: socketserver.StreamRequestHandler, reply: bytes) -> None:
    handler.wfile.write(b"#x" + reply[2:] + b"\n")


def test_malformed_block_header_is_an_instrument_error(connect, script):
    script.senders = [send_bad_header]
    inst = connect()
    with pytest.raises(InstrumentError, match=r"DATA\?.*malformed block header"):
        inst.data()
