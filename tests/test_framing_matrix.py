"""Request smuggling and framing cases sent as the same raw bytes to the exporter's server
and to the import proxy: each must get the same answer from both, the one named here
(issue 21, point 3). One in-process exporter serves both, its proxy in front of the
simulator; only the path of a request with a body differs between the two sides.

What is compared is the list of answers on the connection (their status; a 2xx with the
kind of its body, so that pipelined answers show their order) and whether the server
closed the connection afterwards: closed is an end of stream within a bound; open is a
further request on it answered.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from elevate_import_exporter.simulator import Simulator
from tests.conftest import SIM_KEY
from tests.support import Exporters

# Bounds, not pauses: each is waited out only when the server misbehaves. Wide enough for
# a loaded 2-core machine, where an answer on loopback can take seconds.
ANSWER_WAIT = 20.0
CLOSE_WAIT = 10.0
CONTINUE_WAIT = 10.0

CLOSED, OPEN, HUNG = "closed", "open", "hung (neither closed nor answering)"
LIMIT = 64 * 1024

# Valid as a registration for the server and, over the simulator's 64 bytes, an upload
# that the simulator answers 202 with an import id.
DOCUMENT = json.dumps(
    {"id": "framing-matrix", "type": "PRODUCTS", "labels": {"feed": "smuggling-cases"}}
).encode()
assert len(DOCUMENT) > 64
# Stands for the side's path of a request with a body.
POST = b"{post}"
HEAD = b"Host: x\r\nApi-Key: " + SIM_KEY.encode() + b"\r\n"
GET = b"GET /-/healthy HTTP/1.1\r\n" + HEAD + b"\r\n"


def post(*headers: bytes, body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    lines = b"".join(line + b"\r\n" for line in headers)
    return (
        b"POST " + POST + b" " + version + b"\r\n" + HEAD
        + b"Content-Type: application/json\r\n" + lines + b"\r\n" + body
    )  # fmt: skip


def length(value: int | str) -> bytes:
    return b"Content-Length: %s" % str(value).encode()


CHUNKED = b"Transfer-Encoding: chunked"


def chunked(body: bytes, extension: bytes = b"") -> bytes:
    half = len(body) // 2
    return b"%x%s\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        half, extension, body[:half], len(body) - half, body[half:]
    )  # fmt: skip


@dataclass(frozen=True)
class Seen:
    """What a client saw: every answer in order, then the connection's state."""

    answers: tuple[str, ...]
    connection: str


@dataclass(frozen=True)
class Case:
    """``parts`` are written one after the other; between two parts the client waits for
    an interim ``100 Continue``. ``finals`` is how many final answers the bytes ask for."""

    name: str
    parts: tuple[bytes, ...]
    want: Seen
    finals: int = 1


REFUSED = Seen(("400",), CLOSED)
TAKEN = Seen(("2xx json",), OPEN)
FLOOD = b"5;a=" + b"a" * (100 * 1024) + b"\r\nhello\r\n0\r\n\r\n"
FILLERS = [b"X-Filler-%02d: %s" % (n, b"f" * 1000) for n in range(70)]

CASES = [
    # 1. both framings: the proxy's upstream and this server could each pick another one
    Case("cl-and-te", (post(length(len(chunked(DOCUMENT))), CHUNKED, body=chunked(DOCUMENT)),),
         REFUSED),
    # variant: Transfer-Encoding first
    Case("te-and-cl", (post(CHUNKED, length(len(chunked(DOCUMENT))), body=chunked(DOCUMENT)),),
         REFUSED),
    # 2. two lengths
    Case("two-different-lengths", (post(length(5), length(6), body=b"hello!"),), REFUSED),
    # variant: the same length twice is one length (RFC 9110 8.6)
    Case("two-equal-lengths",
         (post(length(len(DOCUMENT)), length(len(DOCUMENT)), body=DOCUMENT),), TAKEN),
    # 3. lengths int() would take
    Case("length-with-sign", (post(length("+5"), body=b"hello"),), REFUSED),
    Case("length-with-space-inside", (post(length("1 0"), body=b"helloworld"),), REFUSED),
    # 4. chunk sizes
    Case("chunk-size-not-hex", (post(CHUNKED, body=b"zz\r\nhello\r\n0\r\n\r\n"),), REFUSED),
    # variant: a C-style prefix that a lenient strtol would read as 5
    Case("chunk-size-with-0x", (post(CHUNKED, body=b"0x5\r\nhello\r\n0\r\n\r\n"),), REFUSED),
    # 5. a chunk-size line that never ends within any sane bound
    Case("chunk-extension-flood", (post(CHUNKED, body=FLOOD),), REFUSED),
    # 6. obs-fold, with a space and with a tab
    Case("obs-fold-space", (b"GET /-/healthy HTTP/1.1\r\n" + HEAD + b"X-A: 1\r\n b\r\n\r\n",),
         REFUSED),
    Case("obs-fold-tab", (b"GET /-/healthy HTTP/1.1\r\n" + HEAD + b"X-A: 1\r\n\tb\r\n\r\n",),
         REFUSED),
    # 7. a complete head over the limit, made of fewer than 100 header lines
    Case("head-over-limit",
         (b"GET /-/healthy HTTP/1.1\r\n" + HEAD + b"\r\n".join(FILLERS) + b"\r\n\r\n",),
         Seen(("431",), CLOSED)),
    # 8. pipelining: a body, then a request right behind it in the same write
    Case("pipelined", (post(length(len(DOCUMENT)), body=DOCUMENT) + GET,),
         Seen(("2xx json", "2xx text"), OPEN), finals=2),
    # 9. a request line over the limit that has not ended yet
    Case("request-line-over-limit", (b"GET /" + b"a" * (LIMIT + 4096),), Seen(("414",), CLOSED)),
    # 10. HTTP/1.0 asking to be kept: answered, then closed
    Case("http10-keep-alive",
         (b"GET /-/healthy HTTP/1.0\r\n" + HEAD + b"Connection: keep-alive\r\n\r\n",),
         Seen(("2xx text",), CLOSED)),
    # 11. the body only once the server asked for it
    Case("expect-100-continue",
         (post(length(len(DOCUMENT)), b"Expect: 100-continue"), DOCUMENT),
         Seen(("100", "2xx json"), OPEN)),
    # chunked bodies that are well-formed are taken (the server answers 411 today)
    Case("chunked-well-formed", (post(CHUNKED, body=chunked(DOCUMENT)),), TAKEN),
    # variant: a short chunk extension is allowed and ignored
    Case("chunked-with-extension", (post(CHUNKED, body=chunked(DOCUMENT, b";name=v")),), TAKEN),
]  # fmt: skip


