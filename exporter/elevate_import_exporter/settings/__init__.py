"""Configuration: the one table of flags and variables (``options``), validated apart from
flag parsing into a frozen :class:`Settings` (``config``)."""

from elevate_import_exporter.settings.config import (
    ClientSettings,
    ConfigError,
    Settings,
    load_settings,
)
from elevate_import_exporter.settings.options import LOG_OPTIONS, RUN_OPTIONS, Option

__all__ = [
    "LOG_OPTIONS",
    "RUN_OPTIONS",
    "ClientSettings",
    "ConfigError",
    "Option",
    "Settings",
    "load_settings",
]
