"""``httpd.http1.Http1``: one connection's requests read and answered through h11, with
the refusals a server in front of something else needs (no socket: bytes in, bytes out)."""

from __future__ import annotations

import pytest

from elevate_import_exporter.httpd.http1 import (
    END,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    Head,
    Http1,
    PeerClosed,
    Refusal,
)

H = b"Host: x\r\n"


def read(http1: Http1) -> tuple[Head, bytes]:
    """The next request, head and body, from what ``http1`` has been given."""
    head = http1.next_head()
    assert head is not None
    body = bytearray()
    while (piece := http1.next_body()) is not END:
        assert piece is not None, "the body is not all here"
        body += piece  # type: ignore[arg-type]
    return head, bytes(body)


def refusal_of(data: bytes, **options: int) -> Refusal:
    http1 = Http1(**options)
    http1.receive(data)
    with pytest.raises(Refusal) as caught:
        read(http1)
    return caught.value


def status_line(answer: bytes) -> bytes:
    return answer.split(b"\r\n", 1)[0]


def post(*lines: bytes, body: bytes = b"") -> bytes:
    return b"POST / HTTP/1.1\r\n" + H + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


def get(*lines: bytes) -> bytes:
    return b"GET / HTTP/1.1\r\n" + H + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


CL, TE = b"Content-Length: ", b"Transfer-Encoding: chunked"
LONG = b"b" * MAX_HEAD_BYTES
REFUSALS = [
    ("cl-and-te", post(CL + b"5", TE, body=b"0\r\n\r\n"), 400),
    ("te-and-cl", post(TE, CL + b"5", body=b"0\r\n\r\n"), 400),
    ("two-lengths", post(CL + b"5", CL + b"6", body=b"hello!"), 400),
    ("length-list", post(CL + b"5, 5", body=b"hello"), 400),
    ("signed-length", post(CL + b"+5", body=b"hello"), 400),
    ("spaced-length", post(CL + b"1 0", body=b"helloworld"), 400),
    ("hex-length", post(CL + b"0x5", body=b"hello"), 400),
    ("unknown-coding", post(b"Transfer-Encoding: gzip, chunked"), 501),
    ("bad-chunk-size", post(TE, body=b"zz\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk-extension-flood", post(TE, body=b"5;a=" + b"a" * 100_000), 400),
    ("obs-fold", get(b"X-A: 1", b" b"), 400),
    ("obs-fold-tab", get(b"X-A: 1", b"\tb"), 400),
    ("line-without-colon", get(b"Api-Key secret"), 400),
    ("space-before-colon", get(b"Content-Length : 5"), 400),
    ("no-host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("http2-version", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("unknown-expectation", post(b"Expect: teapot", CL + b"1", body=b"x"), 417),
    ("head-over-limit", get(b"X-A: " + LONG), 431),
    ("head-over-limit-unfinished", b"GET / HTTP/1.1\r\n" + H + b"X-A: " + LONG, 431),
    ("request-line-over-limit", b"GET /" + LONG, 414),
    ("too-many-fields", get(*(b"X-A: 1" for _ in range(MAX_HEADERS))), 431),
    ("body-announced-over-limit", post(CL + b"11"), 413),
    ("chunked-body-over-limit", post(TE, body=b"6\r\nhello!\r\n6\r\nhello!\r\n0\r\n\r\n"), 413),
]


@pytest.mark.parametrize(
    ("data", "status"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_each_refusal_has_its_status_and_its_answer_closes_the_connection(
    data: bytes, status: int
) -> None:
    http1 = Http1(max_body=10)
    http1.receive(data)
    with pytest.raises(Refusal) as caught:
        read(http1)
    assert caught.value.status == status
    answer = http1.refuse(caught.value, [("Content-Type", "text/plain")], b"no\n")
    assert status_line(answer).startswith(b"HTTP/1.1 %d " % status)
    assert b"\r\nConnection: close\r\n" in answer
    assert not http1.reusable


def test_a_refusal_reason_does_not_quote_the_bytes_of_the_line_it_refuses() -> None:
    refusal = refusal_of(b"GET / HTTP/1.1\r\n" + H + b"Api-Key secret123\r\n\r\n")
    assert "secret123" not in refusal.reason


def test_a_folded_head_is_refused_with_none_of_its_headers_to_be_believed() -> None:
    refusal = refusal_of(b"GET / HTTP/1.1\r\n" + H + b"Authorization: Basic a\r\n b\r\n\r\n")
    assert not refusal.head_readable


def test_a_head_refused_for_its_framing_alone_is_still_read_for_its_path_and_credentials() -> None:
    http1 = Http1()
    http1.receive(
        b"POST /api HTTP/1.1\r\n" + H + b"Authorization: Basic a\r\nContent-Length: +5\r\n\r\n"
    )
    with pytest.raises(Refusal) as caught:
        http1.next_head()
    assert caught.value.head_readable
    assert http1.head is not None
    assert (http1.head.path, http1.head.get("authorization")) == ("/api", "Basic a")


def test_pipelined_requests_are_read_one_after_the_other_with_their_bodies() -> None:
    http1 = Http1()
    http1.receive(
        b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello"
        b"POST /b HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        b"GET /c HTTP/1.1\r\n" + H + b"\r\n"
    )
    seen = []
    for _ in range(3):
        head, body = read(http1)
        seen.append((head.target, body))
        http1.answer(200, [], b"ok")
        assert http1.reusable
        http1.next_request()
    assert seen == [("/a", b"hello"), ("/b", b"abc"), ("/c", b"")]
    assert http1.idle


def test_bytes_after_a_body_stay_for_the_next_request_though_the_read_buffer_is_reused() -> None:
    http1 = Http1()
    http1.receive(b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\n")
    assert http1.next_head() is not None
    assert http1.next_body() is None
    buffer = bytearray(b"helloGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    http1.receive(memoryview(buffer))
    assert http1.next_body() == b"hello"
    assert http1.next_body() is END
    buffer[:] = b"X" * len(buffer)  # the caller's next read overwrites it
    http1.answer(200, [], b"")
    http1.next_request()
    head = http1.next_head()
    assert head is not None
    assert head.target == "/next"


def test_a_chunked_body_fed_at_once_comes_out_in_pieces_of_at_most_64_kib_and_whole() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    http1 = Http1()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    http1.receive(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    assert http1.next_head() is not None
    pieces = []
    while (piece := http1.next_body()) is not END:
        assert piece is not None
        pieces.append(bytes(piece))  # type: ignore[arg-type]
    assert b"".join(pieces) == body
    assert max(len(piece) for piece in pieces) <= 64 * 1024


def test_a_counted_body_is_handed_back_as_views_of_the_bytes_given_not_copies() -> None:
    buffer = bytearray(b"hello worldGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    http1 = Http1()
    http1.receive(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 11\r\n\r\n")
    assert http1.next_head() is not None
    http1.receive(memoryview(buffer))
    piece = http1.next_body()
    assert isinstance(piece, memoryview)
    assert piece.obj is buffer
    assert bytes(piece) == b"hello world"
    assert http1.next_body() is END
    buffer[:] = b"X" * len(buffer)  # the caller reuses its buffer: the rest was kept aside
    http1.answer(200, [], b"")
    assert http1.reusable
    http1.next_request()
    head = http1.next_head()
    assert head is not None
    assert head.target == "/next"


def test_the_end_of_the_stream_inside_a_head_is_a_peer_that_left() -> None:
    http1 = Http1()
    http1.receive(b"GET / HTTP/1.1\r\nHo")
    assert http1.next_head() is None
    http1.receive(b"")
    with pytest.raises(PeerClosed):
        http1.next_head()


def test_the_end_of_the_stream_between_requests_is_no_request() -> None:
    http1 = Http1()
    http1.receive(b"")
    assert http1.next_head() is None
    assert http1.ended


@pytest.mark.parametrize(
    "framing",
    [b"Content-Length: 10\r\n\r\nhello", b"Transfer-Encoding: chunked\r\n\r\n5\r\nhel"],
    ids=["sized", "chunked"],
)
def test_the_end_of_the_stream_inside_a_body_is_a_peer_that_left(framing: bytes) -> None:
    http1 = Http1()
    http1.receive(b"POST / HTTP/1.1\r\n" + H + framing)
    assert http1.next_head() is not None
    while http1.next_body() is not None:
        pass
    http1.receive(b"")
    with pytest.raises(PeerClosed):
        drain(http1)


def drain(http1: Http1) -> None:
    while True:
        http1.next_body()


def test_a_chunk_extension_flood_that_comes_in_two_reads_is_refused_as_well() -> None:
    http1 = Http1()
    http1.receive(post(TE))
    assert http1.next_head() is not None
    flood = b"5;a=" + b"a" * 100_000 + b"\r\nhello\r\n0\r\n\r\n"
    # A first read just under the head limit, then the rest: whole, the line would be
    # read, unless what h11 may hold unread is bounded below one feed.
    with pytest.raises(Refusal):
        feed(http1, flood[:65_000], flood[65_000:])


def feed(http1: Http1, *reads: bytes) -> None:
    for data in reads:
        http1.receive(data)
        while http1.next_body() is not None:
            pass


def test_an_http10_request_is_answered_and_not_kept_even_when_it_asks() -> None:
    http1 = Http1()
    http1.receive(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    head, _body = read(http1)
    assert head.version == "HTTP/1.0"
    answer = http1.answer(200, [], b"ok")
    assert b"connection: close" in answer.lower()
    assert not http1.reusable


def test_a_client_waiting_for_100_continue_is_told_to_send_its_body() -> None:
    http1 = Http1()
    http1.receive(b"POST / HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert http1.next_head() is not None
    assert http1.next_body() is None
    assert http1.expects_continue
    assert status_line(http1.continue_()) == b"HTTP/1.1 100 Continue"
    http1.receive(b"ok")
    assert http1.next_body() == b"ok"


def test_an_answer_to_head_has_its_length_and_no_body() -> None:
    http1 = Http1()
    http1.receive(b"HEAD / HTTP/1.1\r\n" + H + b"\r\n")
    read(http1)
    answer = http1.answer(200, [("Content-Type", "text/plain")], b"hello")
    assert answer.endswith(b"Content-Length: 5\r\n\r\n")


def test_an_answer_before_the_body_was_read_closes_the_connection() -> None:
    http1 = Http1()
    http1.receive(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhe")
    assert http1.next_head() is not None
    answer = http1.answer(413, [], b"")
    assert b"Connection: close" in answer
    assert not http1.reusable
    assert not http1.request_read


def test_a_streamed_answer_to_an_http11_client_is_chunked() -> None:
    http1 = Http1()
    http1.receive(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
    read(http1)
    out = http1.begin_answer(200, [])
    out += b"".join(http1.answer_piece(b"hello"))
    out += http1.end_answer()
    assert b"Transfer-Encoding: chunked" in out
    assert out.endswith(b"5\r\nhello\r\n0\r\n\r\n")
    assert http1.reusable


def test_a_few_blank_lines_before_a_request_line_are_ignored() -> None:
    http1 = Http1()
    http1.receive(b"\r\n\r\nGET / HTTP/1.1\r\n" + H + b"\r\n")
    head, _body = read(http1)
    assert head.target == "/"


def test_a_head_with_as_many_fields_as_allowed_is_read() -> None:
    http1 = Http1()
    http1.receive(b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * (MAX_HEADERS - 1) + H + b"\r\n")
    head, _body = read(http1)
    assert len(head.headers) == MAX_HEADERS
