"""Wire-level device simulators (imported as ``labctl.simulators``).

They implement the device side of shared DEVICES.md and never import labctl.drivers.
"""
