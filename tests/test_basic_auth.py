"""Basic auth from the web config's ``basic_auth_users``, and its extra headers, on a real
HTTP server on loopback."""

from __future__ import annotations

import base64
import http.client
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import Gauge

from elevate_import_exporter.httpd.auth import BasicAuth, parse_basic
from elevate_import_exporter.httpd.webconfig import (
    HttpServerConfig,
    WebConfig,
    WebConfigWatcher,
)
from elevate_import_exporter.site import web
from tests.support import BareSite

ALICE = bcrypt.hashpw(b"alice's secret", bcrypt.gensalt(rounds=4)).decode()
BOB = bcrypt.hashpw("bøb's sécret".encode(), bcrypt.gensalt(rounds=5)).decode()
USERS = {"alice": ALICE, "bob": BOB}
HEADERS = {"X-Frame-Options": "deny", "Strict-Transport-Security": "max-age=31536000"}
CHALLENGE = 'Basic realm="elevate-import-exporter"'


def basic(user: str | bytes, password: str | bytes) -> str:
    raw = (user.encode() if isinstance(user, str) else user) + b":"
    raw += password.encode() if isinstance(password, str) else password
    return "Basic " + base64.b64encode(raw).decode()


RIGHT = basic("alice", "alice's secret")


# -- the check itself ----------------------------------------------------------------------


def test_the_right_name_and_password_pass() -> None:
    auth = BasicAuth(USERS)
    assert auth.check(RIGHT)
    assert auth.check(basic("bob", "bøb's sécret"))


@pytest.mark.parametrize(
    "header",
    [
        basic("alice", "wrong"),
        basic("alice", "alice's secret "),
        basic("alice", ""),
        basic("bob", "alice's secret"),
        basic("Alice", "alice's secret"),
        None,
        "",
    ],
)
def test_a_wrong_or_missing_credential_fails(header: str | None) -> None:
    assert not BasicAuth(USERS).check(header)


def test_a_user_not_in_the_file_fails_even_with_a_users_password() -> None:
    # With one user, the hash an unknown name is checked against (to take as long) is hers.
    assert not BasicAuth({"alice": ALICE}).check(basic("mallory", "alice's secret"))


@pytest.mark.parametrize(
    "header",
    [
        "Basic",
        "Basic ",
        "Basic not base64!",
        "Basic YWxpY2U6YWxpY2UncyBzZWNyZXQ",  # padding missing
        " " + RIGHT,
        RIGHT.replace("Basic ", "Basic  "),
        RIGHT.replace("Basic ", "Bearer "),
        RIGHT.replace("Basic ", "Digest "),
        "Basic " + base64.b64encode(b"alice").decode(),  # no colon
        basic(b"al\xffice", "alice's secret"),  # not UTF-8
        basic("alice", b"alice's secret\xff"),
        "Basic YWxpY2U6YWxpY2UncyBzZWNyZXQ=\u00e9",
    ],
)
def test_a_malformed_header_fails(header: str) -> None:
    assert parse_basic(header) is None
    assert not BasicAuth(USERS).check(header)


def test_the_scheme_name_is_case_insensitive_as_rfc_7617_says() -> None:
    assert BasicAuth(USERS).check(RIGHT.replace("Basic ", "basic "))


def test_a_password_longer_than_bcrypt_takes_fails_without_an_error() -> None:
    assert not BasicAuth(USERS).check(basic("alice", "alice's secret" + "x" * 100))


def test_a_remembered_success_does_not_let_a_wrong_password_in() -> None:
    auth = BasicAuth(USERS)
    assert auth.check(RIGHT)
    assert auth.check(RIGHT)  # from the cache now
    assert not auth.check(basic("alice", "wrong"))
    assert not auth.check(basic("bob", "alice's secret"))
    assert not auth.check(basic("mallory", "alice's secret"))


def test_no_users_means_no_one_passes_the_check() -> None:
    assert not BasicAuth({}).check(RIGHT)


# -- on the server -------------------------------------------------------------------------


class Site(BareSite):
    def __init__(self) -> None:
        super().__init__()
        Gauge("auth_test_up", "Always 1.", registry=self.registry).set(1)


