"""Scheduling: start times for chains of jobs inside their windows, and start dates."""
