"""The web part's rows of the targets table and its sections of the report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from web_load import FIXED_THREADS

from elevate_import_exporter.site.web import MAX_THREADS

Table = Callable[[list[str], list[list[str]]], str]


def web_targets(web: dict[str, Any]) -> list[dict[str, Any]]:
    """The functional facts of issue 10, as rows of the targets table."""
    stalled = web["half_open"] + web["stalled_handshakes"]
    cut = sum(c["cut"] for c in web["cuts"].values())
    answered = web["scrapes_200"] + web["scrapes_503"]
    return [
        {
            "target": "web load: exporter threads (max) within the bound",
            "measured": str(web["max_threads"]),
            "limit": f"<= {web['thread_bound']}",
            "ok": web["max_threads"] <= web["thread_bound"],
        },
        {
            "target": f"web load: {web['scrapes']} simultaneous scrapes answered 200 "
            "(or 503 beyond the scrape bound)",
            "measured": f"{web['scrapes_200']} x 200, {web['scrapes_503']} x 503",
            "limit": f"{web['scrapes']} answered",
            "ok": answered == web["scrapes"] and web["scrapes_200"] > 0,
        },
        {
            "target": "web load: /-/healthy answered 200 every time",
            "measured": f"{web['health_probes'] - web['health_failed']} / {web['health_probes']}",
            "limit": "all",
            "ok": web["health_failed"] == 0,
        },
        {
            "target": "web load: stalled connections closed by the server",
            "measured": f"{cut} / {stalled}",
            "limit": f"all, after {web['header_timeout_s']:g} s",
            "ok": cut == stalled,
        },
    ]


def web_section(web: dict[str, Any], table: Table) -> list[str]:
    idle, load = web["health_idle"], web["health_load"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    def ratio(key: str) -> str:
        if load[key] is None or not idle[key]:
            return "-"
        return f"{load[key] / idle[key]:.2f}"

    cuts = web["cuts"]
    return [
        f"The HTTP side under load: TLS with basic auth, {web['imports']} active ids at "
        f"{web['latency_ms']:g} ms (C={web['concurrency']}); {web['scrapes']} simultaneous "
        f"scrapes, {web['half_open']} connections that send `GET /metr` after their TLS "
        f"handshake and stop, {web['stalled_handshakes']} TLS handshakes never finished "
        "(half TCP only, half a partial ClientHello); /-/healthy every 50 ms over TLS on a "
        f"new connection, {web['health_auth']}. Floor: the same probes before the load.",
        "",
        table(
            ["/-/healthy", "p50 ms", "p99 ms", "max ms", "probes"],
            [
                ["idle (floor)", ms(idle["p50_ms"]), ms(idle["p99_ms"]), ms(idle["max_ms"]), "-"],
                [
                    "under load",
                    ms(load["p50_ms"]),
                    ms(load["p99_ms"]),
                    ms(load["max_ms"]),
                    f"{web['health_probes']} ({web['health_failed']} failed)",
                ],
                ["ratio", ratio("p50_ms"), ratio("p99_ms"), ratio("max_ms"), ""],
            ],
        ),
        "",
        table(
            ["measured", "value", "documented bound / reference"],
            [
                [
                    "threads, max under load (idle)",
                    f"{web['max_threads']} ({web['idle_threads']})",
                    f"{web['thread_bound']} = {MAX_THREADS} handler + {web['concurrency']} poll "
                    f"workers + {FIXED_THREADS} fixed",
                ],
                [
                    "open files, max under load (idle)",
                    f"{web['max_fds']} ({web['idle_fds']})",
                    f"idle + connections <= {web['connection_bound']}",
                ],
                [
                    "scrapes answered 200 / 503",
                    f"{web['scrapes_200']} / {web['scrapes_503']}" + _others(web),
                    f"{MAX_THREADS // 2} scrapes at once, more get 503 at once",
                ],
                [
                    "slowest 200 / slowest 503, s",
                    f"{_s(web['scrape_200_max_s'])} / {_s(web['scrape_503_max_s'])}",
                    "a shared poll round / immediate",
                ],
                [
                    "half-open connections closed by the server; latest after, s",
                    f"{cuts['half-open']['cut']} / {web['half_open']}; "
                    f"{_s(cuts['half-open']['max_s'])}",
                    f"header timeout {web['header_timeout_s']:g} s",
                ],
                [
                    "unfinished handshakes closed by the server; latest after, s",
                    f"{cuts['handshake']['cut']} / {web['stalled_handshakes']}; "
                    f"{_s(cuts['handshake']['max_s'])}",
                    f"header timeout {web['header_timeout_s']:g} s",
                ],
            ],
        ),
    ]


def tls_section(cmp: dict[str, Any], table: Table) -> list[str]:
    return [
        f"TLS against plain HTTP, the same answer ({cmp['imports']} finished ids, nothing to "
        f"poll; {cmp['scrapes_each']} scrapes each, a new connection each, so TLS pays a "
        "full handshake every time; floor: the plain HTTP exporter, taking turns):",
        "",
        table(
            ["", "ratio", "TLS", "plain HTTP (floor)"],
            [
                [
                    "scrape median, s",
                    f"{cmp['time_ratio']:.2f}",
                    f"{cmp['tls_median_s']:.4f}",
                    f"{cmp['plain_median_s']:.4f}",
                ],
                [
                    "exporter CPU per scrape, ms",
                    "-" if cmp["cpu_ratio"] is None else f"{cmp['cpu_ratio']:.2f}",
                    f"{cmp['tls_cpu_ms_per_scrape']:.1f}",
                    f"{cmp['plain_cpu_ms_per_scrape']:.1f}",
                ],
                ["body bytes", "", str(cmp["bytes"]["tls"]), str(cmp["bytes"]["plain"])],
            ],
        ),
    ]


def _others(web: dict[str, Any]) -> str:
    return f" / other: {', '.join(web['scrape_other'])}" if web["scrape_other"] else ""


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
