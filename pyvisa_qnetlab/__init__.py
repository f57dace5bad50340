"""pyvisa backend ``@qnetlab``: the simulated quantum-network lab behind pyvisa-sim YAMLs.

``ResourceManager("lab.yaml@qnetlab")`` (or ``"qnetlab.sim_instruments.labs:link.yaml@qnetlab"``)
opens a lab file whose instruments share one physical world (``"chain:16@qnetlab"``: a generated
topology, :mod:`qnetlab.topologies`); the same files load on stock
``@sim`` with static values. See ARCHITECTURE.md.
"""

from qnetlab.sim_instruments.protocol import InstrumentRefusal, ieee_block

from .library import (
    QnetlabVisaLibrary,
    instruments_dir,
    library_for,
    private_library,
    resolve_lab_path,
)

WRAPPER_CLASS = QnetlabVisaLibrary

__all__ = [
    "WRAPPER_CLASS",
    "InstrumentRefusal",
    "QnetlabVisaLibrary",
    "ieee_block",
    "instruments_dir",
    "library_for",
    "private_library",
    "resolve_lab_path",
]
