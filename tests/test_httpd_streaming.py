"""The serving loop's streaming mode (``Connections(..., stream=serve)``), the import
proxy's front end: heads read by the loop, bodies and answers streamed by a worker."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from elevate_import_exporter.httpd.connections import Connections
from elevate_import_exporter.httpd.exchange import READ_BUFFER, Exchange

WAIT = 20.0  # a bound, waited out only when the loop misbehaves

Serve = Callable[..., Connections]


def digest_serve(exchange: Exchange) -> None:
    """Answers with the SHA-256 of the body, streamed back in two pieces."""
    if exchange.refusal is not None:
        exchange.send(exchange.http1.refuse(exchange.refusal, [], b"refused\n"))
        return
    digest = hashlib.sha256()
    for piece in exchange.body_pieces():
        digest.update(piece)
    http1 = exchange.http1
    exchange.send(http1.begin_answer(200, [("Content-Type", "text/plain")]))
    text = digest.hexdigest().encode()
    exchange.send_pieces(http1.answer_piece(text[:10]))
    exchange.send_pieces(http1.answer_piece(text[10:] + b"\n"))
    exchange.send(http1.end_answer())


@pytest.fixture
def serve() -> Iterator[Serve]:
    started: list[tuple[Connections, threading.Thread]] = []

    def start(stream: Callable[[Exchange], None] = digest_serve, **options: object) -> Connections:
        settings: dict[str, object] = {
            "header_timeout": 10.0,
            "idle_timeout": 10.0,
            "max_threads": 4,
            "max_connections": 100,
            "write_timeout": 10.0,
        }
        settings.update(options)
        listener = socket.create_server(("127.0.0.1", 0))
        connections = Connections(listener, stream=stream, **settings)  # type: ignore[arg-type]
        thread = threading.Thread(target=connections.serve_forever, daemon=True)
        thread.start()
        started.append((connections, thread))
        return connections

    yield start
    for connections, thread in started:
        connections.shutdown()
        thread.join()
        connections.close()


def connect(connections: Connections) -> socket.socket:
    return socket.create_connection(("127.0.0.1", connections.port), timeout=WAIT)


def read_answer(sock: socket.socket, buffer: bytearray) -> tuple[bytes, bytes]:
    """The next answer's head and (chunked or sized) body; ``buffer`` keeps what follows."""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        assert data, f"closed before an answer; had {bytes(buffer)!r}"
        buffer += data
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    del buffer[:end]
    lowered = head.lower()
    if b"transfer-encoding: chunked" in lowered:
        while not buffer.endswith(b"0\r\n\r\n"):
            data = sock.recv(65536)
            assert data
            buffer += data
        body, rest = _dechunk(bytes(buffer))
        buffer[:] = rest
        return head, body
    length = 0
    for line in lowered.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(buffer) < length:
        data = sock.recv(65536)
        assert data
        buffer += data
    body = bytes(buffer[:length])
    del buffer[:length]
    return head, body


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    body = b""
    while True:
        line, _, data = data.partition(b"\r\n")
        size = int(line, 16)
        if size == 0:
            return body, data.removeprefix(b"\r\n")
        body, data = body + data[:size], data[size + 2 :]


def closed(sock: socket.socket) -> bool:
    sock.settimeout(WAIT)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


