"""The standalone proxy's delivery of registrations, against real HTTP servers on loopback:
ids reach the exporter when it is up, wait (none lost) while it is down, a refusal drops its
batch and counts it, a full queue drops the oldest, garbage and trickling answers are retried
within the client's bounds, and the credentials never reach the logs."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from elevate_import_exporter.core.records import Registration
from elevate_import_exporter.elevate.deadline import Reaper
from elevate_import_exporter.elevate.transport import GuardedAdapter
from elevate_import_exporter.lifecycle.track import (
    PATH,
    Client,
    Credentials,
    Endpoint,
    Link,
    OneContext,
    session,
)
from elevate_import_exporter.proxy.delivery import (
    Delivery,
    DeliveryCollector,
    DeliveryFailed,
    http_sender,
)
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import SIM_KEY
from tests.support import Exporters, free_port, wait_until
from tests.test_registration_api import IMPORTS, call

PASSWORD = "pa55-w0rd-never-logged"


class Adapter(OneContext, GuardedAdapter):
    """As the commands build it: one TLS context, connections a deadline shuts."""


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    reaper = Reaper()
    yield reaper
    reaper.close()


ClientFor = Callable[..., Client]


@pytest.fixture
def client_for(reaper: Reaper) -> Iterator[ClientFor]:
    made: list[Client] = []

    def make(base: str, *, timeout: float = 5.0, credentials: Credentials | None = None) -> Client:
        import ssl

        host = base.split("//", 1)[1].rsplit(":", 1)[0]
        link = Link(session(Adapter(ssl.create_default_context())), reaper.guard)
        client = Client(
            Endpoint("http", host, base + PATH, base),
            link,
            credentials=credentials,
            timeout=timeout,
            flags="--registration",
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.link.session.close()


@pytest.fixture
def deliveries() -> Iterator[list[Delivery]]:
    started: list[Delivery] = []
    yield started
    for delivery in started:
        delivery.close(0)


@dataclass
class Receiver:
    """A registration API of exact answers: ``answers`` (status, body or None for the real
    per-id result) are used in turn, the last one for good; every id posted is kept."""

    answers: list[tuple[int, bytes | None]] = field(default_factory=lambda: [(201, None)])
    posted: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: Request) -> Response:
        document = json.loads(request.get_data())
        items = document if isinstance(document, list) else [document]
        with self.lock:
            self.queries.append(request.query_string.decode())
            self.headers.append(dict(request.headers))
            status, body = self.answers[0] if len(self.answers) == 1 else self.answers.pop(0)
            if body is None and 200 <= status < 300:
                self.posted.extend(item["id"] for item in items)
        if body is None:
            result = {"imports": [{"id": i["id"], "created": True} for i in items]}
            body = json.dumps(result).encode() if 200 <= status < 300 else b'{"error": "no"}'
        return Response(body, status, content_type="application/json")

    def serve(self, server: HTTPServer) -> None:
        server.expect_request(IMPORTS, method="POST").respond_with_handler(self)


def ids(*names: str) -> list[Registration]:
    return [Registration(name, "PRODUCTS", (("feed", "f"),)) for name in names]


def quick_delivery(deliveries: list[Delivery], client: Client) -> Delivery:
    """A delivery over HTTP whose retries come within hundredths of a second, closed after
    the test."""
    delivery = Delivery(http_sender(client), backoff_first=0.01, backoff_max=0.05)
    deliveries.append(delivery)
    return delivery


def base_of(server: HTTPServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def test_ids_reach_a_running_exporter_as_the_proxys_with_their_labels(
    client_for: ClientFor, deliveries: list[Delivery]
) -> None:
    with Simulator(api_key=SIM_KEY) as simulator:
        for n in range(5):
            simulator.add_import(ScriptedImport(f"80{n}", (Step("PROCESSING"),)))
        exporters = Exporters()
        try:
            app = exporters.start(simulator.url, [], enable_registration=True)
            delivery = Delivery(
                http_sender(client_for(app.url)), batch=2, backoff_first=0.01, backoff_max=0.05
            )
            deliveries.append(delivery)
            delivery.start()
            assert delivery.register(ids(*(f"80{n}" for n in range(5))), "proxy") == [True] * 5
            wait_until(lambda: delivery.snapshot().delivered == 5, what="5 delivered")
            for n in range(5):
                shown = call(app.url, "GET", f"{IMPORTS}/80{n}").json
                assert shown["source"] == "proxy"
                assert shown["labels"] == {"feed": "f"}
                assert shown["type"] == "PRODUCTS"
            stats = delivery.snapshot()
            assert stats.waiting == 0
            assert stats.retries == 0
            assert stats.last_delivery is not None
            assert stats.last_delivery <= time.time()
        finally:
            exporters.stop_all()


def test_ids_wait_while_the_exporter_is_down_and_all_arrive_once_it_is_up(
    client_for: ClientFor, deliveries: list[Delivery], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "elevate_import_exporter.proxy.delivery")
    port = free_port()
    delivery = Delivery(
        http_sender(client_for(f"http://127.0.0.1:{port}")),
        batch=3,
        backoff_first=0.01,
        backoff_max=0.05,
    )
    deliveries.append(delivery)
    delivery.start()
    delivery.register(ids(*(f"d{n}" for n in range(10))), "proxy")
    wait_until(lambda: delivery.snapshot().retries >= 5, what="retries while down")
    assert delivery.snapshot().waiting == 10
    assert delivery.snapshot().delivered == 0
    receiver = Receiver()
    server = HTTPServer("127.0.0.1", port)
    receiver.serve(server)
    server.start()
    try:
        wait_until(lambda: delivery.snapshot().delivered == 10, what="delivered once up")
        assert sorted(receiver.posted) == sorted(f"d{n}" for n in range(10))
        assert receiver.queries
        assert set(receiver.queries) == {"source=proxy"}
        assert delivery.snapshot().waiting == 0
    finally:
        server.stop()
    delivery.register(ids("late"), "proxy")
    wait_until(lambda: delivery.snapshot().retries >= 10, what="retries while down again")
    # One warning each time the condition changes, not one per attempt.
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    down = [m for m in warnings if "cannot be delivered" in m]
    up = [m for m in warnings if "delivered again" in m]
    assert len(down) == 2, warnings
    assert len(up) == 1, warnings


def test_a_refused_batch_is_dropped_and_counted_per_id_and_the_next_is_delivered(
    client_for: ClientFor, deliveries: list[Delivery], httpserver: HTTPServer
) -> None:
    receiver = Receiver(answers=[(400, b'{"error": "bad id", "field": "[1].id"}'), (201, None)])
    receiver.serve(httpserver)
    delivery = quick_delivery(deliveries, client_for(base_of(httpserver)))
    delivery.register(ids("r1", "r2", "r3"), "proxy")
    delivery.start()
    wait_until(lambda: delivery.snapshot().dropped["refused"] == 3, what="3 refused")
    delivery.register(ids("r4"), "proxy")
    wait_until(lambda: delivery.snapshot().delivered == 1, what="the next delivered")
    assert receiver.posted == ["r4"]
    assert delivery.snapshot().retries == 0
    assert delivery.snapshot().dropped["queue_full"] == 0


@pytest.mark.parametrize("status", [429, 408, 503, 500])
def test_throttling_and_server_errors_are_retried_not_dropped(
    client_for: ClientFor, deliveries: list[Delivery], httpserver: HTTPServer, status: int
) -> None:
    receiver = Receiver(answers=[(status, b"{}"), (status, b"{}"), (201, None)])
    receiver.serve(httpserver)
    delivery = quick_delivery(deliveries, client_for(base_of(httpserver)))
    delivery.register(ids("t1", "t2"), "proxy")
    delivery.start()
    wait_until(lambda: delivery.snapshot().delivered == 2, what="delivered after retries")
    assert delivery.snapshot().retries == 2
    assert delivery.snapshot().dropped == {"queue_full": 0, "refused": 0}
    assert receiver.posted == ["t1", "t2"]


def test_a_full_queue_drops_the_oldest_ids_never_the_caller(
    client_for: ClientFor, deliveries: list[Delivery], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    delivery = Delivery(
        http_sender(client_for(f"http://127.0.0.1:{port}")),
        capacity=5,
        batch=2,
        backoff_first=0.01,
        backoff_max=0.05,
    )
    deliveries.append(delivery)
    delivery.start()
    for n in range(12):
        started = time.monotonic()
        assert delivery.register(ids(f"q{n:02}"), "proxy") == [True]
        # Never waits on the network (the exporter is down): far below any timeout.
        assert time.monotonic() - started < 2
    stats = delivery.snapshot()
    assert stats.waiting == 5
    assert stats.dropped["queue_full"] == 7
    full = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert len(full) == 1  # one warning for the burst
    receiver = Receiver()
    server = HTTPServer("127.0.0.1", port)
    receiver.serve(server)
    server.start()
    try:
        wait_until(lambda: delivery.snapshot().delivered == 5, what="the newest 5 delivered")
        posted = sorted(receiver.posted)
        assert len(set(posted)) == 5
        # A batch in flight when the queue overflows is not dropped (a refused connection
        # still takes a moment), so up to `batch` older ids may take the place of the
        # next-newest; the newest `capacity - batch` are always delivered.
        assert posted[-3:] == ["q09", "q10", "q11"]
        assert all(p in {f"q{n:02}" for n in range(12)} for p in posted)
    finally:
        server.stop()


def test_a_batch_larger_than_the_queue_keeps_the_newest_ids(
    client_for: ClientFor, deliveries: list[Delivery]
) -> None:
    delivery = Delivery(http_sender(client_for(f"http://127.0.0.1:{free_port()}")), capacity=4)
    deliveries.append(delivery)
    delivery.register(ids(*(f"b{n}" for n in range(10))), "proxy")
    assert delivery.snapshot().waiting == 4
    assert delivery.snapshot().dropped["queue_full"] == 6


def test_a_garbage_answer_is_retried_until_a_real_one_comes(
    client_for: ClientFor, deliveries: list[Delivery], httpserver: HTTPServer
) -> None:
    receiver = Receiver(
        answers=[(200, b"<html>a login page</html>"), (200, b'{"imports": []}'), (201, None)]
    )
    receiver.serve(httpserver)
    delivery = quick_delivery(deliveries, client_for(base_of(httpserver)))
    delivery.register(ids("g1"), "proxy")
    delivery.start()
    wait_until(lambda: delivery.snapshot().delivered == 1, what="delivered after garbage")
    assert delivery.snapshot().retries == 2
    assert receiver.posted == ["g1"]


def test_one_garbage_answer_is_an_invalid_answer_worth_a_retry(
    client_for: ClientFor, httpserver: HTTPServer
) -> None:
    Receiver(answers=[(200, b"not json")]).serve(httpserver)
    with pytest.raises(DeliveryFailed) as failed:
        http_sender(client_for(base_of(httpserver)))(ids("g2"))
    assert failed.value.reason == "invalid_answer"
    assert failed.value.retry


@pytest.fixture
def trickler() -> Iterator[str]:
    """A server that answers a 200 head, then a byte of body every 0.2 s for a minute."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=trickle, args=(connection,), daemon=True).start()

    def trickle(connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 300\r\n\r\n"
            )
            try:
                connection.sendall(head)
                for _ in range(300):
                    if stop.wait(0.2):
                        return
                    connection.sendall(b" ")
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.close()


