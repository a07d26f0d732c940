"""Issue 15's table: each figure next to its floor, measured in the same run, the ratio,
the target and the verdict; and the sections of the report for the parts it added.

A target issue 15 does not set is marked "(proposed)": the bench's own bound, for the
reader to judge. A row without a target has no verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Table = Callable[[list[str], list[list[str]]], str]

CPU_RATIO_LIMIT = 0.2  # 10,000 finished + 100 live ids: scrape CPU vs generate_latest
HEALTH_P99_LIMIT_MS = 100.0
LARGE_RSS_LIMIT_MB = 200.0
RESTART_LIMIT_S = 10.0  # proposed
POSTS_PER_S_LIMIT = 100.0  # proposed
BATCH_LIMIT_S = 1.0  # proposed
TLS_RATIO_LIMIT = 2.0  # proposed, time and CPU


def _row(
    section: str, figure: str, floor: str, ratio: float | None, target: str, ok: bool | None
) -> dict[str, Any]:
    shown = "-" if ratio is None else f"{ratio:.3g} x"
    return {
        "section": section,
        "figure": figure,
        "floor": floor,
        "ratio": shown,
        "target": target,
        "ok": ok,
    }


def figure_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "finished" in results:
        rows += _finished(results["finished"])
    if "shared" in results:
        rows += _shared(results["shared"])
    if "large" in results:
        rows += _large(results["large"])
    if "registration" in results:
        rows += _registration(results["registration"])
    if "tls" in results:
        rows += _tls(results["tls"])
    if "proxy" in results:
        rows += _proxy(results["proxy"])
    return rows


def _finished(fin: dict[str, Any]) -> list[dict[str, Any]]:
    alone = fin["render_alone"]
    return [
        _row(
            f"{fin['imports']:,} finished + {fin['live']} live ids: scrape CPU",
            f"{1000 * fin['scrape_cpu_s']:.0f} ms per scrape",
            f"{1000 * fin['floor_cpu_s']:.0f} ms (generate_latest)",
            fin["cpu_ratio"],
            f"<= {CPU_RATIO_LIMIT} x",
            fin["cpu_ratio"] <= CPU_RATIO_LIMIT,
        ),
        _row(
            "the same, the render alone (in-process, no HTTP, no poll)",
            f"{1000 * alone['text_cpu_s']:.1f} ms ({1000 * alone['gzip_cpu_s']:.0f} ms gzip)",
            f"{1000 * alone['generate_latest_cpu_s']:.0f} ms (generate_latest, same families)",
            alone["ratio"],
            "none (reported)",
            None,
        ),
    ]


def _shared(sh: dict[str, Any]) -> list[dict[str, Any]]:
    idle, load = sh["health_idle"]["p99_ms"], sh["health_load"]["p99_ms"]
    name = f"{sh['scrapes']} simultaneous scrapes of {sh['imports']:,} ids"
    return [
        _row(
            f"{name}: renders",
            f"{sh['renders']} renders in {sh['rounds']:g} rounds",
            "1 per round",
            sh["renders_per_round"],
            "1 per round",
            sh["renders_per_round"] <= 1.0 and sh["answered_200"] > 0,
        ),
        _row(
            f"{name}: /-/healthy p99 meanwhile",
            f"{load:.1f} ms ({sh['health_failed']} of {sh['health_probes']} failed)",
            f"{idle:.1f} ms (idle)",
            load / idle if idle else None,
            f"< {HEALTH_P99_LIMIT_MS:g} ms",
            load < HEALTH_P99_LIMIT_MS and sh["health_failed"] == 0,
        ),
    ]


def _large(lg: dict[str, Any]) -> list[dict[str, Any]]:
    big, floor = lg["large"], lg["floor"]
    rows, live = f"{lg['rows']:,}", f"{lg['live']:,}"
    fits = big["gzip_scrape_s"] / lg["scrape_timeout_s"]
    return [
        _row(
            f"{rows} tracked ids: peak RSS (after a gzip scrape)",
            f"{big['peak_rss_gzip_mb']:.0f} MB",
            f"{floor['peak_rss_gzip_mb']:.0f} MB ({live} ids)",
            big["peak_rss_gzip_mb"] / floor["peak_rss_gzip_mb"],
            f"< {LARGE_RSS_LIMIT_MB:g} MB",
            big["peak_rss_gzip_mb"] < LARGE_RSS_LIMIT_MB,
        ),
        _row(
            f"{rows} tracked ids: scrape (gzip) within its timeout",
            f"{big['gzip_scrape_s']:.2f} s{'' if big['up'] else ' NOT UP'}",
            f"{lg['scrape_timeout_s']:g} s (the timeout)",
            fits,
            "<= 1 x, up",
            fits <= 1.0 and bool(big["up"]),
        ),
        _row(
            f"restart with {rows} rows in the store: start to /-/ready",
            f"{big['ready_s']:.2f} s",
            f"{floor['ready_s']:.2f} s ({live} rows)",
            big["ready_s"] / floor["ready_s"],
            f"< {RESTART_LIMIT_S:g} s (proposed)",
            big["ready_s"] < RESTART_LIMIT_S,
        ),
    ]


def _registration(reg: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        _row(
            "registration: single POSTs, one keep-alive connection",
            f"{reg['posts_per_s']:.0f} per s",
            f"{reg['floor_commits_per_s']:.0f} commits per s (store alone)",
            reg["singles_ratio"],
            f">= {POSTS_PER_S_LIMIT:g} per s (proposed)",
            reg["posts_per_s"] >= POSTS_PER_S_LIMIT,
        ),
        _row(
            f"registration: a batch of {reg['batch']:,} ids, committed",
            f"{1000 * reg['batch_s']:.0f} ms",
            f"{1000 * reg['floor_batch_s']:.0f} ms (store alone)",
            reg["batch_ratio"],
            f"< {BATCH_LIMIT_S:g} s (proposed)",
            reg["batch_max_s"] < BATCH_LIMIT_S,
        ),
    ]


def _tls(cmp: dict[str, Any]) -> list[dict[str, Any]]:
    cpu = cmp["cpu_ratio"]
    return [
        _row(
            f"TLS vs plain HTTP, {cmp['imports']:,} ids: scrape time",
            f"{1000 * cmp['tls_median_s']:.1f} ms",
            f"{1000 * cmp['plain_median_s']:.1f} ms (plain)",
            cmp["time_ratio"],
            f"<= {TLS_RATIO_LIMIT:g} x (proposed)",
            cmp["time_ratio"] <= TLS_RATIO_LIMIT,
        ),
        _row(
            f"TLS vs plain HTTP, {cmp['imports']:,} ids: exporter CPU per scrape",
            f"{cmp['tls_cpu_ms_per_scrape']:.1f} ms",
            f"{cmp['plain_cpu_ms_per_scrape']:.1f} ms (plain)",
            cpu,
            f"<= {TLS_RATIO_LIMIT:g} x (proposed)",
            None if cpu is None else cpu <= TLS_RATIO_LIMIT,
        ),
    ]


def _proxy(px: dict[str, Any]) -> list[dict[str, Any]]:
    from proxy_bench import RSS_GROWTH_LIMIT_MB, THROUGHPUT_RATIO_LIMIT

    return [
        _row(
            f"proxy: upload of {px['upload_mb']} MiB, throughput",
            f"{px['proxy_mib_per_s']:.0f} MiB/s",
            f"{px['direct_mib_per_s']:.0f} MiB/s (direct)",
            px["throughput_ratio"],
            f">= {THROUGHPUT_RATIO_LIMIT} x",
            px["throughput_ratio"] >= THROUGHPUT_RATIO_LIMIT,
        ),
        _row(
            "proxy: small request p50 / p99",
            f"{px['proxy_p50_ms']:.2f} / {px['proxy_p99_ms']:.2f} ms",
            f"{px['direct_p50_ms']:.2f} / {px['direct_p99_ms']:.2f} ms (direct)",
            px["proxy_p99_ms"] / px["direct_p99_ms"],
            "none (reported)",
            None,
        ),
        _row(
            f"proxy: RSS while {px['upload_mb']} MiB stream through",
            f"{px['peak_rss_mb']:.0f} MB peak",
            f"{px['rss_before_mb']:.0f} MB (before)",
            px["peak_rss_mb"] / px["rss_before_mb"],
            f"growth < {RSS_GROWTH_LIMIT_MB:g} MB",
            px["rss_growth_mb"] < RSS_GROWTH_LIMIT_MB,
        ),
    ]


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else "PASS" if ok else "FAIL"


def figures_section(rows: list[dict[str, Any]], table: Table) -> list[str]:
    return [
        "Issue 15: each figure against its floor, measured in the same run:",
        "",
        table(
            ["verdict", "section", "figure", "floor", "ratio", "target"],
            [
                [verdict(r["ok"]), r["section"], r["figure"], r["floor"], r["ratio"], r["target"]]
                for r in rows
            ],
        ),
    ]


def details_section(results: dict[str, Any], table: Table) -> list[str]:
    """The parts' own numbers, beyond the table."""
    parts: list[str] = []
    if "shared" in results:
        sh = results["shared"]
        parts += [
            "",
            f"Simultaneous scrapes (plain HTTP): {sh['bursts']} bursts of {sh['scrapes']} "
            f"scrapes of {sh['imports']:,} active ids at {sh['latency_ms']:g} ms "
            f"(C={sh['concurrency']}), a poll round each; {sh['answered_200']} answered 200, "
            f"{sh['answered_503']} 503 (beyond the scrape slots){_others(sh['other'])}; "
            f"{sh['requests']} status requests; /-/healthy every 50 ms on a new connection, "
            f"p50 {sh['health_load']['p50_ms']:.1f} ms, max {sh['health_load']['max_ms']:.1f} "
            f"ms (idle p50 {sh['health_idle']['p50_ms']:.1f} ms).",
        ]
    if "large" in results:
        parts += ["", *_large_details(results["large"], table)]
    if "registration" in results:
        reg = results["registration"]
        parts += [
            "",
            f"Registration: {reg['singles']} single POSTs, {reg['batches']} batches of "
            f"{reg['batch']:,} (slowest {1000 * reg['batch_max_s']:.0f} ms); store floor: "
            "Store.register in the bench process on the same disk, taking turns.",
        ]
    return parts


