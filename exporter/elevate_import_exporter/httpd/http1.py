"""HTTP/1.1 on one connection, request after request, as both servers speak it: the
exporter's (answers from memory) and the import proxy's (bodies streamed both ways).

h11 reads every request head and frames every body, and writes every answer; this module
adds the refusals a server in front of something else needs on top of it, so that a
request cannot mean one thing here and another behind us (request smuggling):

- ``Content-Length`` and ``Transfer-Encoding`` together, two different lengths, a length
  that is not digits, a transfer coding other than ``chunked``, a bad chunk: ``400``
  (``501`` for an unknown coding), and the connection closes after the answer;
- a header line folded onto the one before (obs-fold), which h11 would join: ``400``;
- a head over :data:`MAX_HEAD_BYTES`: ``431``, or ``414`` when the request line alone is;
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
# A blank line ends a head; h11 takes a bare LF for CRLF, so the search does too.
_HEAD_END = re.compile(rb"\n\r?\n")
# A line that begins with a space or tab continues the one before it (obs-fold).
_FOLDED = re.compile(rb"\n[ \t]")
_QUOTED = re.compile(r"[:\s]*(?:b['\"]|bytearray\()")
_LEADING_BLANK_LINES = 8
_FEED = 64 * 1024  # RFC 9112 2.2: ignore a few empty lines before a request line


class Refusal(Exception):
    """A request answered ``status`` with ``reason`` and the connection then closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


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
        raw.clear()
        self._scanned = 0
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise Refusal(exc.error_status_hint, _h11_reason(exc)) from None
        if not isinstance(event, h11.Request):  # the head is whole: h11 has a request
            raise Refusal(400, "the request head cannot be read")
        self._head = head = _head_of(event)
        self._read = 0
        if folded:
            raise Refusal(400, "a header line is folded onto the one before (obs-fold)")
        if head.version not in ("HTTP/1.1", "HTTP/1.0"):
            raise Refusal(505, f"{head.version} is not supported; use HTTP/1.1")
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
        return self._h11.they_are_waiting_for_100_continue

    def next_body(self) -> bytes | _End | None:
        """The next piece of the body (bytes), :data:`END` when it is over, or None until
        more bytes come. Raises :class:`Refusal` for a broken or oversized body and
        :class:`PeerClosed` when the client left before its end."""
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
        return self._h11.send(h11.InformationalResponse(status_code=100, headers=[])) or b""

    def answer(
        self, status: int, headers: Sequence[tuple[str, str]], body: bytes, *, close: bool = False
    ) -> bytes:
        """A whole answer with ``body`` (dropped for HEAD, 204 and 304, as HTTP wants).

        ``Content-Length`` is set here; ``close`` ends the connection after it (a refusal,
        a stop); a request whose body was not read to its end closes it as well."""
        has_body = self._carries_body(status)
        out = [(name, value) for name, value in headers if name.lower() != "content-length"]
        if status not in (204, 304) and status >= 200:
            out.append(("Content-Length", str(len(body))))
        out_bytes = self.begin_answer(status, out, close=close)
        if has_body and body:
            out_bytes += self._send(h11.Data(data=body))
        return out_bytes + self.end_answer()

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
        if close or self._head is None or self._h11.their_state is not h11.DONE:
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
        return self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE

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
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head)

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


def _head_of(event: h11.Request) -> Head:
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
    )


def _h11_reason(exc: h11.RemoteProtocolError) -> str:
    # h11's own words without the bytes it quotes after them ("illegal header line:
    # b'...'"): they may hold a credential, and the reason is shown to the client.
    text = _QUOTED.split(str(exc), maxsplit=1)[0].strip()
    return text[:200] or "the request cannot be read"


def _bytes(text: str) -> bytes:
    return text.encode("latin-1", "replace")
