"""A pyvisa-sim ``Device`` promoted to a physics-backed, thread-safe simulated instrument.

pyvisa-sim parses the YAML as usual; :func:`promote` then swaps the classes of the parsed
device and its properties for qnetlab's, and :func:`bind_model` wires the YAML's ``x-get`` /
``x-set`` / ``x-call`` keys to methods of the instrument model. :class:`PhysDevice` is put
together from one module per job:

- :mod:`.matching`: a program message to the YAML's replies (SCPI grammar dispatch through
  :mod:`.scpi`, then pyvisa-sim's exact matching; models' handlers first);
- :mod:`.error_queues`: SCPI error queues and status registers with the instrument's own
  messages (per client connection on a served lab);
- :mod:`.session_io`: per-session reply queues with ready times, whole-message reads with
  lab-time timeouts;
- :mod:`.faults`: delayed replies, disconnects, garbled replies, power-on resets and reboots
  (``library.faults``);
- :mod:`.state`: stored settings and ``reset_to_defaults`` without breaking open sessions;
- :mod:`.properties`: properties computed or observed by the models.

One lock per lab serialises every device of the lab (thread safety). Names imported from here
elsewhere (``PhysDevice``, ``promote``, ``bind_model``, ``HookedProperty``,
``HookedChannelProperty``, ``Faults``, ``QUEUE_DEPTH``) stay importable from here.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import stringparser
from pyvisa_sim.component import NoResponse, Property, to_bytes
from pyvisa_sim.devices import Device

from qnetlab.sim_instruments.protocol import InstrumentRefusal

from .error_queues import QUEUE_DEPTH, ErrorQueues
from .faults import Faults
from .matching import Matching
from .properties import HookedChannelProperty, HookedProperty
from .scpi import Grammar, compile_device
from .session_io import SessionIO
from .state import State

if TYPE_CHECKING:
    from qnetlab.clock import VirtualClock

__all__ = ["QUEUE_DEPTH", "Faults", "HookedChannelProperty", "HookedProperty", "PhysDevice",
           "bind_model", "promote"]


class PhysDevice(Matching, ErrorQueues, SessionIO, State, Device):
    """pyvisa-sim Device with hooks, whole-reply reads, rich errors, a lock and faults."""

    # set by promote()
    lock: threading.RLock
    clock: VirtualClock
    exact_handlers: dict[bytes, Callable[[], Any]]
    static_replies: dict[bytes, Any]
    arg_handlers: list[tuple[stringparser.Parser, Callable[[Any], Any]]]
    model: Any
    faults: Faults
    rng: np.random.Generator
    query_error_reply: bytes | None
    scpi: Grammar | None  # None: not a SCPI product (exact matching, e.g. Lake Shore, Triton)
    _ready_at: deque[float]
    _sessions: weakref.WeakSet
    _pending_error: tuple[str, str] | None
    _defaults: list[tuple[Property, Any]]
    _shared_errors: dict[str, list[bytes]]  # the error queues of sessions without their own


def _bind(model: Any, name: str, where: str) -> Callable[..., Any]:
    try:
        return getattr(model, name)
    except AttributeError:
        raise AttributeError(f"{type(model).__name__} has no method {name!r} named by {where}") \
            from None


def promote(
    device: Device,
    device_dict: dict[str, Any],
    lock: threading.RLock,
    clock: VirtualClock,
    rng: np.random.Generator,
) -> PhysDevice:
    """Turn a parsed pyvisa-sim Device into a :class:`PhysDevice` (no model bound yet)."""
    device.__class__ = PhysDevice
    dev: PhysDevice = device  # type: ignore[assignment]
    dev.lock = lock
    dev.clock = clock
    dev.rng = rng
    dev.model = None
    dev.faults = Faults()
    dev._ready_at = deque()
    dev._sessions = weakref.WeakSet()
    dev._pending_error = None
    dev.exact_handlers = {}
    dev.static_replies = {}
    dev.arg_handlers = []
    dev.raw_dict = device_dict
    err = device_dict.get("error", {})
    qerr = err.get("response", {}).get("query_error") if isinstance(err, dict) else None
    dev.query_error_reply = to_bytes(qerr) if qerr else None
    scpi = str(device_dict.get("x-scpi", "")).lower() == "true"  # the loader keeps strings
    dev.scpi = compile_device(device_dict) if scpi else None
    dev._shared_errors = {name: queue._queue for name, queue in dev._error_queues.items()}
    dev._defaults = []
    for prop in dev._properties.values():
        prop.__class__ = HookedProperty
        prop._device = dev
        dev._defaults.append((prop, prop._value))
    for channels in dev._channels.values():
        for prop in channels._properties.values():
            prop.__class__ = HookedChannelProperty
            prop._device = dev
            dev._defaults.append((prop, prop._value.default_factory()))
    return dev


_CH_FIELD = re.compile(r"\{ch_id\}")


def bind_model(dev: PhysDevice, model: Any) -> None:
    """Connect the YAML's x-get / x-set / x-call keys to ``model``'s methods."""
    dev.model = model
    dev.exact_handlers = {}
    dev.static_replies = {}
    dev.arg_handlers = []
    dd = dev.raw_dict
    _bind_component(dev, model, dd, dev._properties, None)
    for group, cd in (dd.get("channels") or {}).items():
        channels = dev._channels[group]
        _bind_component(dev, model, cd, channels._properties, channels._ids)


def _bind_component(dev: PhysDevice, model: Any, cd: dict[str, Any], props: dict[str, Any],
                    ids: list[str] | None) -> None:
    for dia in cd.get("dialogues", ()):
        call = dia.get("x-call")
        if not call:
            continue
        owner = dev if call.startswith("scpi_") else model
        fn = _bind(owner, call, f"dialogue {dia['q']!r}")
        static = to_bytes(dia["r"]) if "r" in dia else NoResponse
        for ch in ids or [None]:
            q = dia["q"].strip(" ")
            if ch is not None:
                q = q.format(ch_id=ch)
            key = q.encode()
            dev.exact_handlers[key] = fn if ch is None else (lambda f=fn, c=ch: f(c))
            dev.static_replies[key] = static
    for name, pd in (cd.get("properties") or {}).items():
        prop = props[name]
        prop._xget = _bind(model, pd["x-get"], f"property {name!r}") if "x-get" in pd else None
        prop._xset = _bind(model, pd["x-set"], f"property {name!r}") if "x-set" in pd else None
        if "x-call" in pd and "setter" in pd:
            fn = _bind(model, pd["x-call"], f"property {name!r}")
            parser = stringparser.Parser(pd["setter"]["q"].strip(" "))
            has_ch = bool(_CH_FIELD.search(pd["setter"]["q"]))

            def call(parsed: Any, f: Callable[..., Any] = fn, has_ch: bool = has_ch,
                     valid: list[str] | None = ids) -> Any:
                if has_ch:
                    ch = str(parsed["ch_id"])
                    if valid is not None and ch not in valid:
                        raise InstrumentRefusal("undefined_header", f"no channel {ch}")
                    return f(ch, str(parsed.get("0", "")).strip())
                return f(str(parsed).strip())

            dev.arg_handlers.append((parser, call))

