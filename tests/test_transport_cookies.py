"""The status requests keep no state between them: what Elevate (or a proxy in front of
it) sets in a cookie is neither stored nor sent back."""

from __future__ import annotations

import threading
import time

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from elevate_import_exporter import __version__
from elevate_import_exporter.core.secret import Secret
from elevate_import_exporter.elevate.transport import Transport


def test_a_cookie_elevate_sets_is_not_sent_back_on_the_next_status_request(
    httpserver: HTTPServer,
) -> None:
    seen: list[str | None] = []

    def answer(request: Request) -> Response:
        seen.append(request.headers.get("Cookie"))
        response = Response(b'{"ok": true}', 200, content_type="application/json")
        response.headers["Set-Cookie"] = f"session={'x' * 100}{len(seen)}; Path=/"
        return response

    httpserver.expect_request("/status").respond_with_handler(answer)
    transport = Transport(httpserver.url_for("/"), Secret("k3y"), user_agent=f"test/{__version__}")
    try:
        for _ in range(3):
            deadline = time.monotonic() + 10
            transport.get(httpserver.url_for("/status"), {}, bytes, deadline, threading.Event())
    finally:
        transport.close()
    assert seen == [None, None, None]
