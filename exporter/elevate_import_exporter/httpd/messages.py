"""A request as the buffered server hands it to a handler thread, and the answer it gets.

The request is whole (head and body, decoded from chunks when it came chunked); a
request refused by :mod:`~elevate_import_exporter.httpd.http1` comes with its
:class:`~elevate_import_exporter.httpd.http1.Refusal` instead of a body, and its head
when that could be read (and trusted: see :attr:`Request.trusted`).
"""

from __future__ import annotations

from dataclasses import dataclass

from elevate_import_exporter.httpd.http1 import Head, Refusal


@dataclass(frozen=True, slots=True)
class Request:
    """One request: who sent it, when its first byte came (monotonic), and what it is."""

    peer: str
    received: float
    head: Head | None  # None: not even the head could be read
    body: bytes = b""
    refusal: Refusal | None = None

    @property
    def method(self) -> str:
        return self.head.method if self.head is not None else ""

    @property
    def path(self) -> str:
        """The target's path, as sent (not percent-decoded)."""
        return self.head.path if self.head is not None else ""

    @property
    def query(self) -> str:
        return self.head.query if self.head is not None else ""

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return self.head.headers if self.head is not None else ()

    def header(self, name: str) -> str | None:
        """The first ``name`` header's value, or None."""
        return self.head.get(name) if self.head is not None else None

    @property
    def trusted(self) -> bool:
        """Whether its headers may be believed (``Authorization`` among them): a refusal
        of the head itself (a line h11 cannot read, a folded line) leaves none to."""
        return self.head is not None and (self.refusal is None or self.refusal.head_readable)


@dataclass(frozen=True, slots=True)
class Answer:
    """What a request gets; ``Content-Length`` is set when it is written, and ``close``
    ends the connection after it."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    close: bool = False
