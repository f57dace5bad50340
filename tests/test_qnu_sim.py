"""Simulated QNU: time tagger, detectors, link-layer requests and their failures."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import QNU_A, QNU_B, STATION
from test_physics import calibrate_from_truth


def test_recording_refuses_data_until_done_then_histogram_peaks_at_the_true_delay(link):
    lib, op = link
    calibrate_from_truth(lib, op)
    st = op(STATION)
    st.write("TAG:REC:DUR 60")
    st.write("TAG:REC:STAR")
    assert st.query("TAG:REC:STAT?") == "RUNNING"
    assert st.query("TAG:HIST:DATA?") == "ERROR"
    assert "no finished recording" in st.query("SYST:ERR?")
    lib.clock.advance(60)
    assert st.query("TAG:REC:STAT?") == "DONE"
    for cmd in ("TAG:HIST:STAR 0", "TAG:HIST:STOP 1", "TAG:HIST:BWID 2000", "TAG:HIST:BCO 10000"):
        st.write(cmd)
    hist = st.query_binary_values("TAG:HIST:DATA?", datatype="q", container=np.array)
    assert hist.size == 10000
    centres = (np.arange(hist.size) + 0.5) * 2000
    # the histogram spans one sync period: photons arriving before their sync wrap to its end,
    # so centre the peak before averaging (as the detector-timing calibration does)
    shift = hist.size // 2 - int(np.argmax(np.convolve(hist, np.ones(25), "same")))
    signal = np.clip(np.roll(hist, shift) - np.median(hist), 0, None)
    near = np.abs(centres - centres[hist.size // 2]) < 150e3
    peak_ps = (np.average(centres[near], weights=signal[near]) - shift * 2000) % (hist.size * 2000)
    true_ps = lib.lab.truth()["stations"]["mid"]["arrival_ps"][0]
    assert peak_ps == pytest.approx(true_ps, abs=5000)


def test_raw_stream_reads_in_chunks_and_is_time_ordered(link):
    lib, op = link
    calibrate_from_truth(lib, op)
    st = op(STATION)
    st.write("TAG:REC:DUR 2")
    st.write("TAG:REC:STAR")
    lib.clock.advance(2)
    n = int(st.query("TAG:STR:COUN?"))
    sync = float(st.query("TAG:INP0:COUN?"))
    assert n >= 2 * sync * 0.99
    half = n // 2
    t1 = st.query_binary_values(f"TAG:STR:TIME? 0,{half}", datatype="q", container=np.array)
    t2 = st.query_binary_values(f"TAG:STR:TIME? {half},{n}", datatype="q", container=np.array)
    ch = st.query_binary_values(f"TAG:STR:CHAN? 0,{n}", datatype="B", container=np.array)
    times = np.concatenate([t1, t2])
    assert times.size == ch.size == n
    assert np.all(np.diff(times) >= 0)
    assert set(np.unique(ch)) <= {0, 1, 2} and (ch == 0).sum() == pytest.approx(2 * sync, rel=0.01)


def test_detector_latches_above_switching_current_and_trigger_matters(link):
    _lib, op = link
    st = op(STATION)
    assert st.query("DET1:STAT?") == "OK"
    st.write("DET1:BIAS 20")
    assert st.query("DET1:STAT?") == "LATCHED"
    assert float(st.query("DET1:COUN?")) == 0.0
    st.write("DET1:BIAS 10")
    st.write("DET1:TRIG 0.01")  # trigger in the readout noise
    assert float(st.query("DET1:COUN?")) > 1e5
    st.write("DET1:ENAB 0")
    assert st.query("DET1:STAT?") == "OFF"


def test_create_refuses_bad_arguments_with_the_reason(link):
    _, op = link
    qnu = op(QNU_A)
    assert qnu.query("LINK1:CRE? 0,0.5,10,M") == "ERROR"
    assert "pairs 0 not in" in qnu.query("SYST:ERR?")
    assert qnu.query("LINK1:CRE? 10,0.5,10,Q") == "ERROR"
    assert "type 'Q'" in qnu.query("SYST:ERR?")
    assert qnu.query("LINK1:CRE? 10,0.5,10,M,W") == "ERROR"
    assert "basis 'W'" in qnu.query("SYST:ERR?")
    assert qnu.query("LINK2:CRE? 10,0.5,10,M") == "ERROR"
    assert "LINK2 is not connected" in qnu.query("SYST:ERR?")
    assert qnu.query("LINK1:REQ? 42") == "ERROR"
    assert "no link request" in qnu.query("SYST:ERR?")


def test_protocol_mismatch_between_ends_is_a_settings_conflict(link):
    _, op = link
    qa, qb = op(QNU_A), op(QNU_B)
    qb.write("EGEN:PROT TWOP")
    assert qa.query("LINK1:CRE? 10,0,10,M") == "ERROR"
    assert qa.query("SYST:ERR?").startswith('-221,"Settings conflict; protocol SING at alice')


def test_unreachable_fidelity_fails_the_request(link):
    _lib, op = link
    qa = op(QNU_A)
    rid = qa.query("LINK1:CRE? 10,0.99,10,M")
    assert qa.query(f"LINK1:REQ? {rid}") == "FAILED,0,10"


def test_request_expires_when_time_runs_out_and_counters_advance(link):
    lib, op = link
    calibrate_from_truth(lib, op)
    qa = op(QNU_A)
    rid = qa.query("LINK1:CRE? 100000,0,5,K")
    assert qa.query(f"LINK1:REQ? {rid}").startswith("ACTIVE,0,")
    lib.clock.advance(2.5)
    mid = qa.query(f"LINK1:REQ? {rid}")
    lib.clock.advance(10)
    state, got, want = qa.query(f"LINK1:REQ? {rid}").split(",")
    assert state == "EXPIRED" and 0 < int(mid.split(",")[1]) < int(got) < int(want)
    rows = qa.query_binary_values(f"LINK1:RES? {rid}", datatype="d", container=np.array)
    rows = rows.reshape(-1, 6)
    assert len(rows) == int(got) and np.isnan(rows[:, 5]).all()  # kept in memory: unmeasured
    assert int(qa.query("EGEN:HER?")) == int(got)
    attempts = int(qa.query("EGEN:ATT?"))
    period = lib.lab.links["ab"].attempt_period_s(lib.lab.engines["alice"], 200e-9)
    assert attempts == pytest.approx(5 / period, rel=0.01)


def _rows(inst, cmd: str) -> np.ndarray:
    return inst.query_binary_values(cmd, datatype="d", container=np.array).reshape(-1, 6)


def test_results_read_in_pieces_equal_the_full_read_at_both_ends(link):
    lib, op = link
    calibrate_from_truth(lib, op)
    qa, qb = op(QNU_A), op(QNU_B)
    rid = qa.query("LINK1:CRE? 100000,0,30,M,X/Z,X/Z")
    pieces: dict[str, list[np.ndarray]] = {"a": [], "b": []}
    read = 0
    for _ in range(40):  # past the 30 s deadline: the request expires with what it has
        lib.clock.advance(1.0)
        new_a = _rows(qa, f"LINK1:RES? {rid},{read},1000000")
        new_b = _rows(qb, f"LINK1:RES? {rid},{read},{len(new_a)}")
        pieces["a"].append(new_a)
        pieces["b"].append(new_b)
        read += len(new_a)
    state, got, _ = qa.query(f"LINK1:REQ? {rid}").split(",")
    assert state == "EXPIRED" and read == int(got) > 1000
    for inst, key in ((qa, "a"), (qb, "b")):
        full = _rows(inst, f"LINK1:RES? {rid}")
        np.testing.assert_array_equal(np.concatenate(pieces[key]), full)
    np.testing.assert_array_equal(np.concatenate(pieces["a"])[:, :4],
                                  np.concatenate(pieces["b"])[:, :4])  # same pairs, same order


def test_results_reply_carries_only_the_rows_asked_for(link):
    lib, op = link
    calibrate_from_truth(lib, op)
    qa = op(QNU_A)
    rid = qa.query("LINK1:CRE? 100000,0,100,M")
    lib.clock.advance(20)
    delivered = int(qa.query(f"LINK1:REQ? {rid}").split(",")[1])
    assert delivered > 1000
    rows = _rows(qa, f"LINK1:RES? {rid},{delivered - 10},100")
    assert rows[:, 0].tolist() == list(range(delivered - 10, delivered))  # only what exists
    qa.write(f"LINK1:RES? {rid},500,3")
    assert qa.read_raw() == b"#3144" + _rows(qa, f"LINK1:RES? {rid}")[500:503].tobytes() + b"\n"
    assert _rows(qa, f"LINK1:RES? {rid},{delivered + 5},10").size == 0


@pytest.mark.parametrize(("args", "reason"), [
    ("{rid},-1,5", "must be >= 0"), ("{rid},5", "<id>,<start>,<count>"),
    ("{rid},a,5", "must be integers")])
def test_results_refuse_a_bad_range_with_the_reason(link, args, reason):
    _lib, op = link
    qa = op(QNU_A)
    rid = qa.query("LINK1:CRE? 10,0,10,M")
    assert qa.query("LINK1:RES? " + args.format(rid=rid)) == "ERROR"
    error = qa.query("SYST:ERR?")
    assert reason in error and error.split(",")[0] in ("-104", "-222")
