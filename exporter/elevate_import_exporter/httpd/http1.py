"""HTTP/1.1 on one connection, request after request, as both servers speak it: the
exporter's (answers from memory) and the import proxy's (bodies streamed both ways).

h11 reads every request head, decides how its body is framed, decodes chunked bodies and
writes every answer. A ``Content-Length`` body is only counted here, not fed through h11:
h11 would copy each of its bytes twice, which halved the proxy's upload rate. This module
adds the refusals a server in front of something else needs on top of it, so that a
request cannot mean one thing here and another behind us (request smuggling):

- ``Content-Length`` and ``Transfer-Encoding`` together, two different lengths, a length
  that is not digits, a transfer coding other than ``chunked``, a bad chunk: ``400``
  (``501`` for an unknown coding), and the connection closes after the answer;
- a header line folded onto the one before (obs-fold), which h11 would join: ``400``;
- a head over :data:`MAX_HEAD_BYTES` or :data:`MAX_HEADERS` fields: ``431``, or ``414``
  when the request line alone is over the bytes;
- a version other than HTTP/1.0 and 1.1: ``505``; an ``Expect`` other than
  ``100-continue``: ``417``.

HTTP/1.0 connections close after one answer (h11 keeps only HTTP/1.1 ones alive).

The class is sans-I/O like h11 itself: its caller reads the socket, hands the bytes in,
and writes what the answer methods return, so that the selector loop can read heads
without a thread and a worker can stream a body with blocking reads, through one parser.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus

import h11

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
# A blank line ends a head; h11 takes a bare LF for CRLF, so the search does too.
_HEAD_END = re.compile(rb"\n\r?\n")
# A line that begins with a space or tab continues the one before it (obs-fold).
_FOLDED = re.compile(rb"\n[ \t]")
_LENGTH_LIST = re.compile(rb"(?im)^content-length:[^\n]*,")
_FRAMING = re.compile(rb"(?i)(content-length|transfer-encoding):")
_QUOTED = re.compile(r"[:\s]*(?:b['\"]|bytearray\()")
_LEADING_BLANK_LINES = 8  # RFC 9112 2.2: ignore a few empty lines before a request line
_FEED = 64 * 1024
# What h11 may hold of a body's framing that it cannot read yet: a chunk-size line with its
# extensions, the trailers. h11 is handed only whole heads (checked against max_head here)
# and looks at this bound only when it waits for more, so it must be below _FEED: else a
# flood line that came in two feeds would be read once whole.
_MAX_INCOMPLETE = 16 * 1024


class Refusal(Exception):
    """A request answered ``status`` with ``reason`` and the connection then closed.

    ``head_readable`` is False when the head itself is at fault (a folded line): none of
    its headers is to be believed, ``Authorization`` among them."""

    def __init__(self, status: int, reason: str, *, head_readable: bool = True) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.head_readable = head_readable


class PeerClosed(Exception):
    """The client's side of the connection ended inside a request."""


class _End:
    def __repr__(self) -> str:
        return "END"


END = _End()  # next_body(): the body is over


