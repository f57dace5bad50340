"""Instrument behaviour of the simulated lab: what each command does to the physical world."""
