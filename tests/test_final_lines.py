"""The lines of final imports are rendered once and kept; every answer is still, byte for
byte, what prometheus_client writes for the same families."""

from __future__ import annotations

import gzip
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.registry import Collector

from elevate_import_exporter.app import Application
from elevate_import_exporter.core.model import DOCUMENTED_STATUSES, ImportInfo
from elevate_import_exporter.core.state import ImportState
from elevate_import_exporter.metrics.collector import ImportCollector
from elevate_import_exporter.metrics.exposition import render
from elevate_import_exporter.metrics.lines import FinalLines, import_families
from elevate_import_exporter.metrics.stats import RequestStats
from elevate_import_exporter.polling.poller import RoundResult, Snapshot
from elevate_import_exporter.settings.config import load_settings
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import SIM_KEY

TEXT = "text/plain"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
ENCODERS: dict[str, Callable[[Collector | CollectorRegistry], bytes]] = {
    TEXT: generate_latest,
    OPENMETRICS: openmetrics_latest,
}
IMPORT_FAMILIES = (
    "elevate_import_status",
    "elevate_import_info",
    "elevate_import_first_seen_timestamp_seconds",
    "elevate_import_last_status_change_timestamp_seconds",
    "elevate_import_poll_success",
)
HOSTILE = 'quote " backslash \\ newline \n tab \t unicode åäö ✓ 漢字 replaced \ufffd \\n"'


def state(
    import_id: str,
    status: str | None,
    *,
    type: str = "PRODUCTS",
    message: str = "",
    first_seen: float = 1_764_316_812.123456,
    since: float | None = 1_764_316_999.5,
    success: bool = True,
) -> ImportState:
    info = None if status is None else ImportInfo(import_id, status, type, message)
    return ImportState(import_id, first_seen, info, since, success, last_polled=since)


HOSTILE_IMPORTS = {
    s.id: s
    for s in (
        state("1001", "SUCCESS", message=HOSTILE, type=HOSTILE),
        state("1002", "FAILURE", message='"', type="\\"),
        state("1003", "ABORTED", message="\n\n", type="", first_seen=0.0, since=1e-7),
        state("1004", "IN_PROGRESS", message="still going", since=None),
        state("1005", None, success=False, since=None, first_seen=1e21),
        state("1006", 'ODD"\\\nSTATUS', message="undocumented status", success=False),
        state("import-1007_x", "SUCCESS", first_seen=123456789.0, since=123456789.000001),
    )
}


class Fixed:
    """A poller's snapshot that stays as the test sets it."""

    def __init__(self, imports: Mapping[str, ImportState]) -> None:
        self.imports = imports

    def snapshot(self) -> Snapshot:
        return Snapshot(self.imports, RoundResult(True, 0.25, len(self.imports), 1.0))


class Families(Collector):
    def __init__(self, make: Callable[[], Iterable[Metric]]) -> None:
        self._make = make

    def collect(self) -> Iterator[Metric]:
        yield from self._make()


def expected_families(imports: Mapping[str, ImportState]) -> list[Metric]:
    """The per-import families as the collector built them with prometheus_client before
    their lines were kept: the reference the kept lines must match."""
    ours = {family.name: family for family in import_families({}, FinalLines())}
    status, info, first_seen, last_change, poll_success = (
        GaugeMetricFamily(name, ours[name].documentation, labels=labels)
        for name, labels in zip(
            IMPORT_FAMILIES,
            (["id", "type", "status"], ["id", "type", "message"], ["id"], ["id"], ["id"]),
            strict=True,
        )
    )
    for import_id, one in imports.items():
        first_seen.add_metric([import_id], one.first_seen)
        poll_success.add_metric([import_id], 1.0 if one.poll_success else 0.0)
        if one.info is None:
            continue
        kind, current = one.info.type, one.info.status
        for documented in DOCUMENTED_STATUSES:
            status.add_metric([import_id, kind, documented], float(documented == current))
        if current not in DOCUMENTED_STATUSES:
            status.add_metric([import_id, kind, current], 1.0)
        info.add_metric([import_id, kind, one.info.message], 1.0)
        if one.status_since is not None:
            last_change.add_metric([import_id], one.status_since)
    return [status, info, first_seen, last_change, poll_success]


