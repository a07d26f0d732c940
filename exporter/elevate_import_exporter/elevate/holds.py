"""Retry-After remembered across rounds: ids, or the whole API, that Elevate asked to wait for.

A 429 is about the id that was asked for: that id is not asked again until its
``Retry-After`` has passed. A 5xx means the cluster is busy (the API's own words),
so a 503 with ``Retry-After`` holds back every id. A wait longer than
:data:`MAX_RETRY_AFTER_HOLD` is cut to it, so that a wrong header cannot silence
an id for days. Holds run on the monotonic clock: a wall-clock step must not end
or stretch them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from elevate_import_exporter.core.model import ApiError

log = logging.getLogger(__name__)

# One hour: long enough to honour any sensible Retry-After, short enough that a
# header asking for days does not silence an import for that long.
MAX_RETRY_AFTER_HOLD = 3600.0


class Holds:
    """Until when (monotonic) each id, and the whole API, must not be asked."""

    def __init__(
        self,
        cap: float = MAX_RETRY_AFTER_HOLD,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cap = cap
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._ids: dict[str, float] = {}
        self._api_until = 0.0

    def note(self, import_id: str, error: ApiError) -> bool:
        """Remember the ``Retry-After`` of a failed query; True if it holds back every id."""
        if error.retry_after is None:
            return False
        seconds = min(error.retry_after, self._cap)
        if not seconds > 0:  # also refuses NaN
            return False
        until = self._monotonic() + seconds
        if error.reason == "rate_limited":
            with self._lock:
                self._ids[import_id] = max(until, self._ids.get(import_id, 0.0))
            log.debug("id=%s held back for %.0f s (Retry-After of a 429)", import_id, seconds)
            return False
        with self._lock:
            self._api_until = max(until, self._api_until)
        log.warning(
            "Elevate answered %s with Retry-After for id=%s: no status request to it for %.0f s",
            error.code,
            import_id,
            seconds,
        )
        return True

    def api_held(self) -> bool:
        """Whether the whole API asked to wait and the wait has not passed yet."""
        with self._lock:
            return self._api_until > self._monotonic()

    def held(self, ids: Iterable[str]) -> set[str]:
        """Those of ``ids`` not to be asked now; forgets holds that have passed."""
        now = self._monotonic()
        with self._lock:
            if self._api_until > now:
                return set(ids)
            # Dropped here, so that ids asked once and never again do not pile up.
            for import_id in [i for i, until in self._ids.items() if until <= now]:
                del self._ids[import_id]
            return {i for i in ids if i in self._ids}
