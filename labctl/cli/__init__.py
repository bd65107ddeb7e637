"""The ``labctl`` command line (main: the parser and the error handling)."""
