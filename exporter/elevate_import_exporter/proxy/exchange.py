"""One request through the import proxy: its head and body to Elevate, the answer back.

Both bodies stream in pieces of at most 512 KiB; only a small answer that may hold an
import id (a 202, or any 2xx to an import request) is also kept, up to 64 KiB, for the
tracking that follows once the client has its answer. The client's headers go on except
hop-by-hop ones, Host becomes Elevate's, and Expect is the proxy's business: it answers
``100 Continue`` itself once Elevate is reachable.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus

from elevate_import_exporter.httpd.http1 import Head, Http1, Refusal
from elevate_import_exporter.proxy.http1 import (
    BODY_IDLE_SECONDS,
    CHUNK,
    LAST_CHUNK,
    BadRequest,
    BodyClock,
    BodyStalled,
    ClientGone,
    Reader,
    Writer,
    chunked,
    end_to_end,
)
from elevate_import_exporter.proxy.stats import CLIENT_GONE, ProxyStats, reason_for_status
from elevate_import_exporter.proxy.tracking import MAX_PARSED_BYTES, import_type
from elevate_import_exporter.proxy.upstream import (
    Upstream,
    UpstreamError,
    failure,
    wait_for_answer,
)

log = logging.getLogger(__name__)

# Methods that change nothing at Elevate: when their client closes its side before the
# answer, the request upstream ends with it (an answer nobody waits for is worth nothing).
# After any other request, sent whole, a client's end of sending may be a half-close
# that still waits for the answer, and the import it started exists either way.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_BAD_TEXT = str.maketrans(dict.fromkeys((*map(chr, range(32)), "\x7f"), " "))


class Client:
    """The connection to a feed job: its socket, read through :class:`Reader` and the
    one HTTP/1.1 parser, which also writes every answer to it."""

    def __init__(
        self, sock: socket.socket, peer: str, timeout: float, clock: BodyClock, http1: Http1
    ) -> None:
        self.sock = sock
        self.peer = peer
        self.timeout = timeout
        self.clock = clock
        sock.settimeout(timeout)
        self.reader = Reader(sock, self.clock, http1)
        self.http1 = self.reader.http1
        self._writer = Writer(sock)

    def send(self, *pieces: bytes) -> None:
        try:
            self._writer.send(pieces)
        except (OSError, ValueError) as exc:
            raise ClientGone(f"writing the answer failed: {type(exc).__name__}") from None


@dataclass
class Outcome:
    """How an exchange ended. ``code``: what the client was answered (499: nothing);
    ``body``: the answer's body if kept for tracking (whole, at most 64 KiB)."""

    code: int
    keep_alive: bool = False
    kind: str | None = None
    body: bytes | None = None
    content_encoding: str = ""


