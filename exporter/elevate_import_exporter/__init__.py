"""Prometheus exporter for the status of Voyado Elevate background imports."""

__version__ = "0.6.0"
