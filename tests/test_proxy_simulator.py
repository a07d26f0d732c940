"""The simulator takes imports, as the proxy's tests and the demo need: a subset of Elevate's
import endpoints, bodies read and hashed, 202 with fresh ids that move through statuses."""

from __future__ import annotations

import hashlib
import http.client
import json
from collections.abc import Iterator

import pytest

from elevate_import_exporter.simulator import FeedJob, Simulator, Step, demo_feeds
from tests.support import wait_until
from tests.test_proxy import FEED, KEY, ProxyTo, send, started_proxies


def port_of(sim: Simulator) -> int:
    return int(sim.url.rsplit(":", 1)[1])


def test_a_large_import_is_accepted_with_a_fresh_id_the_status_endpoint_then_follows() -> None:
    with Simulator(api_key=KEY) as sim:
        sim.import_desk.steps = (Step("WAITING", queries=1), Step("FAILURE", message="No title"))
        first = send(port_of(sim), "POST", "/api/v2/import/panels", FEED, {"Api-Key": KEY})
        second = send(port_of(sim), "PUT", "/api/v2/import/panels?name=x", FEED, {"Api-Key": KEY})
        assert first.status == second.status == 202
        ids = [json.loads(a.body)["id"] for a in (first, second)]
        assert ids[0] != ids[1]
        assert json.loads(first.body) == {"id": ids[0], "status": "WAITING", "type": "PANELS"}
        statuses = [
            json.loads(
                send(
                    port_of(sim), "GET", f"/api/v2/import/status/{ids[0]}", None, {"Api-Key": KEY}
                ).body
            )
            for _ in range(2)
        ]
        assert [s["status"] for s in statuses] == ["WAITING", "FAILURE"]
        assert statuses[1]["message"] == "No title"
        assert [u.import_id for u in sim.uploads] == ids
        assert sim.uploads[0].sha256 == hashlib.sha256(FEED).hexdigest()


@pytest.mark.parametrize("api", ["admin-v4", "admin-v3"])
def test_the_admin_api_takes_data_imports_and_answers_ids_as_exact_numbers(api: str) -> None:
    version = api.removeprefix("admin-")
    with Simulator(api=api, api_key=KEY) as sim:
        got = send(
            port_of(sim), "POST", f"/api/admin/{version}/import/data", FEED, {"Api-Key": KEY}
        )
        assert got.status == 202
        number = json.loads(got.body)["id"]
        assert isinstance(number, int)
        assert str(number) == sim.uploads[0].import_id
        status = send(
            port_of(sim),
            "GET",
            f"/api/admin/{version}/import/status?id={number}",
            None,
            {"Api-Key": KEY},
        )
        assert json.loads(status.body) == {"id": number, "reason": None, "status": "WAITING"}
        small = send(
            port_of(sim), "POST", f"/api/admin/{version}/import/data", b"<a/>", {"Api-Key": KEY}
        )
        assert (small.status, json.loads(small.body)["status"]) == (200, "SUCCESS")


def test_a_small_import_finishes_within_the_request_and_a_wrong_key_is_refused() -> None:
    with Simulator(api_key=KEY) as sim:
        done = send(port_of(sim), "POST", "/api/v2/import/ads", b"<ads/>", {"Api-Key": KEY})
        assert (done.status, done.body, done.header("Content-Length")) == (204, b"", None)
        refused = send(port_of(sim), "POST", "/api/v2/import/ads", FEED, {"Api-Key": "wrong"})
        assert refused.status == 403
        assert [(u.status, u.import_id) for u in sim.uploads] == [(204, None), (403, None)]
        assert len(sim) == 0  # no import was made up for either


def test_other_paths_and_methods_answer_as_before() -> None:
    with Simulator(api_key=KEY) as sim:
        assert send(port_of(sim), "PUT", "/-/sim/reset").status == 405
        assert send(port_of(sim), "POST", "/api/v2/import/unknown", FEED).status == 405
        assert send(port_of(sim), "POST", "/api/admin/v4/import/data", FEED).status == 405
        assert send(port_of(sim), "POST", "/-/sim/reset").status == 200
        assert sim.uploads == []


def test_a_chunked_import_body_is_counted_and_hashed_as_sent() -> None:
    with Simulator(api_key=KEY) as sim:
        pieces = [b"a" * 100, b"b" * 70_000, b"c"]

        def body() -> Iterator[bytes]:
            yield from pieces

        conn = http.client.HTTPConnection("127.0.0.1", port_of(sim), timeout=30)
        conn.request(
            "POST",
            "/api/v2/import/configuration",
            body=body(),
            headers={"Api-Key": KEY},
            encode_chunked=True,
        )
        assert conn.getresponse().status == 202
        conn.close()
        [seen] = sim.uploads
        whole = b"".join(pieces)
        assert (seen.bytes, seen.sha256, seen.complete) == (
            len(whole),
            hashlib.sha256(whole).hexdigest(),
            True,
        )


@pytest.fixture
def proxy_to() -> Iterator[ProxyTo]:
    yield from started_proxies()


def test_the_demo_feed_job_pushes_its_feeds_through_the_proxy_and_each_import_goes_its_way(
    proxy_to: ProxyTo,
) -> None:
    with Simulator(api_key=KEY) as sim:
        run = proxy_to(sim.url)
        feeds = demo_feeds()
        job = FeedJob(f"http://127.0.0.1:{run.port}", KEY, sim.import_desk, feeds, interval=0.01)
        job.start()
        wait_until(lambda: len(job.pushed) >= len(feeds), what="one round of feeds")
        job.stop()
        run.wait_answered(len(job.pushed))
        assert job.pushed[: len(feeds)] == [202, 202, 202, 204, 202]
        by_feed = {dict(r.labels)["feed_name"]: r for r in run.registered}
        assert set(by_feed) == {"shop-se", "shop-no", "campaigns", "start-page"}
        assert by_feed["campaigns"].type == "ADS"
        failing = by_feed["shop-no"].id

        def final_status() -> dict[str, str] | None:
            answer = send(
                port_of(sim), "GET", f"/api/v2/import/status/{failing}", None, {"Api-Key": KEY}
            )
            doc: dict[str, str] = json.loads(answer.body)
            return doc if doc["status"] == "FAILURE" else None

        doc = wait_until(final_status, timeout=30, interval=0.5, what="the feed's import to fail")
        assert doc["message"] == "Import failed: 12 products lack a price"
