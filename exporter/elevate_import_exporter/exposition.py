"""The answer to a scrape: format and compression chosen from the request, as
``prometheus_client``'s own exposition chooses them, but with q-values honoured."""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector


@dataclass(frozen=True, slots=True)
class Exposition:
    body: bytes
    content_type: str
    content_encoding: str | None


def render(
    registry: CollectorRegistry | Collector,
    accept: str,
    accept_encoding: str,
    names: Iterable[str] = (),
) -> Exposition:
    """The registry in the format ``accept`` asks for; only the ``names`` families if given.

    ``names`` is the ``name[]`` query parameter of the Prometheus client libraries.
    """
    wanted = [name for name in names if name]
    if wanted and isinstance(registry, CollectorRegistry):
        registry = registry.restricted_registry(wanted)
    encoder, content_type = choose_encoder(accept)
    body = encoder(registry)
    if accepts_gzip(accept_encoding):
        return Exposition(gzip.compress(body, compresslevel=6), content_type, "gzip")
    return Exposition(body, content_type, None)


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` header allows gzip (``gzip;q=0`` refuses it)."""
    for part in header.split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip"):
            continue
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value.strip()) > 0
                except ValueError:
                    return False
        return True
    return False
