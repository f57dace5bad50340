"""``QnetlabVisaLibrary``: pyvisa-sim's library with one physical world per lab file."""

from __future__ import annotations

import importlib
import importlib.resources
import os
import threading
from typing import Any

from pyvisa import constants, errors, rname
from pyvisa.util import LibraryPath
from pyvisa_sim import parser
from pyvisa_sim.devices import Devices
from pyvisa_sim.highlevel import SimVisaLibrary

from qnetlab import topologies
from qnetlab.clock import VirtualClock
from qnetlab.sim_instruments.physics.profiles import get_profile
from qnetlab.sim_instruments.physics.world import DEFAULT_NODE, Lab, one_node_lab

from .device import PhysDevice, bind_model, promote
from .faults import FaultInjector

StatusCode = constants.StatusCode
_KEEP_ALIVE: dict[str, QnetlabVisaLibrary] = {}  # a lab persists like a real one: until reset


def resolve_lab_path(spec: str) -> str:
    """A lab file path, ``package.module:file.yaml`` resolved inside an installed package, or
    a generated topology (``chain:16``, ``star:8``, ``twosite``: its lab file generated into the
    cache directory, see :mod:`qnetlab.topologies`; a bad spec is a one-line ``SpecError``);
    a ``?profile=NAME`` suffix (a station file's way to run the lab on another device profile,
    e.g. ``qnetlab.sim_instruments.labs:link.yaml?profile=sota-2025@qnetlab``) is kept, checked,
    after the resolved path: that lab on that profile is a world of its own."""
    spec, _, query = spec.partition("?")
    if query:
        return resolve_lab_path(spec) + f"?profile={_profile_of(query)}"
    if os.path.exists(spec):
        return os.path.abspath(spec)
    if topologies.is_spec(spec):
        return str(topologies.lab_file(spec, instruments_dir()))
    if ":" in spec:
        module, _, name = spec.partition(":")
        try:
            path = importlib.resources.files(module) / name
        except ModuleNotFoundError as exc:
            raise FileNotFoundError(f"lab file {spec!r}: no package {module!r}") from exc
        if path.is_file():
            return str(path)
    raise FileNotFoundError(f"lab file {spec!r} not found (a path or 'package.module:file.yaml')")


def instruments_dir() -> str:
    """The folder of the instrument YAMLs a generated lab file points at."""
    return str(importlib.resources.files("qnetlab.sim_instruments"))


def _profile_of(query: str) -> str:
    """The profile named by a lab spec's ``profile=NAME`` query; ValueError otherwise."""
    key, _, name = query.partition("=")
    if key != "profile" or not name:
        raise ValueError(f"lab file option {query!r}: the only option is 'profile=NAME'")
    return get_profile(name).name


def _import(dotted: str) -> type:
    module, _, cls = dotted.partition(":")
    return getattr(importlib.import_module(module), cls)


