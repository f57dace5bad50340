"""Plain physics models of the simulated lab (no pyvisa here): testable on their own."""
