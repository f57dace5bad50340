"""Entanglement sequences: heralded generation, verification (tomography, CHSH), scans,
entanglement swapping, the link check, and time-tag analysis."""

from .estimators import Chsh, Tomography, chsh, mle, tomography
from .generation import Generation, generate, link_pumps, set_protocol
from .swapping import SwapResult, swap_chain
from .timetags import Heralds, arrival_histogram, coincidences, extract_heralds
from .verification import Verification, chsh_of, quick_fidelity, tomography_of, verify

__all__ = [
    "Chsh",
    "Generation",
    "Heralds",
    "SwapResult",
    "Tomography",
    "Verification",
    "arrival_histogram",
    "chsh",
    "chsh_of",
    "coincidences",
    "extract_heralds",
    "generate",
    "link_pumps",
    "mle",
    "quick_fidelity",
    "set_protocol",
    "swap_chain",
    "tomography",
    "tomography_of",
    "verify",
]
