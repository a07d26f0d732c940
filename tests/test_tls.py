"""HTTPS from a web-config ``tls_server_config``: certificates made here by trustme, real
clients (ssl sockets, requests, curl) against the real connection loop on loopback."""

from __future__ import annotations

import select
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme

from elevate_import_exporter.httpd.connections import Connections
from elevate_import_exporter.httpd.messages import Answer, Request
from elevate_import_exporter.httpd.tls import TlsProvider, peer_sans, server_context
from elevate_import_exporter.httpd.webconfig import TlsServerConfig, WebConfigError, load_web_config
from tests.support import need_tool, wait_until

SCRAPER = "scraper.example"


@dataclass(frozen=True)
class Pki:
    """A CA with a server certificate and client certificates, as files in ``folder``."""

    folder: Path
    ca: trustme.CA

    def path(self, name: str) -> Path:
        return self.folder / name

    @property
    def ca_file(self) -> Path:
        return self.path("ca.pem")

    def server_config(self, **options: Any) -> TlsServerConfig:
        base = TlsServerConfig(cert_file=self.path("server.pem"), key_file=self.path("server.key"))
        return replace(base, **options)

    def client(self, name: str | None = None, **versions: ssl.TLSVersion) -> ssl.SSLContext:
        """A client that trusts our CA, presenting ``name``'s certificate if given."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if name:
            context.load_cert_chain(self.path(f"{name}.pem"), self.path(f"{name}.key"))
        for attribute, version in versions.items():
            setattr(context, attribute, version)
        return context


def write_pair(cert: trustme.LeafCert, folder: Path, name: str) -> None:
    """Certificate and key written as a rotation would: each file replaced at once."""
    for suffix, blob in ((".pem", cert.cert_chain_pems[0]), (".key", cert.private_key_pem)):
        part = folder / f"{name}{suffix}.new"
        blob.write_to_path(str(part))
        part.replace(folder / f"{name}{suffix}")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, stranger = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    write_pair(ca.issue_cert("localhost", "127.0.0.1"), folder, "server")
    write_pair(ca.issue_cert(SCRAPER), folder, "scraper")
    write_pair(ca.issue_cert("someone-else.example"), folder, "other")
    write_pair(stranger.issue_cert(SCRAPER), folder, "stranger")
    return Pki(folder, ca)


def respond(request: Request) -> Answer:
    return Answer(200, (), b"ok " + request.path.encode())


@dataclass
class Served:
    connections: Connections
    provider: TlsProvider

    @property
    def port(self) -> int:
        return self.connections.port

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


Serve = Callable[..., Served]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(config or provider, header_timeout=..., ...)``: TLS Connections, in a thread."""
    started: list[tuple[Connections, threading.Thread]] = []

    def start(
        config: TlsServerConfig | TlsProvider,
        header_timeout: float = 10.0,
        max_threads: int = 4,
        the_respond: Callable[[Request], Answer] = respond,
    ) -> Served:
        provider = config if isinstance(config, TlsProvider) else TlsProvider(config)
        listener = socket.create_server(("127.0.0.1", 0))
        connections = Connections(
            listener,
            the_respond,
            header_timeout=header_timeout,
            idle_timeout=10.0,
            max_threads=max_threads,
            max_connections=1000,
            write_timeout=10.0,
            tls=provider,
        )
        thread = threading.Thread(target=connections.serve_forever, daemon=True)
        thread.start()
        started.append((connections, thread))
        return Served(connections, provider)

    yield start
    for connections, thread in started:
        connections.shutdown()
        thread.join()
        connections.close()


@contextmanager
def tls_connection(port: int, client: ssl.SSLContext) -> Iterator[ssl.SSLSocket]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        client.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        yield sock


def open_files() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def ask(port: int, client: ssl.SSLContext, path: str = "/-/healthy") -> str | None:
    """The answer to one GET over TLS, or None when the server would not talk to us."""
    try:
        with tls_connection(port, client) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            answer = sock.recv(65536)
            return answer.decode() if answer else None
    except (ssl.SSLError, ConnectionError):
        return None


def serial(port: int, client: ssl.SSLContext) -> str:
    with tls_connection(port, client) as sock:
        peer = sock.getpeercert()
        assert peer is not None
        return str(peer["serialNumber"])


