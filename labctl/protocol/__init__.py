"""Differentiation protocols: the YAML format, its loader, model and checks."""
