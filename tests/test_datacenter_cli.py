"""Issue 14 §3: `qnetlab request` submits a link-layer request; every request and its outcome
is a run in the run store."""

from __future__ import annotations

import numpy as np

from qnetlab.cli import run_cli
from qnetlab.runread import load_run


def request(tmp_path, *args: str) -> int:
    return run_cli(["--data", str(tmp_path), "request", *args])


def test_request_delivers_and_is_a_run_with_every_pair(tmp_path, capsys):
    png = tmp_path / "timeline.png"
    code = request(tmp_path, "alice", "dave", "--pairs", "100", "--min-fidelity", "0.6",
                   "--lab", "dc:6,2", "--timeline", str(png))
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("ACK 1: alice - dave, 100 pairs") and "run 1: DONE" in out
    run = load_run(1, data_dir=tmp_path)
    meta = run.metadata["datacenter"]
    assert meta["status"] == "DONE" and meta["pairs_delivered"] == 100
    assert meta["create"]["min_fidelity"] == 0.6 and meta["create"]["remote"] == "dave"
    ok = run.streams["ok"]
    assert np.array_equal(ok["sequence"], np.arange(100))
    assert np.all(ok["goodness"] >= 0.6) and np.all(np.diff(ok["time_s"]) >= 0)
    assert set(np.unique(ok["bell"])) <= {2, 3}  # Psi+ or Psi- heralded directly
    assert png.stat().st_size > 1000


def test_rejected_request_is_one_error_line_exit_3_and_still_a_run(tmp_path, capsys):
    code = request(tmp_path, "alice", "dave", "--pairs", "5", "--min-fidelity", "0.95",
                   "--lab", "dc_small")
    captured = capsys.readouterr()
    assert code == 3
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qnetlab: error: ERR REJECTED (create 1): ")
    meta = load_run(1, data_dir=tmp_path).metadata["datacenter"]
    assert meta["status"] == "REJECTED" and meta["error"]["code"] == "REJECTED"


def test_a_request_that_cannot_finish_in_time_expires_exit_3(tmp_path, capsys):
    """The dynamic scheduler leaves a station to requests that can finish: 100,000 pairs in
    0.5 s cannot, so it is never served and expires at its deadline."""
    code = request(tmp_path, "bob", "carol", "--pairs", "100000", "--max-time", "0.5",
                   "--lab", "dc:4,1")
    captured = capsys.readouterr()
    assert code == 3 and "ERR EXPIRE (create 1): max_time passed with 0 of 100000" in captured.err
    meta = load_run(1, data_dir=tmp_path).metadata["datacenter"]
    assert meta["status"] == "EXPIRE" and meta["error"]["t"] == 0.5


def test_bad_arguments_are_usage_errors(tmp_path, capsys):
    assert request(tmp_path, "alice", "dave", "--lab", "dc:1,1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "K=1 is out of range" in err[0]
    assert request(tmp_path, "alice", "dave", "--min-fidelity", "2") == 2


def test_a_lab_without_a_switch_or_links_is_a_usage_error(tmp_path, capsys):
    assert request(tmp_path, "alice", "bob", "--lab", "node") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lab='node' has no optical switch" in err[0]