@dataclass(frozen=True, slots=True)
class Head:
    """A request head as it was sent: names as spelt, values as latin-1 text."""

    method: str
    target: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: tuple[tuple[str, str], ...]
    chunked: bool
    length: int  # Content-Length; 0 when absent or chunked
    size: int = 0  # bytes of the head as it came, blank line included

    def values(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    def get(self, name: str, default: str | None = None) -> str | None:
        found = self.values(name)
        return found[0] if found else default

    def tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of every ``name`` header, lower-cased."""
        return {t.strip().lower() for v in self.values(name) for t in v.split(",") if t.strip()}

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    @property
    def has_body(self) -> bool:
        return self.chunked or self.length > 0


class Http1:
    """One server-side connection: bytes in with :meth:`receive`, then :meth:`next_head`
    and :meth:`next_body`; the answer's bytes out of :meth:`answer` (whole) or
    :meth:`begin_answer`, :meth:`answer_piece` and :meth:`end_answer` (streamed); then
    :meth:`next_request` if :attr:`reusable`.

    ``max_body``: a longer body is refused ``413`` (as announced, or once read); None
    takes any length (the proxy streams what it is given).
    """

    def __init__(self, *, max_head: int = MAX_HEAD_BYTES, max_body: int | None = None) -> None:
        self._max_head = max_head
        self._max_body = max_body
        self._raw = bytearray()  # bytes of the next head, before h11 sees them
        self._scanned = 0  # how far _raw has been searched for the head's end
        self._ended = False  # the client has ended its side
        self._eof_fed = False  # and h11 has been told so
        self._input: deque[memoryview] = deque()  # body bytes h11 has not seen yet
        self._h11 = self._new()
        self._head: Head | None = None
        self._read = 0  # body bytes so far
        # A body framed by Content-Length is counted here, not fed through h11 (which
        # copies every byte twice): its bytes still to come, or None (h11 frames it).
        self._left: int | None = None

    @property
    def head(self) -> Head | None:
        """The request being served (None while its head is awaited)."""
        return self._head

    @property
    def idle(self) -> bool:
        """No byte of a next request has come."""
        return self._head is None and not self._raw

    @property
    def ended(self) -> bool:
        """The client has ended its side of the connection."""
        return self._ended

    @property
    def buffered(self) -> bool:
        """Bytes of a next request are here already (pipelined)."""
        return bool(self._raw)

    def receive(self, data: bytes | memoryview) -> None:
        """Bytes read from the client; ``b""`` when it has ended its side.

        During a body they are not copied here: ``data`` must stay as it is until
        :meth:`next_body` returns None (a reused read buffer may be handed in)."""
        if not data:
            self._ended = True
        elif self._head is None:
            self._raw += data
        else:
            self._input.append(memoryview(data))

    def next_head(self) -> Head | None:
        """The next request's head once it is all here, else None. Raises
        :class:`Refusal` (answer it with :meth:`refuse`) or :class:`PeerClosed` (the
        client left inside the head; not when it left between requests: then None)."""
        if self._head is not None:
            return self._head
        raw = self._raw
        for _ in range(_LEADING_BLANK_LINES):
            if raw.startswith(b"\r\n"):
                del raw[:2]
            elif raw.startswith(b"\n"):
                del raw[:1]
            else:
                break
        end = _HEAD_END.search(raw, max(0, self._scanned - 2))
        self._scanned = len(raw)
        if (end.end() if end else len(raw)) > self._max_head:
            line_end = raw.find(b"\n")
            self._fail_in_h11()
            raise self._oversize(line_end)
        if end is None:
            if self._ended and raw:
                raise PeerClosed("the connection ended inside a request head")
            return None
        size = end.end()
        self._h11.receive_data(bytes(raw[:size]))
        if len(raw) > size:
            self._input.append(memoryview(bytes(raw[size:])))
        folded = _FOLDED.search(raw, 0, size - 1) is not None
        whole = bytes(raw[:size])
        raw.clear()
        self._scanned = 0
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            # Refused for its framing alone, the head is still worth reading (its
            # credentials, its path), so that the answer can be worded for it.
            self._head = _without_framing(whole, self._max_head)
            raise Refusal(exc.error_status_hint, _h11_reason(exc)) from None
        if not isinstance(event, h11.Request):  # the head is whole: h11 has a request
            raise Refusal(400, "the request head cannot be read")
        self._head = head = _head_of(event, size)
        self._read = 0
        self._left = None if head.chunked else head.length
        if folded:
            raise Refusal(
                400, "a header line is folded onto the one before (obs-fold)", head_readable=False
            )
        if len(head.headers) > MAX_HEADERS:
            # What http.client (the proxy's way to Elevate) and most servers take at most.
            raise Refusal(431, f"the request has over {MAX_HEADERS} header fields")
        if head.version not in ("HTTP/1.1", "HTTP/1.0"):
            raise Refusal(505, f"{head.version} is not supported; use HTTP/1.1")
        if head.length and _LENGTH_LIST.search(whole):
            # "5, 5", which h11 takes as 5: one length is one number (RFC 9110 8.6 lets a
            # server refuse it), so that nothing behind us can read it another way.
            raise Refusal(400, "Content-Length is not one number of bytes")
        if head.chunked and head.values("content-length"):
            raise Refusal(400, "both Content-Length and Transfer-Encoding")
        expect = head.get("expect")
        if expect is not None and expect.strip().lower() != "100-continue":
            raise Refusal(417, "only 'Expect: 100-continue' is understood")
        if self._max_body is not None and head.length > self._max_body:
            raise Refusal(413, f"the body is over {self._max_body} bytes")
        return head

    @property
    def expects_continue(self) -> bool:
        """The client waits for ``100 Continue`` before it sends the body."""
        if self._left is not None and self._read:
            return False
        return self._h11.they_are_waiting_for_100_continue

    def next_body(self) -> bytes | memoryview | _End | None:
        """The next piece of the body, :data:`END` when it is over, or None until more
        bytes come. A piece of a ``Content-Length`` body is a view of what was given to
        :meth:`receive`, valid until the next call; a chunked body's pieces are h11's.
        Raises :class:`Refusal` for a broken or oversized body and :class:`PeerClosed`
        when the client left before its end."""
        if self._left is not None:
            return self._counted_body()
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                if self._eof_fed:
                    raise PeerClosed("the connection ended inside a request body") from None
                raise Refusal(400, _h11_reason(exc)) from None
            if isinstance(event, h11.Data):
                if not event.data:
                    continue
                self._read += len(event.data)
                if self._max_body is not None and self._read > self._max_body:
                    raise Refusal(413, f"the body is over {self._max_body} bytes")
                return event.data
            if isinstance(event, h11.EndOfMessage):
                self._keep_rest()
                return END
            if event is not h11.NEED_DATA:
                self._keep_rest()
                return END  # PAUSED: the body is over and the next request waits
            if self._input:
                self._feed()
            elif self._ended and not self._eof_fed:
                self._eof_fed = True
                self._h11.receive_data(b"")
            elif self._eof_fed:
                raise PeerClosed("the connection ended inside a request body")
            else:
                return None

    def _counted_body(self) -> memoryview | _End | None:
        left = self._left
        assert left is not None
        if left == 0:
            self._keep_rest()
            return END
        if not self._input:
            if self._ended:
                raise PeerClosed("the connection ended inside a request body")
            return None
        first = self._input[0]
        if len(first) > left:
            piece, self._input[0] = first[:left], first[left:]
        else:
            piece = self._input.popleft()
        self._left = left - len(piece)
        self._read += len(piece)
        return piece

    def _feed(self) -> None:
        # h11 copies what it is given into a buffer and copies each piece out again; in
        # pieces of at most _FEED bytes those buffers stay below malloc's mmap threshold,
        # which made feeding 512 KiB at once ten times slower (page faults on each).
        first = self._input[0]
        # h11 appends what it is given to a bytearray, which takes a memoryview as well.
        self._h11.receive_data(first[:_FEED])  # type: ignore[arg-type]
        if len(first) > _FEED:
            self._input[0] = first[_FEED:]
        else:
            self._input.popleft()

    def _keep_rest(self) -> None:
        """Copy what came after the body (a next request): the caller's buffer is reused."""
        if self._input:
            rest = b"".join(self._input)
            self._input.clear()
            self._input.append(memoryview(rest))

    # -- answers ---------------------------------------------------------------------------

    def continue_(self) -> bytes:
        """``100 Continue``, for a client that waits for it before its body."""
        interim = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
        return self._h11.send(interim) or b""

    def answer(
        self, status: int, headers: Sequence[tuple[str, str]], body: bytes, *, close: bool = False
    ) -> bytes:
        """A whole answer with ``body`` (dropped for HEAD, 204 and 304, as HTTP wants).

        ``Content-Length`` is set here; ``close`` ends the connection after it (a refusal,
        a stop); a request whose body was not read to its end closes it as well."""
        return b"".join(self.answer_pieces(status, headers, body, close=close))

    def answer_pieces(
        self, status: int, headers: Sequence[tuple[str, str]], body: bytes, *, close: bool = False
    ) -> list[bytes]:
        """:meth:`answer` as the pieces to write in order, ``body`` among them as it is:
        a large body is not copied behind the head."""
        out = [(name, value) for name, value in headers if name.lower() != "content-length"]
        if status not in (204, 304) and status >= 200:
            out.append(("Content-Length", str(len(body))))
        pieces = [self.begin_answer(status, out, close=close), *self.answer_piece(body)]
        end = self.end_answer()
        return [*pieces, end] if end else pieces

    def refuse(self, refusal: Refusal, headers: Sequence[tuple[str, str]], body: bytes) -> bytes:
        """The answer to a refused request: its status, and the connection closed after."""
        return self.answer(refusal.status, headers, body, close=True)

    def begin_answer(
        self, status: int, headers: Sequence[tuple[str, str]], *, close: bool = False
    ) -> bytes:
        """The head of a streamed answer; its body follows in :meth:`answer_piece`.

        Without a Content-Length, an HTTP/1.1 client gets the body chunked and an HTTP/1.0
        one gets it up to the connection's end."""
        fields = [(_bytes(name), _bytes(value)) for name, value in headers]
        if close or self._head is None or not self.request_read:
            # A refusal, a stop, or a body left unread: what follows cannot be framed.
            fields.append((b"Connection", b"close"))
        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b""
        return self._send(h11.Response(status_code=status, headers=fields, reason=phrase))

    def answer_piece(self, data: bytes) -> list[bytes]:
        """The bytes to write for one piece of a streamed answer's body (no copy of it)."""
        if not data or not self._carries_body(self._answer_status):
            return []
        return self._h11.send_with_data_passthrough(h11.Data(data=data)) or []

    def end_answer(self) -> bytes:
        """The end of the answer (the last chunk of a chunked body, else nothing)."""
        return self._send(h11.EndOfMessage())

    @property
    def reusable(self) -> bool:
        """The answer is out and the request was read to its end: another may follow."""
        return self._h11.our_state is h11.DONE and (
            self._h11.their_state is h11.DONE or self._left == 0
        )

    @property
    def request_read(self) -> bool:
        """The request has been read to its end (its body too)."""
        return self._left == 0 or self._h11.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)

    def next_request(self) -> None:
        """Start on the next request, with the bytes of it that came already."""
        rest, ended = self._h11.trailing_data
        self._h11 = self._new()
        self._raw = bytearray(rest)
        for piece in self._input:
            self._raw += piece
        self._input.clear()
        self._scanned = 0
        self._ended = self._ended or ended
        self._eof_fed = False
        self._head = None
        self._left = None

    # -- inside ----------------------------------------------------------------------------

    def _carries_body(self, status: int) -> bool:
        head = self._head
        return not (
            (head is not None and head.method == "HEAD") or status in (204, 304) or status < 200
        )

    def _send(self, event: h11.Event) -> bytes:
        if isinstance(event, h11.Response):
            self._answer_status = event.status_code
        return self._h11.send(event) or b""

    def _new(self) -> h11.Connection:
        self._answer_status = 200
        return h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_INCOMPLETE)

    def _oversize(self, line_end: int) -> Refusal:
        if line_end < 0 or line_end > self._max_head:
            return Refusal(414, f"the request line is over {self._max_head} bytes")
        return Refusal(431, f"the request head is over {self._max_head} bytes")

    def _fail_in_h11(self) -> None:
        """Put h11 where it may answer an error without a request: after one it could not
        read. The head is refused by our rule, so h11 is shown a line it refuses too."""
        self._raw.clear()
        self._scanned = 0
        self._h11.receive_data(b"\0\r\n\r\n")
        try:
            self._h11.next_event()
        except h11.RemoteProtocolError:
            return
        raise AssertionError("h11 took a NUL request line")  # pragma: no cover


