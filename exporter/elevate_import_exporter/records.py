"""What the exporter remembers of an import, and what a client hands over to register one.

Plain values, shared by the store that keeps them, the catalog that keeps them current,
the HTTP API that shows them and the proxy that registers imports it saw.
"""

from __future__ import annotations

from dataclasses import dataclass

from elevate_import_exporter.model import FINAL_STATUSES

# Where a tracked id came from; the order is the order of precedence when several hold it.
SOURCES = ("flag", "file", "api", "proxy")
# Sources whose ids the exporter itself adds and removes (registration, proxy).
REGISTERED_SOURCES = ("api", "proxy")

Labels = tuple[tuple[str, str], ...]  # sorted (key, value) pairs: hashable, comparable


class CatalogError(Exception):
    """The store could not take a change or give an answer (disk full, I/O error, too many
    ids); nothing was changed. The message is one line, fit for a client."""


@dataclass(frozen=True, slots=True)
class Registration:
    """One import a client hands over: its id, and optionally its type and labels."""

    id: str
    type: str = ""
    labels: Labels = ()


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """Everything kept of one import, live or retired; times are Unix seconds.

    ``type`` is the type given at registration until Elevate answers, then the answer's.
    ``status``/``message`` are those of the last answer (None: never answered).
    ``final_at``: when it reached a final status. ``retired_at``: when it left the metrics.
    """

    id: str
    source: str
    first_seen: float
    type: str = ""
    labels: Labels = ()
    status: str | None = None
    message: str = ""
    status_since: float | None = None
    last_answer: float | None = None
    final_at: float | None = None
    retired_at: float | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def retired(self) -> bool:
        return self.retired_at is not None

    @property
    def duration(self) -> float | None:
        """Seconds from first seen to final; None while not final."""
        return None if self.final_at is None else max(0.0, self.final_at - self.first_seen)
