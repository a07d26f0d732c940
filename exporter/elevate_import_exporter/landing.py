"""The landing page: what the exporter knows about each import, as HTML.

Everything that came from the API is escaped here; the page never queries Elevate.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime

from elevate_import_exporter import __version__
from elevate_import_exporter.poller import ImportState, Snapshot


def landing_page(snapshot: Snapshot, telemetry_path: str) -> bytes:
    rows = "\n".join(_row(state) for state in snapshot.imports.values())
    page = _PAGE.format(
        version=html.escape(__version__),
        path=html.escape(telemetry_path),
        count=len(snapshot.imports),
        rows=rows or '<tr><td colspan="6">No import ids are tracked.</td></tr>',
    )
    return page.encode("utf-8")


def _row(state: ImportState) -> str:
    info = state.info
    since = (
        datetime.fromtimestamp(state.status_since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if state.status_since is not None
        else ""
    )
    cells = (
        state.id,
        info.type if info else "",
        info.status if info else "unknown yet",
        since,
        info.message if info else "",
        "yes" if state.poll_success else "no",
    )
    return "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Elevate import exporter</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
</style>
</head>
<body>
<h1>Elevate import exporter</h1>
<p>Version {version}. <a href="{path}">Metrics</a> &middot;
<a href="/-/healthy">Health</a> &middot; <a href="/-/ready">Readiness</a></p>
<h2>Tracked imports ({count})</h2>
<p>As of the latest scrape; this page does not query Elevate.</p>
<table>
<thead><tr><th>Id</th><th>Type</th><th>Status</th><th>Since</th><th>Message</th>
<th>Last poll ok</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""
