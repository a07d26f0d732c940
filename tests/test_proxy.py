"""The import proxy forwards feeds to Elevate untouched and tracks the imports they start.

Helpers here (``proxy_to``, ``RunningProxy``, ``send``) serve the other ``test_proxy_*``
modules as well. The proxy runs in-process with a register callback that collects what it
is handed; the end-to-end test through the Application is in test_proxy_end_to_end.py.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from elevate_import_exporter.core.records import Registration
from elevate_import_exporter.proxy.metrics import ProxyCollector
from elevate_import_exporter.proxy.server import ImportProxy
from elevate_import_exporter.simulator import Simulator
from tests.support import Scrape, wait_until
from tests.upstream import Send, Trickle, Upstream, answer

KEY = "sim-key"


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)


@dataclass
class RunningProxy:
    """An ImportProxy serving from a thread, and what it registered."""

    proxy: ImportProxy
    registered: list[Registration] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    fail: bool = False
    thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.proxy.ports[0]

    def register(self, registrations: Sequence[Registration], source: str) -> list[bool]:
        if self.fail:
            raise OSError("disk full")
        self.registered.extend(registrations)
        self.sources.append(source)
        return [True] * len(registrations)

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        return send(self.port, method, path, body, headers)

    def metrics(self) -> Scrape:
        registry = CollectorRegistry()
        registry.register(ProxyCollector(self.proxy.stats))
        return Scrape(generate_latest(registry).decode())

    def wait_answered(self, count: int) -> None:
        """Until ``count`` requests are counted (the client may have its answer sooner)."""

        def answered() -> bool:
            return sum(self.proxy.stats.snapshot().requests.values()) >= count

        wait_until(answered, what=f"{count} requests counted by the proxy")

    def stop(self) -> None:
        self.proxy.shutdown()
        self.proxy.close()


ProxyTo = Callable[..., RunningProxy]


@pytest.fixture
def proxy_to() -> Iterator[ProxyTo]:
    """``proxy_to(upstream_url, **ImportProxy options)``: a started proxy on loopback."""
    yield from started_proxies()


def started_proxies() -> Iterator[ProxyTo]:
    """The ``proxy_to`` fixture's body, for the fixture of the other proxy test modules."""
    started: list[RunningProxy] = []

    def start(upstream: str, **options: Any) -> RunningProxy:
        options.setdefault("timeout", 10.0)
        options.setdefault("label_header", "X-Feed-Name")
        run = RunningProxy(proxy=None)  # type: ignore[arg-type]
        run.proxy = ImportProxy([("127.0.0.1", 0)], upstream, register=run.register, **options)
        run.thread = threading.Thread(target=run.proxy.serve_forever, daemon=True)
        run.thread.start()
        started.append(run)
        return run

    yield start
    for run in started:
        run.stop()