def test_a_trickling_answer_is_cut_at_the_timeout_and_retried(
    client_for: ClientFor, deliveries: list[Delivery], trickler: str
) -> None:
    send = http_sender(client_for(trickler, timeout=1.0))
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as failed:
        send(ids("slow"))
    # The answer trickles for a minute: only the whole-exchange bound ends it this soon.
    assert time.monotonic() - started < 15
    assert failed.value.retry
    assert failed.value.reason == "unreachable"
    delivery = Delivery(send, backoff_first=0.01, backoff_max=0.05)
    deliveries.append(delivery)
    delivery.register(ids("slow"), "proxy")
    delivery.start()
    wait_until(lambda: delivery.snapshot().retries >= 2, timeout=60, what="retried")
    assert delivery.snapshot().waiting == 1


def test_the_credentials_never_reach_the_logs_even_when_the_exporter_echoes_them(
    client_for: ClientFor,
    deliveries: list[Delivery],
    httpserver: HTTPServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = Credentials("feeds", PASSWORD)

    def echo(request: Request) -> Response:
        said = f"{request.headers.get('Authorization')} {PASSWORD} {PASSWORD.upper()}"
        status = 503 if echo.calls < 2 else 401  # type: ignore[attr-defined]
        echo.calls += 1  # type: ignore[attr-defined]
        return Response(json.dumps({"error": said}), status, content_type="application/json")

    echo.calls = 0  # type: ignore[attr-defined]
    httpserver.expect_request(IMPORTS, method="POST").respond_with_handler(echo)
    delivery = Delivery(
        http_sender(client_for(base_of(httpserver), credentials=credentials)),
        backoff_first=0.01,
        backoff_max=0.05,
    )
    deliveries.append(delivery)
    delivery.register(ids("c1"), "proxy")
    delivery.start()
    # A 401 is the setup's fault, not the id's: it waits, and is asked for again.
    wait_until(lambda: delivery.snapshot().retries >= 4, what="the 401 retried")
    assert delivery.snapshot().waiting == 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "cannot be delivered" in logged
    assert "--registration.username" in logged  # the proxy's flag, not track's
    for secret in (PASSWORD, PASSWORD.upper(), credentials.token):
        assert secret not in logged
        assert secret not in caplog.text


def test_the_metrics_name_every_family_of_the_brief_with_both_drop_reasons(
    client_for: ClientFor, deliveries: list[Delivery], httpserver: HTTPServer
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    Receiver().serve(httpserver)
    delivery = quick_delivery(deliveries, client_for(base_of(httpserver)))
    registry = CollectorRegistry()
    registry.register(DeliveryCollector(delivery))
    before = generate_latest(registry).decode()
    assert "elevate_import_proxy_last_delivery_timestamp_seconds 0.0" in before
    delivery.start()
    delivery.register(ids("m1", "m2"), "proxy")
    wait_until(lambda: delivery.snapshot().delivered == 2, what="delivered")
    text = generate_latest(registry).decode()
    for line in (
        "elevate_import_proxy_registrations_waiting 0.0",
        "elevate_import_proxy_registrations_delivered_total 2.0",
        "elevate_import_proxy_registration_retries_total 0.0",
        'elevate_import_proxy_registrations_dropped_total{reason="queue_full"} 0.0',
        'elevate_import_proxy_registrations_dropped_total{reason="refused"} 0.0',
    ):
        assert line in text.splitlines(), text
    name = "elevate_import_proxy_last_delivery_timestamp_seconds"
    stamp = [row for row in text.splitlines() if row.startswith(name)]
    assert 0 < float(stamp[0].split()[1]) <= time.time()


def test_an_exporter_older_than_accepted_at_gets_the_ids_without_it_and_loses_none(
    client_for: ClientFor,
    deliveries: list[Delivery],
    httpserver: HTTPServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What an exporter before 0.6.0 answers to a key it does not know.
    old = b'{"error": "unknown key \'accepted_at\': give id, type, labels", "field": "[0]"}'
    bodies: list[list[dict[str, object]]] = []
    receiver = Receiver(answers=[(400, old), (201, None)])

    def handler(request: Request) -> Response:
        document = json.loads(request.get_data())
        bodies.append(document if isinstance(document, list) else [document])
        return receiver(request)

    httpserver.expect_request(IMPORTS, method="POST").respond_with_handler(handler)
    delivery = quick_delivery(deliveries, client_for(base_of(httpserver)))
    delivery.register(ids("o1", "o2"), "proxy")
    delivery.start()
    wait_until(lambda: delivery.snapshot().delivered == 2, what="both delivered")
    delivery.register(ids("o3"), "proxy")
    wait_until(lambda: delivery.snapshot().delivered == 3, what="the next delivered")
    assert receiver.posted == ["o1", "o2", "o3"]
    assert delivery.snapshot().dropped == {"queue_full": 0, "refused": 0}
    # Tried once with it, then never again: one refusal, not one per batch.
    assert ["accepted_at" in item for item in bodies[0]] == [True, True]
    assert all("accepted_at" not in item for body in bodies[1:] for item in body)
    assert len(bodies) == 3
    warned = [r for r in caplog.records if "does not take accepted_at" in r.getMessage()]
    assert len(warned) == 1


def test_a_400_about_another_field_still_drops_the_batch(
    client_for: ClientFor, deliveries: list[Delivery], httpserver: HTTPServer
) -> None:
    receiver = Receiver(answers=[(400, b'{"error": "bad id", "field": "[0].id"}'), (201, None)])
    receiver.serve(httpserver)
    delivery = quick_delivery(deliveries, client_for(base_of(httpserver)))
    delivery.register(ids("x1"), "proxy")
    delivery.start()
    wait_until(lambda: delivery.snapshot().dropped["refused"] == 1, what="the batch refused")
    assert receiver.posted == []