def chunked(body: bytes, size: int = 100_000) -> bytes:
    pieces = [body[n : n + size] for n in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def upload(body: bytes, *headers: bytes) -> bytes:
    lines = b"".join(h + b"\r\n" for h in headers)
    return b"POST /up HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n" + body


def test_a_chunked_body_larger_than_the_read_buffer_reaches_the_worker_whole(
    serve: Serve,
) -> None:
    body = bytes(range(256)) * (3 * READ_BUFFER // 256 + 7)
    with connect(serve()) as sock:
        sock.sendall(upload(chunked(body), b"Transfer-Encoding: chunked"))
        head, answer = read_answer(sock, bytearray())
    assert head.startswith(b"HTTP/1.1 200 ")
    assert answer == hashlib.sha256(body).hexdigest().encode() + b"\n"


def test_pipelined_requests_are_each_served_in_order_on_one_connection(serve: Serve) -> None:
    first, second = b"a" * 70_000, b"second body"
    with connect(serve()) as sock:
        sock.sendall(
            upload(first, b"Content-Length: %d" % len(first))
            + upload(second, b"Content-Length: %d" % len(second))
        )
        buffer = bytearray()
        answers = [read_answer(sock, buffer)[1] for _ in range(2)]
        # and the connection is kept for a third
        sock.sendall(upload(b"", b"Content-Length: 0"))
        third = read_answer(sock, buffer)[1]
    assert answers == [hashlib.sha256(b).hexdigest().encode() + b"\n" for b in (first, second)]
    assert third == hashlib.sha256(b"").hexdigest().encode() + b"\n"


def test_a_client_waiting_for_100_continue_is_asked_for_its_body_by_the_worker(
    serve: Serve,
) -> None:
    with connect(serve()) as sock:
        sock.sendall(upload(b"", b"Content-Length: 5", b"Expect: 100-continue"))
        interim = sock.recv(65536)
        sock.sendall(b"hello")
        _head, answer = read_answer(sock, bytearray())
    assert interim.startswith(b"HTTP/1.1 100 ")
    assert answer == hashlib.sha256(b"hello").hexdigest().encode() + b"\n"


def test_a_refused_head_is_handed_to_the_worker_to_answer_and_the_connection_closes(
    serve: Serve,
) -> None:
    with connect(serve()) as sock:
        sock.sendall(upload(b"hello", b"Content-Length: 5", b"Transfer-Encoding: chunked"))
        head, body = read_answer(sock, bytearray())
        assert closed(sock)
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in head.lower()
    assert body == b"refused\n"


def test_an_http10_request_is_answered_and_its_connection_closed(serve: Serve) -> None:
    with connect(serve()) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(hashlib.sha256(b"").hexdigest().encode() + b"\n")


def test_requests_beyond_the_worker_threads_wait_with_their_heads_read(serve: Serve) -> None:
    release = threading.Event()
    entered: list[str] = []

    def hold(exchange: Exchange) -> None:
        assert exchange.head is not None
        entered.append(exchange.head.target)
        release.wait(WAIT)
        exchange.send(exchange.http1.answer(200, [], b"done\n"))

    connections = serve(hold, max_threads=2)
    socks = [connect(connections) for _ in range(3)]
    try:
        for number, sock in enumerate(socks):
            sock.sendall(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % number)
        deadline = time.monotonic() + WAIT
        while len(entered) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(connections.busy()) == 2
        assert len(entered) == 2
        release.set()
        answers = [read_answer(sock, bytearray())[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    assert answers == [b"done\n"] * 3
    assert sorted(entered) == ["/0", "/1", "/2"]


def test_the_turn_callback_can_abort_a_slow_body_from_the_loop(serve: Serve) -> None:
    seen: list[BaseException] = []
    connections: Connections

    def slow_reader(exchange: Exchange) -> None:
        try:
            for _piece in exchange.body_pieces():
                pass
        except BaseException as exc:
            seen.append(exc)
            raise

    def on_turn(now: float) -> None:
        for exchange in connections.busy():
            if now - exchange.started > 0.2 and exchange.body_read < 1000:
                exchange.abort()

    connections = serve(slow_reader, on_turn=on_turn, turn_every=0.05)
    with connect(connections) as sock:
        sock.sendall(upload(b"ab", b"Content-Length: 1000000"))
        assert closed(sock)
    deadline = time.monotonic() + WAIT
    while connections.busy() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen, "the worker was not stopped"
    assert connections.busy() == []


def test_a_connection_is_closed_when_its_head_does_not_come_within_the_header_timeout(
    serve: Serve,
) -> None:
    connections = serve(header_timeout=0.5)
    with connect(connections) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\n")
        began = time.monotonic()
        assert closed(sock)
    assert time.monotonic() - began < WAIT


def test_a_newcomer_does_not_push_out_a_connection_that_has_only_just_come(
    serve: Serve,
) -> None:
    # Both places are taken by connections whose heads are still coming; a third client
    # knocks. Closing one of the first two for it would gain nothing (the newcomer is no
    # likelier to be a real client), and under a flood every client would be pushed out
    # before its head was read: the newcomer waits in the backlog instead.
    connections = serve(max_connections=2, evict_after=WAIT * 3)
    first, second = connect(connections), connect(connections)
    newcomer = connect(connections)
    try:
        for sock in (first, second):
            sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\n")
        newcomer.sendall(b"POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        deadline = time.monotonic() + WAIT
        while connections.open < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert connections.open == 2
        for sock in (first, second):
            sock.sendall(b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
        early = [read_answer(sock, bytearray())[1] for sock in (first, second)]
        # Their answers done and their connections closed, there is room.
        late = read_answer(newcomer, bytearray())[1]
    finally:
        for sock in (first, second, newcomer):
            sock.close()
    assert early == [hashlib.sha256(b"ok").hexdigest().encode() + b"\n"] * 2
    assert late == hashlib.sha256(b"hi").hexdigest().encode() + b"\n"


def test_a_connection_that_has_waited_long_enough_for_its_head_makes_room(
    serve: Serve,
) -> None:
    connections = serve(max_connections=2, evict_after=0.0)
    idle = [connect(connections) for _ in range(2)]
    try:
        for sock in idle:
            sock.sendall(b"GET /never HTTP/1.1\r\n")
        deadline = time.monotonic() + WAIT
        while connections.open < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        with connect(connections) as newcomer:
            newcomer.sendall(b"POST /now HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
            answer = read_answer(newcomer, bytearray())[1]
        assert answer == hashlib.sha256(b"hi").hexdigest().encode() + b"\n"
        assert closed(idle[0])
    finally:
        for sock in idle:
            sock.close()
