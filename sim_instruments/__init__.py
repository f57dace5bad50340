"""The simulated lab: one pyvisa-sim YAML per instrument kind, lab files, physics and models.

- ``*.yaml``: command syntax (stock ``@sim`` loads them with static values);
- ``labs/*.yaml``: simulated labs (single node, two-node link, three-node chain);
- ``physics``: plain physics models; ``models``: instrument behaviour on top of them.
"""

from importlib.resources import files

LABS = ("node", "link", "chain")


def lab_file(name: str) -> str:
    """Path of a bundled lab file: ``lab_file("link")``."""
    if name not in LABS:
        raise ValueError(f"lab {name!r} is not one of {LABS}")
    return str(files("qnetlab.sim_instruments.labs") / f"{name}.yaml")


def lab_spec(name: str) -> str:
    """``visalib`` string for a bundled lab on the physics backend."""
    return f"{lab_file(name)}@qnetlab"
