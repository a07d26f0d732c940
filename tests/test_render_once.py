"""Scrapes answered from the same poll round share one rendered answer per format."""

from __future__ import annotations

import gzip
import re
import threading
import urllib.request

from prometheus_client import CollectorRegistry, Gauge

from elevate_import_exporter.metrics.exposition import MAX_SHARED, Renderer
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import ExporterFor
from tests.support import Scrape, wait_until

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def get(url: str, accept: str = "text/plain") -> tuple[str, bytes]:
    request = urllib.request.Request(url + "/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.headers["Content-Type"], answer.read()


def test_twenty_simultaneous_scrapes_of_one_round_cost_one_render_and_get_the_same_bytes(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    simulator.add_import(ScriptedImport("1001", (Step("IN_PROGRESS"),)))
    # Within the minimum interval every scrape is answered from the start-up round.
    exporter = exporter_for(simulator.url, ["1001"], min_poll_interval="1h")
    before = exporter.renders
    bodies: list[bytes] = []
    lock = threading.Lock()

    def scrape() -> None:
        body = get(exporter.url)[1]
        with lock:
            bodies.append(body)

    threads = [threading.Thread(target=scrape) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(bodies) == 20
    # The imports' part is one answer; the process' own figures are taken per scrape.
    assert len({_without_fresh(body) for body in bodies}) == 1
    # The first scrape of a format may also render once to learn how long it takes.
    assert exporter.renders - before <= 2
    assert Scrape(bodies[0].decode()).current_status("1001") == "IN_PROGRESS"


def test_each_format_is_rendered_for_itself_and_a_new_round_renders_anew(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    steps = (Step("WAITING", queries=1), Step("SUCCESS"))
    simulator.add_import(ScriptedImport("1001", steps))
    exporter = exporter_for(simulator.url, ["1001"])  # every scrape polls

    text_type, text = get(exporter.url)
    om_type, openmetrics = get(exporter.url, OPENMETRICS)
    assert text_type.startswith("text/plain")
    assert om_type.startswith("application/openmetrics-text")
    assert openmetrics.endswith(b"# EOF\n")
    assert not text.endswith(b"# EOF\n")
    # The round of the first scrape saw SUCCESS; the start-up round saw WAITING.
    assert Scrape(text.decode()).current_status("1001") == "SUCCESS"

    simulator.add_import(ScriptedImport("1001", (Step("FAILURE", message="late"),)))
    # A final status is not asked again: the next rounds change nothing about 1001,
    # but each round is a new state, so its answer is built anew (its poll duration).
    renders = exporter.renders
    get(exporter.url)
    get(exporter.url)
    assert exporter.renders - renders == 2


def test_answers_kept_for_sharing_stay_few_however_many_accept_headers_clients_send() -> None:
    # Each OpenMetrics version a client names is a kind of answer of its own (the content
    # type echoes it); an answer may be megabytes, so only a few are kept.
    registry = CollectorRegistry()
    Gauge("kept_test_up", "Always 1.", registry=registry).set(1)
    renderer = Renderer(registry)
    state = (object(),)
    for n in range(40):
        accept = f"application/openmetrics-text; version=1.0.{n}"
        answer = renderer.render(accept, "gzip" if n % 2 else "", state=state)
        assert answer.content_type.startswith(f"application/openmetrics-text; version=1.0.{n};")
        assert b"kept_test_up 1.0" in (gzip.decompress(answer.body) if n % 2 else answer.body)
    assert renderer.kept_answers <= MAX_SHARED
    # The kinds asked for last are still shared.
    renders = renderer.renders
    assert renderer.render(accept, "gzip", state=state).body == answer.body
    assert renderer.renders == renders


def test_the_process_figures_move_between_scrapes_answered_from_one_round(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    simulator.add_import(ScriptedImport("1001", (Step("IN_PROGRESS"),)))
    exporter = exporter_for(simulator.url, ["1001"], min_poll_interval="1h")
    renders = exporter.renders
    first = get(exporter.url)[1]

    def cpu_moved() -> bytes | None:
        # Some CPU is spent between two scrapes; the counter must show it.
        later = get(exporter.url)[1]
        return later if _cpu(later) > _cpu(first) else None

    later = wait_until(cpu_moved, timeout=30, what="process_cpu_seconds_total to move")
    assert _without_fresh(later) == _without_fresh(first)
    assert exporter.renders - renders <= 2  # the imports' part was still shared


def test_a_shared_gzip_answer_with_fresh_families_is_one_valid_stream() -> None:
    shared, fresh = CollectorRegistry(), CollectorRegistry()
    Gauge("shared_test_up", "Always 1.", registry=shared).set(1)
    moving = Gauge("fresh_test_value", "Moves.", registry=fresh)
    renderer = Renderer(shared, fresh)
    state = (object(),)
    for value in (1, 2):
        moving.set(value)
        body = renderer.render(OPENMETRICS, "gzip", state=state).body
        text = gzip.decompress(body).decode()
        assert f"fresh_test_value {value}.0" in text
        assert text.index("shared_test_up") < text.index("fresh_test_value")
        assert text.endswith("# EOF\n")
        assert text.count("# EOF") == 1
    assert renderer.renders == 1


def _without_fresh(body: bytes) -> bytes:
    return b"\n".join(
        line
        for line in body.split(b"\n")
        if not re.match(rb"(# (HELP|TYPE) )?(process|python|elevate_import_proxy)_", line)
    )


def _cpu(body: bytes) -> float:
    found = re.search(rb"^process_cpu_seconds_total (\S+)$", body, re.MULTILINE)
    assert found, body
    return float(found.group(1))