def send(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return Answer(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


FEED = b"<?xml version='1.0'?><operations>" + b"<product/>" * 500 + b"</operations>"


def test_a_feed_pushed_through_the_proxy_reaches_elevate_whole_and_its_import_is_registered(
    simulator: Simulator, proxy_to: ProxyTo
) -> None:
    run = proxy_to(simulator.url)
    got = run.send(
        "POST",
        "/api/v2/import/products?name=nightly-full",
        FEED,
        {"Api-Key": KEY, "X-Feed-Name": "shop-se", "Content-Type": "application/xml"},
    )
    assert got.status == 202
    [upload] = simulator.uploads
    assert (upload.bytes, upload.sha256) == (len(FEED), hashlib.sha256(FEED).hexdigest())
    assert upload.headers["content-type"] == "application/xml"
    assert json.loads(got.body) == {"id": upload.import_id, "status": "WAITING", "type": "PRODUCTS"}
    run.wait_answered(1)
    assert run.registered == [
        Registration(
            upload.import_id or "",
            "PRODUCTS",
            (
                ("feed_name", "shop-se"),
                ("name", "nightly-full"),
                ("path", "/api/v2/import/products"),
            ),
        )
    ]
    assert run.sources == ["proxy"]
    scrape = run.metrics()
    assert scrape.value("elevate_import_proxy_tracked_total", type="PRODUCTS") == 1
    assert scrape.value("elevate_import_proxy_imports_total", type="PRODUCTS", outcome="accepted")
    assert scrape.value("elevate_import_proxy_requests_total", method="POST", code="202") == 1
    assert scrape.value("elevate_import_proxy_bytes_total", direction="upload") == len(FEED)
    assert scrape.value("elevate_import_proxy_bytes_total", direction="download") == len(got.body)
    # The simulator knows the id now, as Elevate would.
    status = run.send("GET", f"/api/v2/import/status/{upload.import_id}", None, {"Api-Key": KEY})
    assert json.loads(status.body)["status"] == "WAITING"


def test_an_admin_api_id_beyond_2_to_the_53_is_registered_exactly_from_a_gzipped_answer(
    proxy_to: ProxyTo,
) -> None:
    with Simulator(api="admin-v4", api_key=KEY) as sim:
        run = proxy_to(sim.url)
        got = run.send(
            "POST", "/api/admin/v4/import/data", FEED, {"Api-Key": KEY, "Accept-Encoding": "gzip"}
        )
        assert got.status == 202
        assert got.header("Content-Encoding") == "gzip"  # passed on as Elevate sent it
        number = json.loads(gzip.decompress(got.body))["id"]
        assert isinstance(number, int)
        assert number > 2**53
        run.wait_answered(1)
        assert [(r.id, r.type) for r in run.registered] == [(str(number), "DATA")]
        assert sim.uploads[0].import_id == str(number)


def test_an_import_finished_within_the_request_is_counted_by_outcome_not_tracked(
    simulator: Simulator, proxy_to: ProxyTo
) -> None:
    run = proxy_to(simulator.url)
    got = run.send("POST", "/api/v2/import/synonyms", b"<a/>", {"Api-Key": KEY})
    assert (got.status, got.body) == (204, b"")
    run.wait_answered(1)
    assert run.registered == []
    scrape = run.metrics()
    assert scrape.value("elevate_import_proxy_imports_total", type="SYNONYMS", outcome="finished")
    assert (
        scrape.value("elevate_import_proxy_imports_total", type="SYNONYMS", outcome="accepted") == 0
    )
    assert set(scrape.series("elevate_import_proxy_tracked_total").values()) == {0}


def test_a_registration_that_fails_is_counted_and_the_client_has_elevates_answer_all_the_same(
    simulator: Simulator, proxy_to: ProxyTo
) -> None:
    run = proxy_to(simulator.url)
    run.fail = True
    got = run.send("POST", "/api/v2/import/products", FEED, {"Api-Key": KEY})
    assert got.status == 202
    assert json.loads(got.body)["id"] == simulator.uploads[0].import_id
    wait_until(lambda: run.proxy.stats.snapshot().registration_failures == 1)
    scrape = run.metrics()
    assert scrape.value("elevate_import_proxy_registration_failures_total") == 1
    assert set(scrape.series("elevate_import_proxy_tracked_total").values()) == {0}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>Accepted</html>",
        b'{"id": 5537431447739019570.0, "status": "WAITING"}',
        b'{"id": true}',
        b'{"id": "../../etc/passwd"}',
        b'{"id": "' + b"7" * 65 + b'"}',
        b'{"id": -12}',
        b'["5537431447739019570"]',
        b'{"id": "5537431447739019570", "pad": "' + b"x" * 70_000 + b'"}',
        b"[" * 60_000,
    ],
    ids=["empty", "html", "float", "bool", "path", "long", "negative", "list", "huge", "deep"],
)
def test_a_202_without_a_usable_id_is_forwarded_unchanged_and_nothing_is_tracked(
    proxy_to: ProxyTo, body: bytes
) -> None:
    with Upstream() as upstream:
        upstream.on("/api/v2/import/products", [Send(answer(body, 202))])
        run = proxy_to(upstream.url)
        got = run.send("POST", "/api/v2/import/products", None, {"Api-Key": KEY})
        assert (got.status, got.body) == (202, body)
        run.wait_answered(1)
        assert run.registered == []


def test_a_202_to_any_path_is_tracked_with_the_type_its_answer_names(proxy_to: ProxyTo) -> None:
    with Upstream() as upstream:
        doc = {"id": "abc-123", "status": "WAITING", "type": "CATEGORIES"}
        upstream.on("/api/v9/new/import", [Send(answer(json.dumps(doc), 202))])
        run = proxy_to(upstream.url)
        assert run.send("PUT", "/api/v9/new/import", b"{}", {"Api-Key": KEY}).status == 202
        run.wait_answered(1)
        assert [(r.id, r.type) for r in run.registered] == [("abc-123", "CATEGORIES")]
        # A type from outside the known ones is a bounded label value in the metrics.
        assert run.metrics().value("elevate_import_proxy_tracked_total", type="OTHER") == 1


