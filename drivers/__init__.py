"""Drivers for real device families (imported as ``labctl.drivers``).

Each module implements labctl's device interfaces over the device's own wire protocol.
"""