# -- HTTPS with real clients --------------------------------------------------------------


def test_requests_gets_an_answer_over_https_on_a_kept_alive_connection(
    pki: Pki, serve: Serve
) -> None:
    served = serve(pki.server_config())
    with requests.Session() as session:
        for path in ("/-/healthy", "/metrics", "/-/ready"):
            answer = session.get(served.url + path, verify=str(pki.ca_file), timeout=10)
            assert answer.status_code == 200
            assert answer.text == f"ok {path}"


def test_curl_gets_an_answer_over_https_with_a_client_certificate(pki: Pki, serve: Serve) -> None:
    curl = need_tool("curl")
    served = serve(
        pki.server_config(client_auth_type="RequireAndVerifyClientCert", client_ca_file=pki.ca_file)
    )
    client = ["--cert", str(pki.path("scraper.pem")), "--key", str(pki.path("scraper.key"))]
    done = subprocess.run(
        [curl, "-sS", "--cacert", str(pki.ca_file), *client, served.url + "/metrics"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "ok /metrics"), done.stderr


def test_pipelined_requests_and_a_head_over_several_tls_records_are_all_answered(
    pki: Pki, serve: Serve
) -> None:
    served = serve(pki.server_config())
    filler = "x" * 40_000  # more than two TLS records of 16 KiB
    heads = [f"GET /{n} HTTP/1.1\r\nHost: x\r\nX-Fill: {filler}\r\n\r\n" for n in range(3)]
    with tls_connection(served.port, pki.client()) as sock:
        sock.sendall("".join(heads).encode())
        received = b""
        while received.count(b"HTTP/1.1 200") < 3 or not received.endswith(b"ok /2"):
            chunk = sock.recv(65536)
            assert chunk, f"closed after {received!r}"
            received += chunk
    bodies = [received.index(b"ok /%d" % n) for n in range(3)]
    assert bodies == sorted(bodies)


# -- versions and ciphers -----------------------------------------------------------------


def test_a_tls12_client_is_refused_when_min_version_is_tls13(pki: Pki, serve: Serve) -> None:
    served = serve(pki.server_config(min_version="TLS13"))
    assert ask(served.port, pki.client(maximum_version=ssl.TLSVersion.TLSv1_2)) is None
    answer = ask(served.port, pki.client(minimum_version=ssl.TLSVersion.TLSv1_3))
    assert answer is not None
    assert answer.startswith("HTTP/1.1 200")


def test_max_version_and_a_chosen_tls12_cipher_suite_are_what_is_negotiated(
    pki: Pki, serve: Serve
) -> None:
    suite = "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
    served = serve(pki.server_config(max_version="TLS12", cipher_suites=(suite,)))
    with tls_connection(served.port, pki.client()) as sock:
        assert sock.version() == "TLSv1.2"
        assert (sock.cipher() or ("none",))[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
    other = pki.client()
    other.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    assert ask(served.port, other) is None


# -- client certificates ------------------------------------------------------------------


def test_no_client_certificate_is_needed_under_no_client_cert(pki: Pki, serve: Serve) -> None:
    served = serve(pki.server_config())
    assert (ask(served.port, pki.client()) or "").startswith("HTTP/1.1 200")


def test_require_and_verify_lets_in_only_a_certificate_from_the_client_ca(
    pki: Pki, serve: Serve
) -> None:
    served = serve(
        pki.server_config(client_auth_type="RequireAndVerifyClientCert", client_ca_file=pki.ca_file)
    )
    assert (ask(served.port, pki.client("scraper")) or "").startswith("HTTP/1.1 200")
    assert ask(served.port, pki.client("stranger")) is None
    assert ask(served.port, pki.client()) is None


def test_verify_if_given_lets_in_no_certificate_but_not_a_wrong_one(pki: Pki, serve: Serve) -> None:
    served = serve(
        pki.server_config(client_auth_type="VerifyClientCertIfGiven", client_ca_file=pki.ca_file)
    )
    assert (ask(served.port, pki.client()) or "").startswith("HTTP/1.1 200")
    assert (ask(served.port, pki.client("scraper")) or "").startswith("HTTP/1.1 200")
    assert ask(served.port, pki.client("stranger")) is None


def test_an_inline_client_ca_and_inline_certificate_work_like_files(pki: Pki, serve: Serve) -> None:
    config = TlsServerConfig(
        cert=pki.path("server.pem").read_text(),
        key=pki.path("server.key").read_text(),
        client_ca=pki.ca_file.read_text(),
        client_auth_type="RequireAndVerifyClientCert",
    )
    served = serve(config)
    assert (ask(served.port, pki.client("scraper")) or "").startswith("HTTP/1.1 200")
    assert ask(served.port, pki.client()) is None


def test_client_allowed_sans_admits_a_listed_name_and_turns_away_another(
    pki: Pki, serve: Serve
) -> None:
    served = serve(
        pki.server_config(
            client_auth_type="RequireAndVerifyClientCert",
            client_ca_file=pki.ca_file,
            client_allowed_sans=(SCRAPER,),
        )
    )
    assert (ask(served.port, pki.client("scraper")) or "").startswith("HTTP/1.1 200")
    assert ask(served.port, pki.client("other")) is None


def test_sans_are_compared_in_the_form_go_prints_them() -> None:
    peer = {
        "subjectAltName": (
            ("DNS", "a.example"),
            ("IP Address", "2001:DB8:0:0:0:0:0:1\n"),
            ("IP Address", "127.0.0.1"),
            ("email", "ops@example.com"),
            ("URI", "spiffe://example/scraper"),
            ("DirName", "ignored"),
        )
    }
    assert peer_sans(peer) == [
        "a.example",
        "2001:db8::1",
        "127.0.0.1",
        "ops@example.com",
        "spiffe://example/scraper",
    ]


# -- what cannot be honoured is refused ---------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"client_auth_type": "RequireAnyClientCert"}, "client_auth_type"),
        ({"client_auth_type": "Sometimes"}, "client_auth_type"),
        ({"min_version": "TLS11"}, "min_version"),
        ({"min_version": "TLS13", "max_version": "TLS12"}, "max_version"),
        ({"cipher_suites": ("TLS_AES_128_GCM_SHA256",)}, "cipher_suites"),
        ({"cipher_suites": ("TLS_RSA_WITH_RC4_128_SHA",)}, "cipher_suites"),
        ({"curve_preferences": ("X25519", "CurveP256")}, "curve_preferences"),
        ({"curve_preferences": ("CurveP224",)}, "curve_preferences"),
        ({"client_allowed_sans": (SCRAPER,)}, "client_allowed_sans"),
        (
            {"client_auth_type": "RequestClientCert", "client_allowed_sans": (SCRAPER,)},
            "client_allowed_sans",
        ),
        ({"client_ca_file": Path("ca.pem")}, "client_ca_file"),
        ({"key_file": None}, "key_file"),
    ],
)
def test_a_setting_python_cannot_honour_is_refused_naming_its_key(
    pki: Pki, options: dict[str, Any], key: str
) -> None:
    with pytest.raises(WebConfigError, match=f"tls_server_config.{key}: "):
        server_context(pki.server_config(**options))


