"""Where a request ends: its head, and the body its ``Content-Length`` announces; and a
connection's bytes until it does.

The loop that waits for a body (:mod:`~elevate_import_exporter.httpd.connections`) and the
handler that answers the request (:mod:`~elevate_import_exporter.site.web`) both decide from
:func:`framing` over headers parsed by the same stdlib function, so they cannot disagree
on where one request ends and the next begins: the disagreement request smuggling needs.
Every framing that is not a plain, single ``Content-Length`` within bounds is refused,
and so is a head with a header line that is not ``name: value``: the stdlib parser would
end the headers at such a line and drop those after it (``Content-Length`` among them),
so that the body would be taken for the next request.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import re
import socket
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
HEAD_END = re.compile(rb"\r?\n\r?\n")
# Digits only: int() would also take "+5", " 5", "1_0" and other scripts' digits.
_LENGTH = re.compile(r"[0-9]{1,19}")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# RFC 9110 field-line: a token, a colon right after it, and a value of visible characters,
# spaces, tabs and obs-text. No whitespace before the colon (RFC 9112 5.1), no line folded
# onto the one before (obs-fold), no control character anywhere.
_FIELD_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*")


@dataclass(frozen=True, slots=True)
class Framing:
    """``length`` body bytes follow the head; or, with ``refusal``, the request is answered
    with that status and the connection closed, its body (if any) never read."""

    length: int = 0
    refusal: HTTPStatus | None = None
    reason: str = ""
    expect_continue: bool = False
    unreadable: bool = False  # a header line is not "name: value": no header is trusted


NO_BODY = Framing()


def framing(headers: Message) -> Framing:
    """How the body of a request with ``headers`` is framed, or why it is refused."""
    lengths = headers.get_all("Content-Length") or []
    if headers.get_all("Transfer-Encoding"):
        if lengths:
            return _refuse(HTTPStatus.BAD_REQUEST, "both Content-Length and Transfer-Encoding")
        return _refuse(
            HTTPStatus.LENGTH_REQUIRED,
            "Transfer-Encoding is not supported; send the body with a Content-Length",
        )
    if not lengths:
        return NO_BODY
    values = {str(value).strip() for value in lengths}
    if len(values) > 1:
        return _refuse(HTTPStatus.BAD_REQUEST, "several different Content-Length headers")
    (value,) = values
    if _LENGTH.fullmatch(value) is None:
        if value.isascii() and value.isdigit():  # too many digits to be a size we take
            return _too_large()
        return _refuse(HTTPStatus.BAD_REQUEST, "Content-Length is not a number of bytes")
    length = int(value)
    if length > MAX_BODY_BYTES:
        return _too_large()
    expect = str(headers.get("Expect", "")).strip().lower() == "100-continue"
    return Framing(length, expect_continue=expect and length > 0)


def of_head(head: bytes) -> Framing:
    """:func:`framing` of a complete request head (request line and headers), or its
    refusal when a header line cannot be read.

    A head the handler will refuse anyway (too many or too long header lines) has no body.
    """
    bad = unreadable_line(head)
    if bad is not None:
        return Framing(refusal=HTTPStatus.BAD_REQUEST, reason=bad, unreadable=True)
    lowered = head.lower()
    if b"content-length" not in lowered and b"transfer-encoding" not in lowered:
        return NO_BODY  # the common GET, without parsing its headers
    _line, _, rest = head.partition(b"\n")
    try:
        headers = http.client.parse_headers(io.BytesIO(rest))
    except http.client.HTTPException:
        return NO_BODY
    found = framing(headers)
    if found.expect_continue and not _line.rstrip().endswith(b"HTTP/1.1"):
        return Framing(found.length)
    return found


def unreadable_line(head: bytes) -> str | None:
    """Why a header line of ``head`` (request line, headers, blank line) cannot be read, or
    None when each is ``name: value``."""
    lines = head.split(b"\n")[1:]  # the request line is the handler's to judge
    for number, line in enumerate(lines, start=2):
        line = line.removesuffix(b"\r")
        if not line:
            return None  # the blank line that ends the head
        if _FIELD_LINE.fullmatch(line) is None:
            return f"header line {number} is not 'Name: value'"
    return None


def _too_large() -> Framing:
    return _refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY_BYTES} bytes")


def _refuse(status: HTTPStatus, reason: str) -> Framing:
    return Framing(refusal=status, reason=reason)


@dataclass(eq=False)
class Connection:
    """A client connection as the serving loop sees it, between two requests."""

    sock: socket.socket
    peer: str
    deadline: float  # monotonic: closed if its request is not complete by then
    since: float  # when it began to wait
    buffer: bytearray = field(default_factory=bytearray)
    idle: bool = False  # kept alive, no byte of the next request yet
    handshaking: bool = False  # TLS handshake not finished yet
    need: int = 0  # bytes of head and body, once the head is complete
    unread: bool = False  # framing refused: closed after the answer, after a lingering read

    def frame(self) -> Framing | None:
        """The framing of the request, once its head has arrived (None before)."""
        end = HEAD_END.search(self.buffer)
        if end is None:
            return None
        found = of_head(bytes(self.buffer[: end.end()]))
        self.need, self.unread = end.end() + found.length, found.refusal is not None
        return found

    def take(self) -> bytes | None:
        """The whole request (head and body), once it has arrived; the buffer keeps the rest."""
        if not self.need or len(self.buffer) < self.need:
            return None
        request = bytes(self.buffer[: self.need])
        del self.buffer[: self.need]
        self.need = 0
        return request

    def ask_for_body(self) -> None:
        """Send ``100 Continue`` to a client that waits for it before it sends its body."""
        # A few bytes: the socket takes them now, or the client sends after its own pause.
        with contextlib.suppress(OSError):
            self.sock.send(_CONTINUE)

    def linger(self, until: float) -> None:
        """Stop writing, and read (and drop) what comes until the client closes or ``until``.

        Closing with unread bytes would send a reset, which can destroy the answer before
        the client has read it.
        """
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self.sock.setblocking(False)
        self.buffer.clear()
        self.deadline = until

    def waiting_for(self) -> str:
        if self.unread:
            return "lingering after a refused request"
        if self.idle:
            return "idle keep-alive connection"
        if self.handshaking:
            return "TLS handshake not finished"
        return "incomplete request body" if self.need else "incomplete request headers"
