"""The simulated link layer's bookkeeping: one per lab, all of its state declared up front."""

from __future__ import annotations

import pytest

from qnetlab.sim_instruments.models.linklayer import LinkLayer
from qnetlab.sim_instruments.protocol import InstrumentRefusal


def test_link_layer_is_one_per_lab_and_declares_its_swaps_from_the_start(sim_lab):
    world = sim_lab("link").world
    layer = LinkLayer.of(world)
    assert LinkLayer.of(world) is layer is world.link_layer
    assert layer.swaps == {}  # there before any swap, not created by the first one
    with pytest.raises(InstrumentRefusal, match="no swap '7'"):
        layer.get_swap("7")


def test_request_and_swap_ids_come_from_one_counter(sim_lab):
    layer = LinkLayer.of(sim_lab("link").world)
    first = layer.next_id()
    assert layer.next_id() == first + 1