def test_a_certificate_and_a_key_that_do_not_match_are_refused(pki: Pki) -> None:
    with pytest.raises(WebConfigError, match="key_file: cannot load"):
        server_context(pki.server_config(key_file=pki.path("other.key")))
    with pytest.raises(WebConfigError, match="No such file"):
        server_context(pki.server_config(cert_file=pki.path("missing.pem")))


def test_request_client_cert_and_one_curve_are_served(pki: Pki, serve: Serve) -> None:
    served = serve(
        pki.server_config(client_auth_type="RequestClientCert", curve_preferences=("CurveP384",))
    )
    assert (ask(served.port, pki.client("stranger")) or "").startswith("HTTP/1.1 200")


# -- rotation -----------------------------------------------------------------------------


def test_a_rotated_certificate_is_served_to_new_connections_without_a_restart(
    pki: Pki, serve: Serve, tmp_path: Path
) -> None:
    write_pair(pki.ca.issue_cert("localhost", "127.0.0.1"), tmp_path, "server")
    config = TlsServerConfig(cert_file=tmp_path / "server.pem", key_file=tmp_path / "server.key")
    served = serve(config)
    first = serial(served.port, pki.client())
    write_pair(pki.ca.issue_cert("localhost", "127.0.0.1"), tmp_path, "server")
    second = serial(served.port, pki.client())
    assert second != first


