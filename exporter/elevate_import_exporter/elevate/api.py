"""API flavours: how one flavour of Elevate's API names an import's status and answers.

A flavour knows URLs, headers and bodies; the transport below it knows HTTP. The
poller talks to a :class:`StatusApi`, which joins the two and makes whatever
comes back safe before any other part of the exporter sees it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from elevate_import_exporter import __version__
from elevate_import_exporter.core.model import (
    MAX_MESSAGE_CHARS,
    ImportInfo,
    RequestRecord,
    safe_text,
)
from elevate_import_exporter.elevate.transport import Transport
from elevate_import_exporter.settings.config import ClientSettings


class Flavour(Protocol):
    """One flavour of the import-status API."""

    name: str

    def status_url(self, base_url: str, import_id: str) -> str:
        """The URL of one import's status."""

    def headers(self) -> dict[str, str]:
        """Headers to send besides the Api-Key and the User-Agent."""

    def parse(self, body: bytes, import_id: str) -> ImportInfo:
        """Import information from a 2xx body, or ``ValueError`` saying why there is none."""


class StatusApi:
    """Status queries of one flavour over one transport."""

    def __init__(self, flavour: Flavour, transport: Transport) -> None:
        self.flavour = flavour
        self._transport = transport
        self._headers = flavour.headers()

    def close(self) -> None:
        self._transport.close()

    def import_status(self, import_id: str, deadline: float, stop: threading.Event) -> ImportInfo:
        """Ask for one import's status until ``deadline`` (monotonic).

        Raises :class:`~elevate_import_exporter.core.model.ApiError` or
        :class:`~elevate_import_exporter.core.model.NotSent` (see :meth:`Transport.get`).
        """
        url = self.flavour.status_url(self._transport.base_url, import_id)
        info = self._transport.get(
            url, self._headers, lambda body: self.flavour.parse(body, import_id), deadline, stop
        )
        return self._clean(info)

    def _clean(self, info: ImportInfo) -> ImportInfo:
        # After decoding, so that a key sent back JSON-escaped is found as well.
        redact = self._transport.redact
        return replace(
            info,
            status=safe_text(redact(info.status)),
            type=safe_text(redact(info.type)),
            message=safe_text(redact(info.message), MAX_MESSAGE_CHARS),
        )


def flavour_named(name: str) -> Flavour:
    """The flavour for a ``--elevate.api`` value (one of ``model.API_FLAVOURS``)."""
    from elevate_import_exporter.elevate.admin import AdminV3, AdminV4
    from elevate_import_exporter.elevate.web_v2 import WebV2

    flavours: dict[str, Flavour] = {f.name: f for f in (WebV2(), AdminV4(), AdminV3())}
    try:
        return flavours[name]
    except KeyError:
        raise ValueError(f"unknown API flavour {name!r}: one of {', '.join(flavours)}") from None


def status_api(
    client: ClientSettings, on_request: Callable[[RequestRecord], None] = lambda _record: None
) -> StatusApi:
    """The status API that ``client`` names: its flavour over its transport."""
    transport = Transport(
        client.base_url,
        client.api_key,
        user_agent=f"elevate-import-exporter/{__version__}",
        pool_size=client.concurrency,
        timeout=client.timeout,
        retries=client.retries,
        on_request=on_request,
    )
    return StatusApi(flavour_named(client.api), transport)
