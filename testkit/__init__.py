"""Helpers shared by tests and bench; never imported by the runtime packages."""
