"""Guards for the private internals of other libraries the exporter relies on.

pyproject.toml caps prometheus-client, urllib3 and h11 below their next minor version. When a
cap is raised, these tests say at once, by name, which internal changed shape, instead of
a scrape or a status request going subtly wrong.
"""

from __future__ import annotations

import http.client
import math
from collections.abc import Callable, Iterable, Iterator

import h11
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from elevate_import_exporter.elevate import transport
from elevate_import_exporter.elevate.deadline import WholeHead
from elevate_import_exporter.metrics.lines import ImportFamily


def test_prometheus_client_still_asks_a_family_for_its_restricted_self() -> None:
    # lines.ImportFamily overrides Metric._restricted_metric so that ?name[]= filtering
    # does not build 100,000 samples; restricted_registry must still call it.
    asked: list[str] = []

    class Family(Metric):
        def _restricted_metric(self, names: Iterable[str]) -> Metric | None:
            asked.append(self.name)
            return self if self.name in names else None

    class One(Collector):
        def describe(self) -> Iterator[Metric]:
            yield Metric("guard_family", "A family.", "gauge")

        def collect(self) -> Iterator[Metric]:
            family = Family("guard_family", "A family.", "gauge")
            family.add_sample("guard_family", {}, 1.0)
            yield family

    registry = CollectorRegistry()
    registry.register(One())
    found = list(registry.restricted_registry(["guard_family"]).collect())
    assert asked == ["guard_family"], (
        "prometheus_client no longer calls Metric._restricted_metric from "
        "restricted_registry: lines.ImportFamily must follow its new way of filtering"
    )
    assert [metric.name for metric in found] == ["guard_family"]
    assert hasattr(ImportFamily, "_restricted_metric")


def test_prometheus_client_formats_values_as_the_kept_lines_expect() -> None:
    # lines.py writes sample values with prometheus_client.utils.floatToGoString so that
    # its kept lines are byte-identical to the encoder's.
    from prometheus_client import utils

    assert hasattr(utils, "floatToGoString"), "prometheus_client.utils.floatToGoString is gone"
    text_of: Callable[[float], str] = utils.floatToGoString
    expected = {1.0: "1.0", 0.0: "0.0", 1.5e21: "1.5e+21", math.inf: "+Inf", -math.inf: "-Inf"}
    for value, text in expected.items():
        assert text_of(value) == text, (value, text_of(value))
    assert text_of(math.nan) == "NaN"


def test_urllib3_still_builds_the_guarded_connections_of_the_transport() -> None:
    # The transport swaps urllib3's pool classes (pool_classes_by_scheme) so that every
    # request's socket is known to the deadline guard.
    adapter = transport.GuardedAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
    try:
        manager = adapter.poolmanager
        assert manager.pool_classes_by_scheme is transport._POOLS, (
            "urllib3's PoolManager no longer takes pool_classes_by_scheme"
        )
        pool = manager.connection_from_url("http://127.0.0.1:9/")
        assert pool.ConnectionCls is transport._Connection, (
            "urllib3's HTTPConnectionPool no longer builds its ConnectionCls"
        )
        connection = pool._new_conn()
        assert connection.response_class is WholeHead, (
            "urllib3's HTTPConnection no longer reads answers through response_class"
        )
    finally:
        adapter.close()


def test_http_client_still_reads_a_head_line_by_line_through_fp() -> None:
    # deadline.WholeHead and the proxy's FinalResponse wrap self.fp around begin() and
    # override _read_status: both must exist as they did.
    assert callable(getattr(http.client.HTTPResponse, "_read_status", None))
    assert callable(getattr(http.client.HTTPResponse, "begin", None))


def test_h11_still_gives_header_names_as_sent_and_answers_after_a_head_it_refused() -> None:
    # httpd.http1 hands the proxy names as the client spelt them (Headers.raw_items), and
    # answers an oversize head by showing h11 a line it refuses: after that refusal h11
    # must still let a server send its error answer.
    reader = h11.Connection(h11.SERVER)
    reader.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nX-Feed-Name: nightly\r\n\r\n")
    event = reader.next_event()
    assert isinstance(event, h11.Request)
    assert (b"X-Feed-Name", b"nightly") in list(event.headers.raw_items())

    refused = h11.Connection(h11.SERVER)
    refused.receive_data(b"\0\r\n\r\n")
    with pytest.raises(h11.RemoteProtocolError):
        refused.next_event()
    answer = refused.send(h11.Response(status_code=431, headers=[("Content-Length", "0")]))
    assert answer is not None
    assert answer.startswith(b"HTTP/1.1 431")