def _head_of(event: h11.Request, size: int) -> Head:
    headers = tuple(
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in event.headers.raw_items()
    )
    lowered = {name.lower() for name, _value in headers}
    chunked = "transfer-encoding" in lowered
    length = 0
    if not chunked and "content-length" in lowered:
        length = int(next(v for n, v in headers if n.lower() == "content-length"))
    return Head(
        method=event.method.decode("latin-1"),
        target=event.target.decode("latin-1"),
        version="HTTP/" + event.http_version.decode("latin-1"),
        headers=headers,
        chunked=chunked,
        length=length,
        size=size,
    )


def _without_framing(head: bytes, max_head: int) -> Head | None:
    """``head`` as h11 reads it without its framing headers, or None when it still cannot."""
    lines = [line for line in head.split(b"\n") if not _FRAMING.match(line)]
    reader = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
    reader.receive_data(b"\n".join(lines))
    try:
        event = reader.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(event, h11.Request):
        return None
    return _head_of(event, len(head))


def _h11_reason(exc: h11.RemoteProtocolError) -> str:
    # h11's own words without the bytes it quotes after them ("illegal header line:
    # b'...'"): they may hold a credential, and the reason is shown to the client.
    text = _QUOTED.split(str(exc), maxsplit=1)[0].strip()
    return text[:200] or "the request cannot be read"


def _bytes(text: str) -> bytes:
    return text.encode("latin-1", "replace")
