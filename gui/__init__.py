"""The PyQt6 operator console (imported as ``labctl.gui``)."""
