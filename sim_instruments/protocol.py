"""What instrument models and the ``@qnetlab`` backend share: refusals and binary blocks.

Models (``qnetlab.sim_instruments.models``) raise :class:`InstrumentRefusal` and answer with
:func:`ieee_block`; the backend (``pyvisa_qnetlab``) turns refusals into error-queue entries and
sends the blocks. Both import this module, so the simulated lab's models never import the backend
(no import cycle between ``pyvisa_qnetlab`` and ``qnetlab.sim_instruments``).
"""

from __future__ import annotations

import numpy as np


class InstrumentRefusal(ValueError):
    """Raised by an instrument model to refuse a command; becomes an entry in the error queue.

    ``key`` names the error as the YAML's ``error_queue`` / ``status_register`` do
    (``data_out_of_range``, ``settings_conflict``, ``execution_error``, ...).
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def ieee_block(values: np.ndarray | bytes, dtype: str | None = None) -> bytes:
    """IEEE-488.2 definite-length block ``#<n><len><payload>`` (little-endian numbers)."""
    payload = values if isinstance(values, bytes) else np.asarray(values, dtype=dtype).tobytes()
    size = str(len(payload)).encode()
    return b"#" + str(len(size)).encode() + size + payload
