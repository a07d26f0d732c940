"""The landing page: what the exporter knows about each import, and about its own rounds.

Everything that came from the API is escaped here; the page never queries Elevate. It
reloads itself every few seconds, so an open tab follows the poll rounds without a click.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from elevate_import_exporter import __version__
from elevate_import_exporter.model import DOCUMENTED_STATUSES
from elevate_import_exporter.poller import ImportState, RoundResult, Snapshot

# Seconds between the page's own reloads: short enough to watch the demo (which polls
# every 2 s) move, and rendering from the last round's state costs Elevate nothing.
REFRESH_SECONDS = 5

UNKNOWN_YET = "unknown yet"

# The class of a status cell comes from this table, never from the API's text, so an odd
# status cannot inject markup; undocumented statuses and none at all look "unknown".
_STATUS_CLASS = {
    status: "status-" + status.lower().replace("_", "-") for status in DOCUMENTED_STATUSES
}
_UNKNOWN_CLASS = "status-unknown"


def landing_page(snapshot: Snapshot, telemetry_path: str, now: float | None = None) -> bytes:
    """The page for ``snapshot``; ``now`` (wall-clock, as the poller's) dates the "ago"s."""
    when = time.time() if now is None else now
    rows = "\n".join(_row(state, when) for state in snapshot.imports.values())
    page = _PAGE.format(
        refresh=REFRESH_SECONDS,
        version=html.escape(__version__),
        path=html.escape(telemetry_path),
        exporter=_exporter_state(snapshot.last_round, len(snapshot.imports), when),
        count=len(snapshot.imports),
        rows=rows or '<tr><td colspan="7">No import ids are tracked.</td></tr>',
    )
    return page.encode("utf-8")


def status_class(status: str | None) -> str:
    return _STATUS_CLASS.get(status or "", _UNKNOWN_CLASS)


def ago(then: float | None, now: float) -> str:
    """``then`` as "3 s ago", "5 min ago", ...; "never" for None."""
    if then is None:
        return "never"
    # A wall clock stepped back must not show a negative age.
    seconds = max(0, int(now - then))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _timestamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _row(state: ImportState, now: float) -> str:
    info = state.info
    status = info.status if info else UNKNOWN_YET
    since = _timestamp(state.status_since) if state.status_since is not None else ""
    return (
        "<tr>"
        + _cell(state.id)
        + _cell(info.type if info else "")
        + f'<td class="status {status_class(info.status if info else None)}">'
        + f"{html.escape(status)}</td>"
        + _cell(since)
        + _cell(ago(state.last_polled, now))
        + _cell(info.message if info else "", "message")
        + _cell("yes" if state.poll_success else "no")
        + "</tr>"
    )


def _cell(text: str, css_class: str = "") -> str:
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<td{attribute}>{html.escape(text)}</td>"


def _exporter_state(last: RoundResult | None, tracked: int, now: float) -> str:
    """The last poll round as a definition list (not a table: the page has one table)."""
    if last is None:
        return f"<p>{tracked} ids tracked. No poll round has ended yet.</p>"
    up = '<span class="up">yes</span>' if last.up else '<span class="down">no</span>'
    items = (
        ("Last poll round ended", html.escape(f"{_timestamp(last.ended)}, {ago(last.ended, now)}")),
        ("Up", up),
        ("Took", _duration(last.seconds)),
        ("Ids queried", f"{last.queried} (final statuses are not asked again)"),
        ("Ids without an answer", _failures(last.failures)),
        ("Ids tracked", str(tracked)),
    )
    return (
        '<dl class="exporter">'
        + "".join(f"<dt>{term}</dt><dd>{value}</dd>" for term, value in items)
        + "</dl>"
    )


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _failures(failures: Mapping[str, int]) -> str:
    if not failures:
        return "none"
    return html.escape(", ".join(f"{reason}: {n}" for reason, n in sorted(failures.items())))


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<title>Elevate import exporter</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; white-space: nowrap; }}
td.message {{ white-space: normal; }}
dl.exporter {{ display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }}
dl.exporter dt {{ font-weight: bold; }}
dl.exporter dd {{ margin: 0; }}
.status {{ font-weight: bold; }}
.status-success, .up {{ background: #d3f2d3; color: #14551b; }}
.status-failure, .status-aborted, .down {{ background: #f8d0d0; color: #8a1212; }}
.status-in-progress {{ background: #d2e3fb; color: #123f7a; }}
.status-waiting, .status-blocked {{ background: #fbe7b8; color: #6b4a00; }}
.status-not-found, .status-unknown {{ background: #e4e4e4; color: #444; }}
.up, .down {{ padding: 0 0.4em; font-weight: bold; }}
</style>
</head>
<body>
<h1>Elevate import exporter</h1>
<p>Version {version}. <a href="{path}">Metrics</a> &middot;
<a href="/-/healthy">Health</a> &middot; <a href="/-/ready">Readiness</a></p>
<h2>Tracked imports ({count})</h2>
<p>As of the latest poll round; this page does not query Elevate, and reloads itself
every {refresh} s.</p>
<table>
<thead><tr><th>Id</th><th>Type</th><th>Status</th><th>Since</th><th>Last polled</th>
<th>Message</th><th>Last poll ok</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
<h2>Exporter</h2>
{exporter}
</body>
</html>
"""
