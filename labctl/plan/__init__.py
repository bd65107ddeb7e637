"""Plan: a protocol resolved into dated tasks, concentrations and media prep."""