def test_a_half_done_rotation_keeps_the_old_certificate_until_the_key_arrives(
    pki: Pki, serve: Serve, tmp_path: Path
) -> None:
    write_pair(pki.ca.issue_cert("localhost", "127.0.0.1"), tmp_path, "server")
    served = serve(
        TlsServerConfig(cert_file=tmp_path / "server.pem", key_file=tmp_path / "server.key")
    )
    first = serial(served.port, pki.client())
    new = pki.ca.issue_cert("localhost", "127.0.0.1")
    new.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem.new"))
    (tmp_path / "server.pem.new").replace(tmp_path / "server.pem")
    assert serial(served.port, pki.client()) == first  # certificate without its key: kept
    new.private_key_pem.write_to_path(str(tmp_path / "server.key.new"))
    (tmp_path / "server.key.new").replace(tmp_path / "server.key")
    assert serial(served.port, pki.client()) != first


# -- handshakes that never finish ---------------------------------------------------------


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    readable, _, _ = select.select([sock], [], [], timeout)
    if not readable:
        return False
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def test_100_unfinished_handshakes_hold_no_thread_and_are_cut_at_the_header_timeout(
    pki: Pki, serve: Serve
) -> None:
    served = serve(pki.server_config(), header_timeout=3.0, max_threads=4)
    threads = threading.active_count()
    partial_client_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    with ExitStack() as stack:
        stalled = []
        for n in range(100):
            sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
            stack.callback(sock.close)
            if n % 2:
                sock.sendall(partial_client_hello)
            stalled.append(sock)
        with requests.Session() as session:
            for _ in range(5):
                answer = session.get(served.url + "/-/healthy", verify=str(pki.ca_file), timeout=5)
                assert answer.text == "ok /-/healthy"
        # The pool starts its handler threads as requests need them (at most max_threads=4);
        # the 100 stalled handshakes, held by the loop alone, start none.
        assert threading.active_count() <= threads + 4
        assert all(closed_by_peer(sock, 20) for sock in stalled)


def test_a_file_descriptor_is_given_back_for_every_failed_handshake(pki: Pki, serve: Serve) -> None:
    served = serve(
        pki.server_config(client_auth_type="RequireAndVerifyClientCert", client_ca_file=pki.ca_file)
    )
    before = open_files()
    for _ in range(50):
        assert ask(served.port, pki.client()) is None
    wait_until(lambda: open_files() <= before + 2, what="descriptors back")


def test_a_changed_tls_setting_in_the_watched_config_applies_to_new_connections(
    pki: Pki, serve: Serve
) -> None:
    current: list[TlsServerConfig | None] = [pki.server_config()]
    served = serve(TlsProvider(lambda: current[0]))
    assert (ask(served.port, pki.client()) or "").startswith("HTTP/1.1 200")
    current[0] = pki.server_config(
        client_auth_type="RequireAndVerifyClientCert", client_ca_file=pki.ca_file
    )
    assert ask(served.port, pki.client()) is None
    current[0] = None  # TLS taken out of the file: kept, as whether to serve TLS is fixed
    assert ask(served.port, pki.client()) is None
    assert (ask(served.port, pki.client("scraper")) or "").startswith("HTTP/1.1 200")


def test_the_example_web_config_builds_a_server_context_that_requires_a_client_certificate(
    pki: Pki, tmp_path: Path
) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "web-config.yml"
    (tmp_path / "web-config.yml").write_text(example.read_text())
    for name, source in (("server.crt", "server.pem"), ("server.key", "server.key")):
        (tmp_path / name).write_bytes(pki.path(source).read_bytes())
    (tmp_path / "client-ca.crt").write_bytes(pki.ca_file.read_bytes())
    config = load_web_config(tmp_path / "web-config.yml")
    assert config.tls is not None
    assert server_context(config.tls).verify_mode == ssl.CERT_REQUIRED