def _large_details(lg: dict[str, Any], table: Table) -> list[str]:
    header = ["", f"{lg['rows']:,} rows", f"{lg['live']:,} rows (floor)"]
    keys = [
        ("start to /-/ready, s", "ready_s", "{:.2f}"),
        ("RSS when ready, MB", "rss_ready_mb", "{:.0f}"),
        ("scrape with gzip, s", "gzip_scrape_s", "{:.2f}"),
        ("peak RSS after it, MB", "peak_rss_gzip_mb", "{:.0f}"),
        ("answer bytes gzip / text", None, ""),
        ("scrape without gzip, s", "plain_scrape_s", "{:.2f}"),
        ("peak RSS after it, MB", "peak_rss_plain_mb", "{:.0f}"),
    ]
    body: list[list[str]] = []
    for label, key, form in keys:
        cells = [label]
        for side in ("large", "floor"):
            one = lg[side]
            if key is None:
                cells.append(f"{one['gzip_bytes']:,} / {one['text_bytes']:,}")
            else:
                cells.append(form.format(one[key]))
        body.append(cells)
    return [
        f"{lg['rows']:,} tracked ids (--imports.max-tracked {lg['max_tracked']:,}), "
        f"{lg['live']:,} of them live (simulator at latency 0), the rest final; the store "
        f"filled through Store in {lg['fill_s']:.1f} s; scrapes with a "
        f"{lg['scrape_timeout_s']:g} s timeout:",
        "",
        table(header, body),
    ]


def _others(other: list[str]) -> str:
    return f", other: {', '.join(other)}" if other else ""
