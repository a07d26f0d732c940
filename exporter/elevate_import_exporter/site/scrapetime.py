"""How long a scrape may poll: from Prometheus' scrape timeout, and what is spent already."""

from __future__ import annotations

# The scrape timeout assumed without a usable X-Prometheus-Scrape-Timeout-Seconds
# (Prometheus' default), and the most a client may ask for.
DEFAULT_SCRAPE_TIMEOUT = 10.0
MAX_SCRAPE_TIMEOUT = 300.0
MIN_BUDGET = 0.1
# The answer must be written within the scrape timeout: the poll ends this much earlier
# than the time left after rendering (estimated at RENDER_FACTOR times the last render).
BUDGET_MARGIN = 0.5
RENDER_FACTOR = 1.5


def scrape_timeout(header: str | None) -> float:
    """The client's ``X-Prometheus-Scrape-Timeout-Seconds``: a finite positive number of
    seconds, at most :data:`MAX_SCRAPE_TIMEOUT`; anything else means the default."""
    try:
        seconds = float(header or "")
    except ValueError:
        return DEFAULT_SCRAPE_TIMEOUT
    if not 0 < seconds < float("inf"):  # also false for nan
        return DEFAULT_SCRAPE_TIMEOUT
    return min(seconds, MAX_SCRAPE_TIMEOUT)


def poll_budget(timeout: float, spent: float, render_seconds: float) -> float:
    """Seconds the poll may take so that the answer is written ``timeout`` seconds after
    the request, ``spent`` of them gone already, rendering taking about ``render_seconds``."""
    return max(MIN_BUDGET, timeout - spent - BUDGET_MARGIN - RENDER_FACTOR * render_seconds)