def test_the_label_header_is_made_safe_and_cut_and_a_secret_header_is_never_a_label(
    simulator: Simulator, proxy_to: ProxyTo
) -> None:
    run = proxy_to(simulator.url)
    long = "feed-é-" + "x" * 300
    # http.client sends header values as latin-1: the proxy reads them the same way.
    got = run.send("POST", "/api/v2/import/ads", FEED, {"Api-Key": KEY, "X-Feed-Name": long})
    assert got.status == 202
    run.wait_answered(1)
    labels = dict(run.registered[0].labels)
    assert labels["feed_name"] == long[:128]
    secret = proxy_to(simulator.url, label_header="Api-Key")
    assert secret.send("POST", "/api/v2/import/ads", FEED, {"Api-Key": KEY}).status == 202
    secret.wait_answered(1)
    assert dict(secret.registered[0].labels) == {"path": "/api/v2/import/ads"}


def test_requests_on_one_kept_alive_connection_are_each_forwarded(
    simulator: Simulator, proxy_to: ProxyTo
) -> None:
    run = proxy_to(simulator.url)
    conn = http.client.HTTPConnection("127.0.0.1", run.port, timeout=30)
    statuses = []
    for body in (FEED, b"<small/>", FEED):
        conn.request("POST", "/api/v2/import/panels", body=body, headers={"Api-Key": KEY})
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
    conn.close()
    assert statuses == [202, 204, 202]
    run.wait_answered(3)
    assert len(run.registered) == 2
    assert [u.bytes for u in simulator.uploads] == [len(FEED), 8, len(FEED)]


def test_methods_outside_the_usual_ones_count_as_other(
    simulator: Simulator, proxy_to: ProxyTo
) -> None:
    run = proxy_to(simulator.url)
    for method in ("BREW", "X-ANYTHING-1", "GET"):
        run.send(method, "/-/healthy")
    run.wait_answered(3)
    series = run.metrics().series("elevate_import_proxy_requests_total")
    assert {dict(labels)["method"] for labels in series} == {"other", "GET"}
    assert run.metrics().value("elevate_import_proxy_requests_total", method="other", code="405")


def test_the_proxy_stops_when_its_drain_ends_and_answers_the_request_in_flight(
    proxy_to: ProxyTo,
) -> None:
    with Upstream() as upstream:
        doc = json.dumps({"id": "777", "status": "WAITING", "type": "ADS"})
        # The answer trickles in, so that the drain begins while the request is in flight.
        upstream.on("/api/v2/import/ads", [Trickle(answer(doc, 202), interval=0.002)])
        run = proxy_to(upstream.url)
        answers: list[Answer] = []

        def push() -> None:
            # No body: this upstream reads none, and would take one for a pipelined request.
            answers.append(run.send("POST", "/api/v2/import/ads", b"", {"Api-Key": KEY}))

        pusher = threading.Thread(target=push)
        pusher.start()
        wait_until(lambda: upstream.seen_for("/api/v2/import/ads"), what="the request upstream")
        run.proxy.drain(30)
        assert run.thread is not None
        run.thread.join(timeout=30)
        assert not run.thread.is_alive(), "serve_forever did not return after the drain"
        pusher.join(timeout=30)
        assert answers
        assert answers[0].status == 202
        assert answers[0].header("Connection") == "close"
        assert [r.id for r in run.registered] == ["777"]


def test_every_type_and_outcome_is_published_at_zero_before_the_first_upload(
    simulator: Simulator, proxy_to: ProxyTo
) -> None:
    # increase() sees a series only from its second sample: one born at 1 hides an upload.
    scrape = proxy_to(simulator.url).metrics()
    imports = scrape.series("elevate_import_proxy_imports_total")
    assert len(imports) == 7 * 8
    assert set(imports.values()) == {0}
    tracked = scrape.series("elevate_import_proxy_tracked_total")
    assert {dict(labels)["type"] for labels in tracked} == {
        "PRODUCTS",
        "ADS",
        "SYNONYMS",
        "CONFIGURATION",
        "PANELS",
        "DATA",
        "OTHER",
    }
