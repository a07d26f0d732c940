"""The landing page: what the exporter knows about each import, and about its own rounds.

Everything that came from outside (the API, registrations, the store) is escaped here; the
page never queries Elevate. It reloads itself every few seconds, so an open tab follows
the poll rounds without a click. The live imports show where each came from and the
labels allowlisted for the metrics (``--imports.metric-labels``); below them, a summary of
the last days per type and one page of the history (finished and retired imports), both
of which the caller reads from the store.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType

from elevate_import_exporter import __version__
from elevate_import_exporter.core.model import DOCUMENTED_STATUSES, safe_text
from elevate_import_exporter.core.records import ImportRecord
from elevate_import_exporter.core.state import ImportState, RoundResult, Snapshot
from elevate_import_exporter.lifecycle.summary import DAYS, TypeSummary, WeekSummary

# Seconds between the page's own reloads: short enough to watch the demo (which polls
# every 2 s) move, and rendering from the last round's state costs Elevate nothing.
REFRESH_SECONDS = 5

UNKNOWN_YET = "unknown yet"
# The type of imports the API names none for (Admin API v4).
NO_TYPE = "(none)"
NO_ANSWER = "no answer"
# "Last polled" of a final import, which is never asked again.
FINAL_POLLED = "final, not asked again"

# History rows on one page: the caller asks the store for this many, and the page shows
# no more even if given more, so its size stays bounded whatever the store holds.
HISTORY_PAGE_SIZE = 50

# The class of a status cell comes from this table, never from the API's text, so an odd
# status cannot inject markup; undocumented statuses and none at all look "unknown".
_STATUS_CLASS = {
    status: "status-" + status.lower().replace("_", "-") for status in DOCUMENTED_STATUSES
}
_UNKNOWN_CLASS = "status-unknown"
# The tracked table's columns before the allowlisted labels' (one each).
_TRACKED_COLUMNS = 8
_NO_RECORDS: Mapping[str, ImportRecord] = MappingProxyType({})


def landing_page(
    snapshot: Snapshot,
    telemetry_path: str,
    history: Sequence[ImportRecord] = (),
    page: int = 1,
    pages: int = 1,
    *,
    now: float | None = None,
    records: Mapping[str, ImportRecord] = _NO_RECORDS,
    metric_labels: Sequence[str] = (),
    summary: WeekSummary | None = None,
) -> bytes:
    """The page for ``snapshot`` and page ``page`` of ``pages`` of the history.

    ``history``: finished and retired imports, newest first, at most
    :data:`HISTORY_PAGE_SIZE`. ``now`` (wall-clock, as the poller's) dates the "ago"s.
    ``records``: the kept record of live imports by id, for their source and labels (an id
    without one shows neither). ``metric_labels``: the allowlisted label names, a column
    each. ``summary``: the last days per type; None when it could not be read.
    """
    when = time.time() if now is None else now
    names = tuple(metric_labels)
    rows = "\n".join(
        _row(state, records.get(state.id), names, when) for state in snapshot.imports.values()
    )
    columns = _TRACKED_COLUMNS + len(names)
    text = _PAGE.format(
        refresh=REFRESH_SECONDS,
        version=html.escape(__version__),
        path=_escape(telemetry_path),
        exporter=_exporter_state(snapshot.last_round, len(snapshot.imports), when),
        count=len(snapshot.imports),
        label_headers="".join(f"<th>{_escape(name)}</th>" for name in names),
        rows=rows or f'<tr><td colspan="{columns}">No import ids are tracked.</td></tr>',
        days=DAYS,
        week=_week(summary),
        history=_history_rows(history[:HISTORY_PAGE_SIZE], page),
        pagination=_pagination(page, pages),
    )
    return text.encode("utf-8")


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


def took(seconds: float) -> str:
    """A duration in its two largest units: "45s", "3m 12s", "2h 5m", "3d 4h"."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _timestamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _row(state: ImportState, record: ImportRecord | None, names: Sequence[str], now: float) -> str:
    info = state.info
    status = info.status if info else UNKNOWN_YET
    since = _timestamp(state.status_since) if state.status_since is not None else ""
    labels = dict(record.labels) if record is not None else {}
    return (
        "<tr>"
        + _cell(state.id)
        + _cell(info.type if info else "")
        + f'<td class="status {status_class(info.status if info else None)}">'
        + f"{_escape(status)}</td>"
        + _cell(since, "when")
        # A final import is never asked again: an age that grows for a day would look stale.
        + _cell(FINAL_POLLED if state.final else ago(state.last_polled, now))
        + _cell(info.message if info else "", "message")
        + _cell(_poll_ok(state))
        + _cell(record.source if record is not None else "")
        + "".join(_cell(labels.get(name, ""), "labels") for name in names)
        + "</tr>"
    )


def _week(summary: WeekSummary | None) -> str:
    """The summary of the last days per type, with what it covers."""
    if summary is None:
        return "<p>Not available: the store could not be read (see the log).</p>"
    days = round((summary.until - summary.since) / 86400)
    about = (
        f"<p>Imports that reached a final status in the last {days} days (since "
        f"{_timestamp(summary.since)}), as the store keeps them. Failed: FAILURE or ABORTED. "
        "Duration: from the start (the proxy's 202 or a registration's "
        "<code>accepted_at</code>, else first seen) to the first poll that saw the final "
        "status, the median of the type's finished imports.</p>"
    )
    if summary.capped:
        about += (
            f'<p class="capped">Counted from the newest {summary.read:,} of the '
            f"{summary.total:,} imports the store lists for this period: a page reads no "
            "more. Prometheus' <code>elevate_import_finished_total</code> counts them all."
            "</p>"
        )
    rows = "\n".join(_week_row(kind) for kind in summary.types)
    rows = rows or '<tr><td colspan="4">No import finished in this period.</td></tr>'
    return (
        about
        + '<div class="scroll"><table id="week">\n'
        + "<thead><tr><th>Type</th><th>Finished</th><th>Failed</th>"
        + "<th>Median duration</th></tr></thead>\n"
        + f"<tbody>\n{rows}\n</tbody>\n</table></div>"
    )


def _week_row(kind: TypeSummary) -> str:
    failed = ' class="failed"' if kind.failed else ""
    return (
        "<tr>"
        + _cell(kind.type or NO_TYPE)
        + f"<td>{kind.finished}</td>"
        + f"<td{failed}>{kind.failed}</td>"
        + _cell(took(kind.median) if kind.median is not None else "")
        + "</tr>"
    )


def _poll_ok(state: ImportState) -> str:
    if state.poll_success:
        return "yes"
    return f"no ({state.failure})" if state.failure else "no"


def _history_rows(records: Sequence[ImportRecord], page: int) -> str:
    if not records:
        note = "No finished imports yet." if page <= 1 else "No finished imports on this page."
        return f'<tr><td colspan="9">{note}</td></tr>'
    return "\n".join(_history_row(record) for record in records)


def _history_row(record: ImportRecord) -> str:
    duration = record.duration
    return (
        "<tr>"
        + _cell(record.id)
        + _cell(record.type)
        + _history_status(record)
        + _cell(record.message, "message")
        + _cell(_timestamp(record.first_seen), "when")
        + _cell(_timestamp(record.final_at) if record.final_at is not None else "never", "when")
        + _cell(took(duration) if duration is not None else "")
        + '<td class="labels">'
        + " ".join(f'<span class="label">{_escape(f"{k}={v}")}</span>' for k, v in record.labels)
        + "</td>"
        + _cell(record.source)
        + "</tr>"
    )


def _history_status(record: ImportRecord) -> str:
    """The status the import ended with; a retired one keeps it, with a badge beside it."""
    cell = f'<td class="status {status_class(record.status)}">'
    cell += _escape(record.status or NO_ANSWER)
    if record.retired_at is not None:
        when = _timestamp(record.retired_at)
        cell += f' <span class="badge retired" title="left the metrics {when}">retired</span>'
    return cell + "</td>"


def _pagination(page: int, pages: int) -> str:
    """Links to the neighbouring history pages; nothing when there is only one.

    A page past the last (an old link, the history shrank) links back to the last one.
    """
    if pages <= 1 and page <= 1:
        return ""
    links = []
    if page > 1:
        links.append(f'<a href="/?page={min(page - 1, pages)}" rel="prev">Previous</a>')
    links.append(f"page {page} of {pages}")
    if page < pages:
        links.append(f'<a href="/?page={page + 1}" rel="next">Next</a>')
    return '<nav class="pages" aria-label="History pages">' + " &middot; ".join(links) + "</nav>"


def _cell(text: str, css_class: str = "") -> str:
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<td{attribute}>{_escape(text)}</td>"


def _escape(text: str) -> str:
    # safe_text again although the text was made safe where it came in: a record read
    # back from an older store, or a caller that forgot, must not fail the encoding.
    return html.escape(safe_text(text), quote=True)


def _exporter_state(last: RoundResult | None, tracked: int, now: float) -> str:
    """The last poll round as a definition list (not a table: the tables list imports)."""
    if last is None:
        return f"<p>{tracked} ids tracked. No poll round has ended yet.</p>"
    up = '<span class="up">yes</span>' if last.up else '<span class="down">no</span>'
    reachable = '<span class="up">yes</span>' if last.reachable else '<span class="down">no</span>'
    items = (
        ("Last poll round ended", html.escape(f"{_timestamp(last.ended)}, {ago(last.ended, now)}")),
        ("Up (every id answered)", up),
        ("Elevate reachable", reachable),
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
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
/* Ids, statuses and ages stay on one line; timestamps may break between date and time,
   messages and labels wherever they must, so that the tables fit a laptop's screen. */
td {{ white-space: nowrap; }}
td.when {{ white-space: normal; min-width: 6em; }}
td.message {{ white-space: normal; overflow-wrap: anywhere; min-width: 12em; }}
td.labels {{ white-space: normal; overflow-wrap: anywhere; }}
.label {{ display: inline-block; }}
.scroll {{ max-width: 100%; overflow-x: auto; }}
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
.badge {{ padding: 0 0.5em; border-radius: 0.7em; font-size: 85%; font-weight: normal; }}
.retired {{ background: #555; color: #fff; }}
.label {{ background: #eef; border-radius: 0.3em; padding: 0 0.3em; margin-right: 0.2em; }}
nav.pages {{ margin: 0.6em 0; }}
td.failed {{ background: #f8d0d0; color: #8a1212; font-weight: bold; }}
p.capped {{ font-weight: bold; }}
</style>
</head>
<body>
<h1>Elevate import exporter</h1>
<p>Version {version}. <a href="{path}">Metrics</a> &middot;
<a href="/-/healthy">Health</a> &middot; <a href="/-/ready">Readiness</a></p>
<h2>Tracked imports ({count})</h2>
<p>As of the latest poll round; this page does not query Elevate, and reloads itself
every {refresh} s.</p>
<div class="scroll"><table id="tracked">
<thead><tr><th>Id</th><th>Type</th><th>Status</th><th>Since</th><th>Last polled</th>
<th>Message</th><th>Last poll ok</th><th>Source</th>{label_headers}</tr></thead>
<tbody>
{rows}
</tbody>
</table></div>
<h2>Exporter</h2>
{exporter}
<h2>Last {days} days</h2>
{week}
<h2>Finished and retired imports</h2>
<p>Newest first. A finished import stays in the metrics for the retention
(<code>--imports.retention</code>), then is retired: it leaves the metrics, and its
alert resolves, but it stays listed here for the history period
(<code>--storage.history</code>).</p>
<div class="scroll"><table id="history">
<thead><tr><th>Id</th><th>Type</th><th>Final status</th><th>Message</th><th>First seen</th>
<th>Finished</th><th>Duration</th><th>Labels</th><th>Source</th></tr></thead>
<tbody>
{history}
</tbody>
</table></div>
{pagination}
</body>
</html>
"""