class Served:
    def __init__(self, server: web.HttpServer) -> None:
        self.server = server

    def ask(
        self, path: str, authorization: str | None = None, method: str = "GET"
    ) -> tuple[int, Mapping[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=20)
        try:
            headers = {} if authorization is None else {"Authorization": authorization}
            connection.request(method, path, headers=headers)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()


Serve = Callable[..., Served]


@pytest.fixture
def serve() -> Iterator[Serve]:
    started: list[tuple[web.HttpServer, threading.Thread]] = []

    def start(**options: object) -> Served:
        server = web.HttpServer(Site(), "127.0.0.1", 0, **options)  # type: ignore[arg-type]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread))
        return Served(server)

    yield start
    for server, thread in started:
        server.shutdown()
        thread.join()
        server.close()


CONFIG = WebConfig(http=HttpServerConfig(headers=HEADERS), basic_auth_users=USERS)


def test_metrics_answer_with_the_right_credentials(serve: Serve) -> None:
    status, _headers, body = serve(web_config=CONFIG).ask("/metrics", RIGHT)
    assert status == 200
    assert b"auth_test_up 1.0" in body


@pytest.mark.parametrize(
    "authorization",
    [None, basic("alice", "wrong"), basic("mallory", "x"), "Basic !!", "Basic YWxpY2U="],
)
@pytest.mark.parametrize("path", ["/metrics", "/", "/-/healthy", "/-/ready", "/nowhere"])
def test_every_path_answers_401_with_a_challenge_and_no_details(
    serve: Serve, authorization: str | None, path: str
) -> None:
    status, headers, body = serve(web_config=CONFIG).ask(path, authorization)
    assert status == 401
    assert headers["WWW-Authenticate"] == CHALLENGE
    assert body == b"Unauthorized.\n"


@pytest.mark.parametrize("method", ["HEAD", "POST", "PUT", "DELETE"])
def test_other_methods_need_the_credentials_too(serve: Serve, method: str) -> None:
    status, headers, _body = serve(web_config=CONFIG).ask("/metrics", None, method)
    assert status == 401
    assert headers["WWW-Authenticate"] == CHALLENGE


@pytest.mark.parametrize(
    ("path", "authorization", "status"),
    [
        ("/metrics", RIGHT, 200),
        ("/metrics", None, 401),
        ("/nowhere", RIGHT, 404),
        ("/-/healthy", None, 401),
    ],
)
def test_the_configured_headers_come_with_every_answer(
    serve: Serve, path: str, authorization: str | None, status: int
) -> None:
    answer = serve(web_config=CONFIG).ask(path, authorization)
    assert answer[0] == status
    for name, value in HEADERS.items():
        assert answer[1][name] == value


def test_headers_without_users_need_no_credentials(serve: Serve) -> None:
    config = WebConfig(http=HttpServerConfig(headers=HEADERS))
    status, headers, _body = serve(web_config=config).ask("/metrics")
    assert status == 200
    assert headers["X-Frame-Options"] == "deny"
    assert "WWW-Authenticate" not in headers


def test_health_endpoints_can_be_exempted_and_nothing_else_is(serve: Serve) -> None:
    served = serve(web_config=CONFIG, auth_exempt_paths=("/-/healthy", "/-/ready"))
    assert served.ask("/-/healthy")[0] == 200
    assert served.ask("/-/ready?probe=1")[0] == 200
    assert served.ask("/-/healthy", "Basic !!")[0] == 200  # the header is not looked at
    for path in ("/metrics", "/", "/-/healthy/../metrics", "/-/healthyx"):
        assert served.ask(path)[0] == 401, path
    assert served.ask("/-/healthy")[1]["X-Frame-Options"] == "deny"


def test_a_new_config_takes_effect_at_the_next_request(serve: Serve) -> None:
    served = serve(web_config=CONFIG)
    assert served.ask("/metrics", RIGHT)[0] == 200  # and remembered
    served.server.reload_web_config(WebConfig(basic_auth_users={"bob": BOB}))
    assert served.ask("/metrics", RIGHT)[0] == 401
    assert served.ask("/metrics", basic("bob", "bøb's sécret"))[0] == 200
    served.server.reload_web_config(None)
    assert served.ask("/metrics")[0] == 200


def test_a_watched_file_that_changes_changes_the_users(serve: Serve, tmp_path: Path) -> None:
    path = tmp_path / "web-config.yml"
    path.write_text(f"basic_auth_users:\n  alice: '{ALICE}'\n")
    served = serve(web_config=WebConfigWatcher(path, check_interval=0).current)
    assert served.ask("/metrics", RIGHT)[0] == 200
    path.write_text(f"basic_auth_users:\n  bob: '{BOB}'\n")
    assert served.ask("/metrics", RIGHT)[0] == 401
    path.write_text("basic_auth_users:\n  bob: not bcrypt\n")  # bad: bob stays
    assert served.ask("/metrics", basic("bob", "bøb's sécret"))[0] == 200
