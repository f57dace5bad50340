"""``python -m qnetlab``: the qnetlab command line."""

from qnetlab.cli import entry_point

entry_point()