class Exchange:
    """Forwards one request of ``client`` to ``upstream``."""

    def __init__(
        self,
        upstream: Upstream,
        stats: ProxyStats,
        client: Client,
        head: Head,
        *,
        extra: Sequence[tuple[str, str]] = (),
        drop: frozenset[str] = frozenset(),
    ) -> None:
        self.upstream = upstream
        self.stats = stats
        self.client = client
        self.head = head
        self.extra_headers = extra
        self.drop = drop  # further request headers that stay here (the proxy's own auth)
        self.kind = import_type(head.path)

    def run(self, *, closing: Callable[[], bool]) -> Outcome:
        """Forward the request and its answer; ``closing()`` is asked as the answer begins
        whether the connection is to end after it (the server is stopping)."""
        try:
            conn = self.upstream.connect()
        except UpstreamError as exc:
            return self._failed(exc)
        try:
            return self._through(conn, closing=closing)
        finally:
            conn.close()  # also what tells Elevate that a client left mid-request

    def _through(self, conn: http.client.HTTPConnection, *, closing: Callable[[], bool]) -> Outcome:
        try:
            try:
                self._send_head(conn)
            except ValueError:  # http.client's message would quote the header, key or not
                raise BadRequest(400, "A header of the request cannot be forwarded.") from None
            if self.head.has_body and self.client.http1.expects_continue:
                self.client.send(self.client.http1.continue_())
            sent_whole = self._send_body(conn)
            assert conn.sock is not None
            stay = self.head.method not in _SAFE_METHODS
            if not wait_for_answer(conn.sock, self.client.sock, self.upstream.timeout, stay=stay):
                raise ClientGone("the client left while Elevate was working on the request")
            response = conn.getresponse()
        except ClientGone as exc:
            if isinstance(exc, BodyStalled) or self.client.clock.evicted:
                log.info("proxy %s %s: the body came too slowly", self.client.peer, self.head.path)
                self.error(408, "The request body came too slowly.")
                return Outcome(408, kind=self.kind)
            log.info("proxy %s %s: %s", self.client.peer, self.head.method, exc)
            return Outcome(CLIENT_GONE, kind=self.kind)
        except Refusal as exc:  # the body's framing is broken
            self.error(exc.status, exc.reason)
            return Outcome(exc.status, kind=self.kind)
        except BadRequest as exc:
            self.error(exc.status, exc.message)
            return Outcome(exc.status, kind=self.kind)
        except Exception as exc:  # failure() raises what is not about the connection
            return self._failed(failure(exc))
        return self._answer(response, sent_whole and not closing())

    def _send_head(self, conn: http.client.HTTPConnection) -> None:
        head = self.head
        listed = head.tokens("connection") | self.drop
        conn.putrequest(
            head.method,
            self.upstream.prefix + head.target,
            skip_host=True,
            skip_accept_encoding=True,
        )
        conn.putheader("Host", self.upstream.host_header)
        for name, value in end_to_end(head.headers, listed):
            if name.lower() not in ("host", "content-length", "expect"):
                conn.putheader(name, value)
        if head.chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        elif head.get("content-length") is not None:
            conn.putheader("Content-Length", str(head.length))
        conn.endheaders()

    def _send_body(self, conn: http.client.HTTPConnection) -> bool:
        """Stream the client's body to Elevate; False if Elevate stopped taking it (it may
        have answered early, say a 403 before the upload's end).

        A request without a body is read to its end here too: the parser then knows it
        whole, and the connection may carry the next one."""
        head = self.head
        if not head.has_body:
            for _batch in self.client.reader.body():
                pass
            return True
        assert conn.sock is not None
        upstream = Writer(conn.sock)
        clock = self.client.clock
        clock.begin()
        self.client.sock.settimeout(min(self.client.timeout, BODY_IDLE_SECONDS))
        try:
            for batch in self.client.reader.body():
                try:
                    upstream.send(chunked(batch) if head.chunked else batch)
                except TimeoutError:
                    raise
                except OSError:
                    return False
                self.stats.moved("upload", sum(len(piece) for piece in batch))
        finally:
            clock.end()
            with contextlib.suppress(OSError):
                self.client.sock.settimeout(self.client.timeout)
        if head.chunked:
            try:
                upstream.send([LAST_CHUNK])
            except TimeoutError:
                raise
            except OSError:
                return False
        return True

    def _answer(self, response: http.client.HTTPResponse, keep: bool) -> Outcome:
        status = response.status
        reason = reason_for_status(status)
        if reason is not None:
            self.stats.upstream_error(reason)
        has_body = not (self.head.method == "HEAD" or status in (204, 304) or status < 200)
        listed = {t.strip().lower() for t in (response.getheader("connection") or "").split(",")}
        headers = [
            (name, value.translate(_BAD_TEXT))
            for name, value in end_to_end(response.getheaders(), listed)
            if not (has_body and name.lower() == "content-length")
        ]
        # Without a length, the parser frames the answer: chunked for an HTTP/1.1 client,
        # up to the connection's end for an HTTP/1.0 one.
        if has_body and not response.chunked and response.length is not None:
            headers.append(("Content-Length", str(response.length)))
        present = {name.lower() for name, _value in headers}
        headers += [(n, v) for n, v in self.extra_headers if n.lower() not in present]
        encoding = response.getheader("content-encoding") or ""
        outcome = Outcome(status, False, self.kind, content_encoding=encoding)
        kept = bytearray() if has_body and (status == 202 or self._finished(status)) else None
        http1 = self.client.http1
        try:
            self.client.send(http1.begin_answer(status, headers, close=not keep))
            self._relay(response, kept)
            outcome.keep_alive = keep and http1.reusable
        except ClientGone as exc:
            log.info("proxy %s %s: %s", self.client.peer, self.head.method, exc)
            # The import exists all the same: read on to track it.
            if kept is not None and not self._keep_rest(response, kept):
                kept = None
        except Exception as exc:  # the answer broke off upstream: the client sees it cut
            kept = None
            log.warning("proxy %s: Elevate's answer broke off: %s", self.client.peer, failure(exc))
        if kept is not None and len(kept) <= MAX_PARSED_BYTES:
            outcome.body = bytes(kept)
        return outcome

    def _finished(self, status: int) -> bool:
        return self.kind is not None and 200 <= status < 300

    def _relay(self, response: http.client.HTTPResponse, kept: bytearray | None) -> None:
        """Stream the answer's body to the client, keeping a copy in ``kept`` up to just
        over 64 KiB. Raises if Elevate's answer ends early: the client then sees a body
        shorter than announced, or no last chunk, and so knows it is incomplete."""
        http1 = self.client.http1
        while piece := response.read1(CHUNK):
            if kept is not None and len(kept) <= MAX_PARSED_BYTES:
                kept += piece
            self.client.send(*http1.answer_piece(piece))
            self.stats.moved("download", len(piece))
        if response.length:  # announced more than it sent
            raise UpstreamError("connection_error", "Elevate's answer ended early.")
        self.client.send(http1.end_answer())

    def _keep_rest(self, response: http.client.HTTPResponse, kept: bytearray) -> bool:
        try:
            while len(kept) <= MAX_PARSED_BYTES and (piece := response.read1(CHUNK)):
                kept += piece
        except Exception:
            return False
        return not response.length

    def _failed(self, exc: UpstreamError) -> Outcome:
        self.stats.upstream_error(exc.reason)
        log.warning(
            "proxy %s %s %s: %s", self.client.peer, self.head.method, self.head.path, exc.message
        )
        self.error(exc.status, exc.message)
        return Outcome(exc.status, kind=self.kind)

    def error(self, status: int, message: str) -> None:
        send_error(self.client, status, message, self.extra_headers)


def send_error(
    client: Client,
    status: int,
    message: str,
    extra_headers: Sequence[tuple[str, str]] = (),
    more: Sequence[tuple[str, str]] = (),
) -> None:
    """Answer ``status`` with a short JSON error and ``Connection: close`` (the request's
    body may be unread); a client gone by then is no matter."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = json.dumps({"error": phrase, "message": message}).encode()
    headers = [("Content-Type", "application/json"), *more]
    present = {name.lower() for name, _value in more}
    headers += [(n, v) for n, v in extra_headers if n.lower() not in present]
    with contextlib.suppress(ClientGone):
        client.send(client.http1.answer(status, headers, body, close=True))
