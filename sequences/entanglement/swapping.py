"""Entanglement swapping on a chain: kept pairs on two links, a Bell-state measurement at the
middle node, Pauli-frame correction, verification of the end-to-end pair. Pairs that waited in
memory longer than the cutoff are discarded (their partner is too old)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qnetlab.runstore import RunStore
from qnetlab.sequences.pumps import node_pumps, pumps_emitting
from qnetlab.stations import StationBundle

from . import plots
from .estimators import Tomography, counts_from_outcomes, tomography
from .frames import correct, swap_paulis


@dataclass
class SwapResult:
    ends: tuple[str, str]
    middle: str
    swap_id: int
    heralded: tuple[int, int]
    swaps: int
    tomography: Tomography
    mean_storage_s: float
    run_guid: str | None


def middle_node(bundle: StationBundle) -> tuple[str, str, str, str, str]:
    """(end A, link A, middle, link B, end B) of a two-link chain."""
    topo = bundle.topology
    for node in topo.nodes:
        links = topo.links_of(node)
        if len(links) == 2:
            ends = [lk.nodes[1 - lk.nodes.index(node)] for lk in links]
            return ends[0], links[0].name, node, links[1].name, ends[1]
    raise ValueError("swapping needs a chain: no node with two links in this station")


def swap_chain(bundle: StationBundle, pairs: int, cutoff_s: float, *, max_time_s: float = 600.0,
               runs: RunStore | None = None, bootstrap: int = 30,
               calibration: dict[str, Any] | None = None) -> SwapResult:
    end_a, _, mid, _, end_b = middle_node(bundle)
    qa, qm, qb = (bundle.node(n)["qnu"] for n in (end_a, mid, end_b))
    pumps = node_pumps(bundle, end_a, mid, end_b)
    clock = bundle.clock
    runs = runs or RunStore()
    run = runs.run("entanglement.swap", station=bundle.station, clock=clock, sample=mid,
                   calibration=calibration or {},
                   metadata={"ends": [end_a, end_b], "middle": mid, "pairs": pairs,
                             "cutoff_s": cutoff_s})
    run.stream("swaps", time_s="f8", bsm="i1", pattern_a="i2", pattern_b="i2", storage_a_s="f8",
               storage_b_s="f8", basis_a="i1", basis_b="i1", outcome_a="f4", outcome_b="f4")
    bases = ("X", "Y", "Z")
    with pumps_emitting(*pumps):
        with run:
            req_a = qa.link_to(mid).create(pairs, max_time_s=max_time_s, keep=True)
            req_b = qb.link_to(mid).create(pairs, max_time_s=max_time_s, keep=True)
            status_a = qa.link_to(mid).wait(req_a, max_time_s + 60, poll_s=10)
            status_b = qb.link_to(mid).wait(req_b, max_time_s + 60, poll_s=10)
            channel = qm.link_to(end_a)
            swap_id = channel.swap(req_a, req_b, cutoff_s, bases, bases)
            bsm = channel.bsm_results(swap_id)
            ra, rb = qa.link_to(mid).results(swap_id), qb.link_to(mid).results(swap_id)
            run.streams["swaps"].append(
                time_s=bsm["time_s"], bsm=bsm["bsm"], pattern_a=bsm["pattern_here"],
                pattern_b=bsm["pattern_there"], storage_a_s=bsm["storage_here_s"],
                storage_b_s=bsm["storage_there_s"], basis_a=ra.basis_index,
                basis_b=rb.basis_index, outcome_a=ra.outcome, outcome_b=rb.outcome)
    basis_a = np.asarray(bases)[ra.basis_index]
    basis_b = np.asarray(bases)[rb.basis_index]
    paulis = swap_paulis(bsm["bsm"], bsm["pattern_here"], bsm["pattern_there"])
    out_b = correct(basis_b, rb.outcome, paulis)
    result = tomography(counts_from_outcomes(basis_a, basis_b, ra.outcome, out_b),
                        bootstrap=bootstrap)
    plots.save(plots.density_matrix(result.rho, f"{end_a}-{end_b} after swapping at {mid}: "
                                    f"F = {result.fidelity:.3f} +- {result.fidelity_err:.3f}"),
               run.hdf5_path, "density_matrix")
    storage = np.concatenate([bsm["storage_here_s"], bsm["storage_there_s"]])
    return SwapResult((end_a, end_b), mid, swap_id, (status_a.delivered, status_b.delivered),
                      len(ra), result, float(storage.mean()) if storage.size else float("nan"),
                      run.guid)
