"""labctl: a controller for automated, day-by-day stem-cell differentiation protocols."""

__version__ = "0.1.0"