@dataclass(frozen=True)
class Side:
    name: str
    port: int
    post_path: bytes


@pytest.fixture(scope="module")
def sides() -> Iterator[list[Side]]:
    with Simulator(api_key=SIM_KEY) as simulator:
        exporters = Exporters()
        exporter = exporters.start(
            simulator.url, (), enable_registration=True, proxy_listen_address="127.0.0.1:0"
        )
        try:
            yield [
                Side("server", exporter.port, b"/api/v1/imports"),
                Side("proxy", exporter.proxy.ports[0], b"/api/v2/import/products"),
            ]
        finally:
            exporters.stop_all()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_framing_case_gets_the_same_named_answer_from_the_server_and_the_proxy(
    sides: list[Side], case: Case
) -> None:
    got = {side.name: exchange(side, case) for side in sides}
    assert got == {side.name: case.want for side in sides}


# -- a raw client ---------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def label(self) -> str:
        if not 200 <= self.status < 300:
            return str(self.status)
        kind = self.headers.get("content-type", "").split(";")[0].strip()
        return "2xx json" if kind == "application/json" else "2xx text"


@dataclass
class Peer:
    """One client connection: its unread bytes, and whether the server ended it."""

    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)
    ended: bool = False

    def send(self, data: bytes) -> bool:
        """False when the server no longer takes bytes (it may still have answered)."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def answer(self, wait: float) -> Answer | None:
        """The next whole answer, or None at the end of the stream or after ``wait``."""
        deadline = time.monotonic() + wait
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if not self._fill(deadline):
                return None
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        status = int(head[0].split(" ")[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status < 200 or status in (204, 304):
            return Answer(status, headers, b"")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return Answer(status, headers, self._chunks(deadline))
        if "content-length" in headers:
            return Answer(status, headers, self._take(int(headers["content-length"]), deadline))
        while self._fill(deadline):  # delimited by the end of the connection
            pass
        return Answer(status, headers, self._take(len(self.buffer), deadline))

    def closes(self, wait: float, seen: list[Answer]) -> bool:
        """Whether the server ends the connection within ``wait``; answers before are kept."""
        deadline = time.monotonic() + wait
        while (found := self.answer(deadline - time.monotonic())) is not None:
            seen.append(found)
        return self.ended

    def _take(self, count: int, deadline: float) -> bytes:
        while len(self.buffer) < count and self._fill(deadline):
            pass
        taken = bytes(self.buffer[:count])
        del self.buffer[:count]
        return taken

    def _line(self, deadline: float) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0 and self._fill(deadline):
            pass
        return self._take(end + 2 if end >= 0 else len(self.buffer), deadline)

    def _chunks(self, deadline: float) -> bytes:
        body = b""
        while (size := int(self._line(deadline).split(b";")[0] or b"0", 16)) > 0:
            body += self._take(size, deadline)
            self._line(deadline)
        while self._line(deadline) not in (b"\r\n", b""):
            pass
        return body

    def _fill(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if self.ended or left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:  # a reset ends the connection as well
            data = b""
        if not data:
            self.ended = True
            return False
        self.buffer += data
        return True


def exchange(side: Side, case: Case) -> Seen:
    """Send ``case`` to ``side`` and see what comes back, and whether the connection ends."""
    parts = [part.replace(POST, side.post_path) for part in case.parts]
    with socket.create_connection(("127.0.0.1", side.port), timeout=ANSWER_WAIT) as sock:
        peer = Peer(sock)
        seen: list[Answer] = []
        finals = 0
        for number, part in enumerate(parts):
            if not peer.send(part) or number == len(parts) - 1:
                break
            # A client that asked to be told waits for the interim answer (curl: a second).
            interim = peer.answer(CONTINUE_WAIT)
            if interim is not None:
                seen.append(interim)
                if interim.status >= 200:
                    finals += 1
                    break
        while finals < case.finals and (found := peer.answer(ANSWER_WAIT)) is not None:
            seen.append(found)
            finals += int(found.status >= 200)
        if case.want.connection == CLOSED or peer.ended:
            state = CLOSED if peer.closes(CLOSE_WAIT, seen) else probe(peer)
        else:
            state = probe(peer)
    return Seen(tuple(answer.label for answer in seen), state)


def probe(peer: Peer) -> str:
    """Whether one more request on the connection is answered."""
    if not peer.send(GET):
        return CLOSED
    if peer.answer(ANSWER_WAIT) is not None:
        return OPEN
    return CLOSED if peer.ended else HUNG
