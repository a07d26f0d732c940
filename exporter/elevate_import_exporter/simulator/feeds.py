"""A made-up feed job for the demo: it pushes a few feeds to an Elevate base URL (the
import proxy's), as a retailer's scheduled job pushes its catalogue, and each feed's import
then goes its own way at the simulator (success, failure, a block, an abort).
"""

from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from elevate_import_exporter.simulator.imports import ImportDesk
from elevate_import_exporter.simulator.scripts import Step

log = logging.getLogger("elevate_import_exporter.simulator")

# Seconds between two feeds of a round, and from one round's start to the next.
FEED_INTERVAL = 3.0
ROUND_INTERVAL = 60.0


@dataclass(frozen=True)
class Feed:
    """One feed: its name (sent as ``X-Feed-Name``), import type, size, and the steps its
    import goes through at the simulator (a small feed finishes within the request)."""

    name: str
    type: str
    size: int
    steps: tuple[Step, ...] = ()


def demo_feeds() -> list[Feed]:
    return [
        Feed(
            "shop-se",
            "products",
            256 * 1024,
            (Step("WAITING", seconds=2), Step("IN_PROGRESS", seconds=10), Step("SUCCESS")),
        ),
        Feed(
            "shop-no",
            "products",
            128 * 1024,
            (
                Step("WAITING", seconds=3),
                Step("IN_PROGRESS", seconds=8),
                Step("FAILURE", message="Import failed: 12 products lack a price"),
            ),
        ),
        Feed("campaigns", "ads", 16 * 1024, (Step("IN_PROGRESS", seconds=5), Step("SUCCESS"))),
        Feed("search-terms", "synonyms", 40),
        Feed(
            "start-page",
            "panels",
            8 * 1024,
            (Step("WAITING", seconds=2), Step("BLOCKED", seconds=4), Step("ABORTED")),
        ),
    ]


class FeedJob:
    """Pushes ``feeds`` to ``base_url`` one every ``interval`` seconds, a round of them
    every ``every`` seconds, until stopped; ``desk`` is the simulator's, whose import
    script it sets before each feed."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        desk: ImportDesk,
        feeds: Sequence[Feed],
        *,
        interval: float = FEED_INTERVAL,
        every: float = ROUND_INTERVAL,
    ) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._key = api_key
        self._desk = desk
        self._feeds = list(feeds)
        self._interval = interval
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feed-job", daemon=True)
        self.pushed: list[int] = []  # the status each push was answered with (0: none)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        round_number = 0
        while not self._stop.is_set():
            round_number += 1
            for feed in self._feeds:
                self.pushed.append(self.push(feed, round_number))
                if self._stop.wait(self._interval):
                    return
            self._stop.wait(max(0.0, self._every - self._interval * len(self._feeds)))

    def push(self, feed: Feed, round_number: int) -> int:
        """Send one feed; the status it was answered with, 0 if none came."""
        if feed.steps:
            self._desk.steps = feed.steps
        body = (b"<product/>" * (feed.size // 10 + 1))[: feed.size]
        path = f"/api/v2/import/{feed.type}?name={quote(feed.name)}-{round_number}"
        conn = http.client.HTTPConnection(self._host, self._port, timeout=30)
        try:
            conn.request(
                "POST",
                path,
                body=body,
                headers={
                    "Api-Key": self._key,
                    "X-Feed-Name": feed.name,
                    "Content-Type": "application/xml",
                },
            )
            response = conn.getresponse()
            response.read()
        except OSError as exc:
            log.warning("feed job: %s could not be pushed: %s", feed.name, exc)
            return 0
        finally:
            conn.close()
        log.info("feed job: pushed %s (%d bytes): %d", feed.name, feed.size, response.status)
        return response.status