def registry_of(make: Callable[[], Iterable[Metric]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(Families(make))
    return registry


def body(registry: CollectorRegistry, accept: str, gzipped: bool, names: list[str]) -> bytes:
    answer = render(registry, accept, "gzip" if gzipped else "", names)
    assert answer.content_encoding == ("gzip" if gzipped else None)
    return gzip.decompress(answer.body) if gzipped else answer.body


# -- byte for byte ---------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("accept", [TEXT, OPENMETRICS], ids=["text", "openmetrics"])
def test_hostile_values_render_byte_for_byte_as_prometheus_client_writes_the_same_families(
    accept: str, gzipped: bool
) -> None:
    final = FinalLines()
    ours = registry_of(lambda: import_families(HOSTILE_IMPORTS, final))
    reference = ENCODERS[accept](registry_of(lambda: expected_families(HOSTILE_IMPORTS)))
    for escaped in (b'\\"', b"\\\\", b"\\n", "\ufffd".encode()):
        assert escaped in reference

    first = body(ours, accept, gzipped, [])
    assert first == reference
    # The second answer comes from the kept lines of the final imports.
    assert final.kept_ids == {"1001", "1002", "1003", "import-1007_x"}
    assert body(ours, accept, gzipped, []) == reference


@pytest.mark.parametrize(
    "accept",
    [
        "text/plain; version=1.0.0; escaping=allow-utf-8",
        "text/plain; version=1.0.0; escaping=dots",
        "application/openmetrics-text; version=1.0.0; escaping=dots",
        "application/openmetrics-text; version=1.0.0; escaping=values",
        "application/openmetrics-text; version=2.0.0; escaping=underscores",
        "application/openmetrics-text",
    ],
)
def test_every_escaping_a_client_can_ask_for_answers_as_prometheus_client_does(
    accept: str,
) -> None:
    # Some schemes rewrite metric names: then the families are written from their samples.
    final = FinalLines()
    ours = registry_of(lambda: import_families(HOSTILE_IMPORTS, final))
    reference = registry_of(lambda: expected_families(HOSTILE_IMPORTS))
    encoder, content_type = choose_encoder(accept)
    answer = render(ours, accept, "")
    assert answer.content_type == content_type
    assert answer.body == encoder(reference)
    assert render(ours, accept, "").body == encoder(reference)


@pytest.mark.parametrize(
    "names",
    [
        ["elevate_import_status"],
        ["elevate_import_poll_success", "elevate_import_info"],
        ["elevate_import_last_status_change_timestamp_seconds", "no_such_family"],
        ["elevate_import_status_total", "elevate_import_info_info", ""],
        list(IMPORT_FAMILIES),
    ],
)
@pytest.mark.parametrize("accept", [TEXT, OPENMETRICS], ids=["text", "openmetrics"])
def test_a_name_filter_answers_what_prometheus_client_gives_for_the_restricted_registry(
    accept: str, names: list[str]
) -> None:
    ours = registry_of(lambda: import_families(HOSTILE_IMPORTS, FinalLines()))
    reference = registry_of(lambda: expected_families(HOSTILE_IMPORTS))
    wanted = [name for name in names if name]
    expected = ENCODERS[accept](reference.restricted_registry(wanted))
    assert body(ours, accept, False, names) == expected


@pytest.mark.parametrize("accept", [TEXT, OPENMETRICS], ids=["text", "openmetrics"])
def test_a_family_without_samples_is_left_out_of_a_filtered_answer_as_prometheus_client_does(
    accept: str,
) -> None:
    # No import has a status change time yet: that family has no samples at all.
    imports = {
        "2001": state("2001", None, since=None),
        "2002": state("2002", "WAITING", since=None),
    }
    names = ["elevate_import_last_status_change_timestamp_seconds", "elevate_import_info"]
    ours = registry_of(lambda: import_families(imports, FinalLines()))
    expected = ENCODERS[accept](
        registry_of(lambda: expected_families(imports)).restricted_registry(names)
    )
    answer = body(ours, accept, False, names)
    assert answer == expected
    assert b"last_status_change" not in answer


@pytest.mark.parametrize("accept", [TEXT, OPENMETRICS], ids=["text", "openmetrics"])
def test_the_whole_collector_renders_as_prometheus_client_renders_it(accept: str) -> None:
    registry = CollectorRegistry()
    registry.register(ImportCollector(Fixed(HOSTILE_IMPORTS), RequestStats()))
    # prometheus_client reads the families' samples: the same families, the same bytes.
    assert render(registry, accept, "").body == ENCODERS[accept](registry)


def test_other_readers_get_the_families_samples_as_prometheus_client_builds_them() -> None:
    ours = import_families(HOSTILE_IMPORTS, FinalLines())
    assert [(f.name, f.type, f.samples) for f in ours] == [
        (f.name, f.type, f.samples) for f in expected_families(HOSTILE_IMPORTS)
    ]


def test_an_empty_snapshot_renders_headers_only_as_prometheus_client_does() -> None:
    ours = registry_of(lambda: import_families({}, FinalLines()))
    reference = registry_of(lambda: expected_families({}))
    for accept, encoder in ENCODERS.items():
        assert render(ours, accept, "").body == encoder(reference)


# -- what is kept ----------------------------------------------------------------------


def test_a_final_import_is_formatted_once_and_a_live_one_at_every_scrape() -> None:
    source = Fixed({"3001": state("3001", "SUCCESS"), "3002": state("3002", "IN_PROGRESS")})
    collector = ImportCollector(source, RequestStats())
    registry = CollectorRegistry()
    registry.register(collector)
    final = collector.final_lines

    first = render(registry, TEXT, "").body
    assert final.formatted == 2
    for n in range(1, 4):
        # A new round: the live import's state is new, the final one's stands.
        source.imports = {**source.imports, "3002": state("3002", "IN_PROGRESS", since=n)}
        answer = render(registry, OPENMETRICS if n % 2 else TEXT, "gzip" if n == 3 else "").body
        assert final.formatted == 2 + n
    assert final.kept_ids == {"3001"}
    assert b'elevate_import_status{id="3001",status="SUCCESS",type="PRODUCTS"} 1.0' in first
    assert b"3001" in gzip.decompress(answer)


def test_an_equal_state_put_in_place_of_a_final_one_is_not_formatted_again() -> None:
    source = Fixed({"3101": state("3101", "FAILURE", message="no")})
    final = FinalLines()
    registry = registry_of(lambda: import_families(source.imports, final))
    before = render(registry, TEXT, "").body
    source.imports = {"3101": state("3101", "FAILURE", message="no")}  # a copy, say restored
    assert render(registry, TEXT, "").body == before
    assert final.formatted == 1


def test_kept_lines_give_way_when_a_final_import_comes_with_another_state() -> None:
    # Not what the poller does today (it never asks a final import again), but should an
    # id come back with another life, its old lines must not be served.
    source = Fixed({"3201": state("3201", "SUCCESS", message="first life")})
    final = FinalLines()
    registry = registry_of(lambda: import_families(source.imports, final))
    render(registry, TEXT, "")
    assert final.kept_ids == {"3201"}
    source.imports = {"3201": state("3201", "ABORTED", message="second", first_seen=5.0)}
    answer = render(registry, TEXT, "").body
    assert answer == generate_latest(registry_of(lambda: expected_families(source.imports)))
    assert b"first life" not in answer


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[..., Application]]:
    apps: list[Application] = []

    def start(
        base_url: str,
        ids: list[str],
        clock: Clock,
        *,
        min_poll_interval: str = "0s",
        **options: Any,
    ) -> Application:
        settings = load_settings(
            base_url=base_url,
            api_key=SIM_KEY,
            import_ids=ids,
            listen_address="127.0.0.1:0",
            storage_path=str(tmp_path / "store.db"),
            min_poll_interval=min_poll_interval,
            **options,
        )
        app = Application(settings, clock=clock)
        apps.append(app)
        app.start()
        assert app.wait_ready(30)
        return app

    yield start
    for app in apps:
        app.stop()


def test_an_import_turning_final_is_kept_and_a_retired_one_leaves_answer_and_cache(
    started: Callable[..., Application],
) -> None:
    clock = Clock()
    imports = [
        ScriptedImport("4001", (Step("SUCCESS", message="done"),)),
        ScriptedImport(
            "4002",
            (Step("WAITING", queries=1), Step("IN_PROGRESS", queries=1), Step("FAILURE")),
        ),
        ScriptedImport("4003", (Step("IN_PROGRESS", message='a "live" one'),)),
    ]
    with Simulator(imports, api_key=SIM_KEY) as sim:
        app = started(sim.url, ["4001", "4002", "4003"], clock, retention="1h")
        # A collector of the application's own poller: its kept lines can be looked at.
        collector = ImportCollector(app.poller, app.stats)
        registry = CollectorRegistry()
        registry.register(collector)
        final = collector.final_lines

        def answer() -> str:
            text = render(registry, TEXT, "").body.decode()
            assert text.encode() == generate_latest(registry)
            return text

        def current(text: str, import_id: str) -> str:
            ones = [
                line
                for line in text.splitlines()
                if line.startswith(f'elevate_import_status{{id="{import_id}"')
                and line.endswith(" 1.0")
            ]
            assert len(ones) == 1, ones
            return ones[0].split('status="')[1].split('"')[0]

        text = answer()  # after the first round: 4002 is WAITING
        assert (current(text, "4001"), current(text, "4002")) == ("SUCCESS", "WAITING")
        assert final.kept_ids == {"4001"}
        assert final.formatted == 3

        app.poll(10)
        text = answer()
        assert current(text, "4002") == "IN_PROGRESS"  # a live one changes
        assert final.formatted == 5

        clock.now += 60
        app.poll(10)
        text = answer()
        assert current(text, "4002") == "FAILURE"  # turned final: shown, then kept
        assert final.kept_ids == {"4001", "4002"}
        assert final.formatted == 7
        assert (
            'elevate_import_last_status_change_timestamp_seconds{id="4002"} 1.80000006e+09' in text
        )
        app.poll(10)
        answer()
        assert final.formatted == 8  # only 4003 again

        # 4001 has been final since the first round, an hour ago; 4002 for a minute less.
        clock.now += 3600 - 30
        app.poll(10)
        text = answer()
        assert 'id="4001"' not in text
        assert current(text, "4002") == "FAILURE"
        assert final.kept_ids == {"4002"}
        clock.now += 60
        app.poll(10)
        text = answer()
        assert 'id="4002"' not in text
        assert current(text, "4003") == "IN_PROGRESS"
        assert final.kept_ids == set()


# -- over HTTP ---------------------------------------------------------------------------


def fetch(url: str, accept: str, encoding: str = "") -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept, "Accept-Encoding": encoding})
    with urllib.request.urlopen(request, timeout=30) as reply:
        data: bytes = reply.read()
        return gzip.decompress(data) if reply.headers["Content-Encoding"] == "gzip" else data


@pytest.mark.parametrize("encoding", ["", "gzip"])
@pytest.mark.parametrize("accept", [TEXT, OPENMETRICS], ids=["text", "openmetrics"])
def test_a_scrape_with_name_filters_matches_prometheus_client_for_hostile_messages(
    started: Callable[..., Application], accept: str, encoding: str
) -> None:
    imports = [
        ScriptedImport("5001", (Step("FAILURE", message=HOSTILE),)),
        ScriptedImport("5002", (Step("IN_PROGRESS", message='"\\'),)),
    ]
    with Simulator(imports, api_key=SIM_KEY) as sim:
        app = started(sim.url, ["5001", "5002", "5003"], Clock(), min_poll_interval="1h")
        names = [*IMPORT_FAMILIES, "elevate_import_tracked_imports"]
        query = urllib.parse.urlencode([("name[]", name) for name in names])
        answer = fetch(f"{app.url}/metrics?{query}", accept, encoding)
        expected = ENCODERS[accept](app.registry.restricted_registry(names))
        assert answer == expected
        assert 'message="quote \\" backslash \\\\ newline \\n tab \t unicode åäö'.encode() in answer