class QnetlabVisaLibrary(SimVisaLibrary):
    """pyvisa backend ``@qnetlab``: the YAMLs of ``@sim``, plus physics, faults and a clock."""

    lab: Lab
    clock: VirtualClock
    faults: FaultInjector

    def __new__(cls, library_path: str | LibraryPath = ""):
        # one world per lab file, however the file is named (path, relative path, pkg:file)
        if library_path:
            library_path = LibraryPath(resolve_lab_path(str(library_path)), "user specified")
        return super().__new__(cls, library_path)

    @staticmethod
    def get_debug_info() -> dict[str, str]:
        info = dict(SimVisaLibrary.get_debug_info())
        info["Backend"] = "qnetlab physics-backed pyvisa-sim"
        return info

    def _init(self) -> None:
        self.sessions = {}
        self.lab_path, _, query = str(self.library_path).partition("?")
        self._profile = _profile_of(query) if query else None  # the station file's choice
        self.lock = threading.RLock()
        self.clock = VirtualClock()
        self._resources: dict[str, dict[str, Any]] = {}
        try:
            self.devices = self._parse()
        except Exception as exc:
            raise type(exc)(f"Could not parse lab file {self.lab_path}: {exc}") from exc
        self._build_lab(seed=None)
        self.faults = FaultInjector(self)
        _KEEP_ALIVE[str(self.library_path)] = self

    def _parse(self) -> Devices:
        loader = parser.Loader(self.lab_path, False)
        bare = "x-lab" not in loader.data  # a bare instrument YAML: a one-node lab
        self.lab_config = one_node_lab(os.path.splitext(os.path.basename(self.lab_path))[0]) \
            if bare else dict(loader.data["x-lab"] or {})
        if self._profile is not None:
            self.lab_config["profile"] = self._profile
        default_bind = {"node": DEFAULT_NODE} if bare else {}
        devices = Devices()
        for i, (resource, rdict) in enumerate(loader.data.get("resources", {}).items()):
            dd = loader.get_device_dict(
                rdict["device"], rdict.get("filename"), rdict.get("bundled", False),
                parser.SPEC_VERSION_TUPLE[0],
            )
            device = parser.get_device(rdict["device"], dd, loader, rdict)
            canonical = rname.to_canonical_name(resource)
            devices.add_device(canonical, device)
            rng = _device_rng(self.lab_config, i)
            promote(device, dd, self.lock, self.clock, rng)
            self._resources[canonical] = {"device": device, "dict": dd, "bind": rdict.get(
                "x-bind") or default_bind, "serve": dict(rdict.get("x-serve") or {})}
        return devices

    def _build_lab(self, seed: int | None, profile: str | None = None) -> None:
        self.lab = Lab(self.lab_config, self.clock, seed, profile)
        for canonical, info in self._resources.items():
            dev: PhysDevice = info["device"]
            model_path = info["dict"].get("x-model")
            if model_path:
                model = _import(model_path)(dev, self.lab, dict(info["bind"]), canonical)
                bind_model(dev, model)

    # --- public helpers --------------------------------------------------------------------
    def reset_state(self, seed: int | None = None, profile: str | None = None) -> None:
        """Fresh lab: defaults, clock at 0, a new world (same seed unless given; the lab file's
        device profile unless ``profile`` names another), no faults.

        Open sessions keep working (unlike pyvisa-sim's ``_init``)."""
        with self.lock:
            self.clock.reset(0.0)
            for info in self._resources.values():
                dev: PhysDevice = info["device"]
                dev.reset_to_defaults()
                dev.faults.clear()
            self._build_lab(seed, profile)

    def use_profile(self, profile: str) -> None:
        """Put the lab on device profile ``profile`` (a fresh lab, same seed) unless it is on it
        already; an unknown name is a one-line ``ValueError``."""
        if self.lab.profile.name != get_profile(profile).name:
            self.reset_state(self.lab.seed, profile)

    def device(self, resource: str) -> PhysDevice:
        return self.devices[rname.to_canonical_name(resource)]  # type: ignore[return-value]

    def model(self, resource: str) -> Any:
        return self.device(resource).model

    def serve_options(self) -> dict[str, dict[str, Any]]:
        """Each resource's ``x-serve`` entry of the lab file (``{port: N, max_clients: 1}``),
        in file order; ``{}`` where the file gives none (the served lab's defaults)."""
        return {name: dict(info["serve"]) for name, info in self._resources.items()}

    def resources_for(self, **binding: str) -> list[str]:
        """Resource names whose ``x-bind`` matches, e.g. ``resources_for(node="alice")``."""
        return [r for r, info in self._resources.items()
                if all(info["bind"].get(k) == v for k, v in binding.items())]

    # --- VISA operations -------------------------------------------------------------------
    def open(self, session, resource_name, access_mode=constants.AccessModes.no_lock,
             open_timeout=constants.VI_TMO_IMMEDIATE):
        sid, status = super().open(session, resource_name, access_mode, open_timeout)
        if status != StatusCode.success:  # pyvisa does not check this for Python backends
            raise errors.VisaIOError(status)
        sess = self.sessions[sid]
        dev: PhysDevice = sess.device
        dev.attach(sess)
        if not dev.session_ok(sess):
            del self.sessions[sid]
            raise errors.VisaIOError(StatusCode.error_connection_lost)
        return sid, status

    def read(self, session, count):
        try:
            sess = self.sessions[session]
        except KeyError:
            raise errors.VisaIOError(StatusCode.error_invalid_object) from None
        chunk, status = sess.device.read_for(sess, count)
        if status < 0:
            raise errors.VisaIOError(status)
        return chunk, status

    def write(self, session, data):
        try:
            sess = self.sessions[session]
        except KeyError:
            raise errors.VisaIOError(StatusCode.error_invalid_object) from None
        n, status = sess.device.write_for(sess, data)
        if status < 0:
            raise errors.VisaIOError(status)
        return n, status

    def clear(self, session):
        try:
            sess = self.sessions[session]
        except KeyError:
            return StatusCode.error_invalid_object
        if not sess.device.session_ok(sess):
            raise errors.VisaIOError(StatusCode.error_connection_lost)
        sess.device.clear_output(sess)
        return StatusCode.success

    def flush(self, session, mask):
        return self.clear(session)


def _device_rng(config: dict[str, Any], index: int):
    import numpy as np

    return np.random.default_rng([int(config.get("seed", 0)), 7919, index])


def private_library(lab: str) -> QnetlabVisaLibrary:
    """A lab of its own: a new world for ``lab`` that no ResourceManager shares.

    ``library_for`` and ``ResourceManager("...@qnetlab")`` hand every caller the same world of
    a lab file; a served lab (``qnetlab.sim_server``) needs one of its own, so that a test can
    serve the link lab and run it in-process side by side. pyvisa's registry and the keep-alive
    table are left as they were."""
    path = LibraryPath(resolve_lab_path(lab), "user specified")
    key = (QnetlabVisaLibrary, path)
    registry = QnetlabVisaLibrary._registry
    shared, kept = registry.pop(key, None), _KEEP_ALIVE.get(str(path))
    try:
        lib = QnetlabVisaLibrary(path)
    finally:
        registry.pop(key, None)
        if shared is not None:
            registry[key] = shared
        if kept is not None:
            _KEEP_ALIVE[str(path)] = kept
        else:
            _KEEP_ALIVE.pop(str(path), None)
    return lib  # type: ignore[return-value]


def library_for(lab: str) -> QnetlabVisaLibrary:
    """The library (and so the lab) behind ``lab`` (a path or ``pkg.module:file.yaml``)."""
    lib = QnetlabVisaLibrary(LibraryPath(lab, "user specified"))
    return lib  # type: ignore[return-value]
