"""Bundled simulated labs (pyvisa-sim lab files with an ``x-lab`` world description)."""
