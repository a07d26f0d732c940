"""TLS on both sides of the import proxy: served from the web config's certificate, and
verified towards Elevate (the system's CAs, or a given bundle)."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from elevate_import_exporter.httpd.tls import TlsProvider
from elevate_import_exporter.httpd.webconfig import TlsServerConfig
from tests.test_proxy import FEED, KEY, ProxyTo, started_proxies

PATH = "/api/v2/import/products"


@pytest.fixture
def proxy_to() -> Iterator[ProxyTo]:
    yield from started_proxies()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.pem, server.pem/key from it, stranger.pem/key from a CA nobody trusts."""
    folder = tmp_path_factory.mktemp("proxy-pki")
    ca, stranger = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    for name, issuer in (("server", ca), ("stranger", stranger)):
        cert = issuer.issue_cert("localhost", "127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(str(folder / f"{name}.pem"))
        cert.private_key_pem.write_to_path(str(folder / f"{name}.key"))
    return folder


class _Elevate(BaseHTTPRequestHandler):
    """An HTTPS Elevate that accepts every import, and says whose key it got."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"id": "4242", "status": "WAITING", "type": "PRODUCTS"}).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Key-Seen", str(self.headers["Api-Key"] == KEY))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def https_elevate(pki: Path) -> Iterator[Any]:
    """``https_elevate(name)``: the URL of an HTTPS upstream with certificate ``name``."""
    servers: list[ThreadingHTTPServer] = []

    def start(name: str) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Elevate)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki / f"{name}.pem", pki / f"{name}.key")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"https://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_feed_goes_over_tls_both_ways_and_is_tracked(
    pki: Path, proxy_to: ProxyTo, https_elevate: Any
) -> None:
    tls = TlsProvider(TlsServerConfig(cert_file=pki / "server.pem", key_file=pki / "server.key"))
    run = proxy_to(https_elevate("server"), tls=tls, ca_bundle=str(pki / "ca.pem"))
    client = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    conn = http.client.HTTPSConnection("127.0.0.1", run.port, context=client, timeout=30)
    conn.request("POST", PATH, body=FEED, headers={"Api-Key": KEY})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 202
    assert response.getheader("X-Key-Seen") == "True"
    assert json.loads(body)["id"] == "4242"
    run.wait_answered(1)
    assert [r.id for r in run.registered] == ["4242"]


def test_elevate_with_a_certificate_nobody_vouches_for_is_a_502(
    pki: Path, proxy_to: ProxyTo, https_elevate: Any
) -> None:
    run = proxy_to(https_elevate("stranger"), ca_bundle=str(pki / "ca.pem"))
    got = run.send("POST", PATH, FEED, {"Api-Key": KEY})
    assert got.status == 502
    assert json.loads(got.body)["message"] == "Elevate's TLS certificate was not verified."
    run.wait_answered(1)
    assert run.metrics().value(
        "elevate_import_proxy_upstream_errors_total", reason="connection_error"
    )
    assert run.registered == []
