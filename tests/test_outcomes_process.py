"""The aggregates that outlive retention, through real exporter processes: imports of every
source (flag, ids file, registration, proxy) driven to final statuses by the simulator move
elevate_import_finished_total, the duration and queue histograms and the last-final gauge
once each; a restart counts nothing again and brings the last-final times back."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import SIM_KEY, ExporterProcess, ExporterProcessFor
from tests.standalone_proxy import ProxyFor, proxy_process  # noqa: F401 (a fixture)
from tests.support import Scrape, free_port, post_json, scrape, wait_until
from tests.test_proxy import FEED, send
from tests.test_proxy_command_process import UPLOAD_PATH

# One type per source, so that each series is one import's.
FLAG, FILE, API, PROXY = "F1", "D1", "R1", "proxy"
TYPES = {FLAG: "PRODUCTS", FILE: "SYNONYMS", API: "PANELS", PROXY: "ADS"}
FINALS = {FLAG: "SUCCESS", FILE: "FAILURE", API: "SUCCESS", PROXY: "ABORTED"}
FEEDS = {FLAG: "", FILE: "", API: "nightly", PROXY: "shop-se"}
ALL_FINISHED = ("ABORTED", "FAILURE", "SUCCESS", "NOT_FOUND")
# How long before its registration Elevate accepted the registered import: its duration
# lands past the 1800 s bucket only when it is measured from accepted_at.
ACCEPTED_AGO = 3600.0


def register(url: str, document: object) -> None:
    status, text = post_json(url, document)
    assert status in (200, 201), text


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=30) as response:
        answer: dict[str, object] = json.loads(response.read())
        return answer


def labels_of(import_id: str, status: str | None = None) -> dict[str, str]:
    labels = {"type": TYPES[import_id], "feed_name": FEEDS[import_id]}
    return labels if status is None else {**labels, "status": status}


def start(
    exporter_process: ExporterProcessFor,
    simulator: Simulator,
    store: Path,
    ids_file: Path,
    proxy_port: int,
) -> ExporterProcess:
    return exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--elevate.import-id",
        FLAG,
        "--elevate.import-ids-file",
        str(ids_file),
        "--elevate.min-poll-interval",
        "0s",
        "--web.enable-registration",
        "--proxy.listen-address",
        f"127.0.0.1:{proxy_port}",
        "--storage.path",
        str(store),
        "--imports.metric-labels",
        "feed_name",
        env={"ELEVATE_API_KEY": SIM_KEY},
    )


def registered(exporter: ExporterProcess, import_id: str) -> bool:
    return exporter.get(f"/api/v1/imports/{import_id}")[0] == 200


def final_time(exporter: ExporterProcess, import_id: str) -> float:
    record = get_json(f"{exporter.url}/api/v1/imports/{import_id}")
    return datetime.fromisoformat(str(record["final_at"])).timestamp()


def test_imports_of_every_source_move_the_counter_histograms_and_last_final_once_each_and_a_restart_counts_nothing_again(  # noqa: E501
    simulator: Simulator, exporter_process: ExporterProcessFor, tmp_path: Path
) -> None:
    once = Step("WAITING", queries=1)
    running = Step("IN_PROGRESS", queries=1)
    simulator.add_import(ScriptedImport(FLAG, (once, running, Step("SUCCESS")), TYPES[FLAG]))
    simulator.add_import(ScriptedImport(FILE, (once, Step("FAILURE")), TYPES[FILE]))
    simulator.add_import(ScriptedImport(API, (once, running, Step("SUCCESS")), TYPES[API]))
    simulator.import_desk.steps = (once, running, Step("ABORTED"))
    ids_file = tmp_path / "ids"
    ids_file.write_text(f"{FILE}\n", encoding="utf-8")
    store, proxy_port = tmp_path / "store.db", free_port()
    exporter = start(exporter_process, simulator, store, ids_file, proxy_port)

    accepted_at = time.time() - ACCEPTED_AGO
    registration = {"id": API, "labels": {"feed_name": "nightly"}, "accepted_at": accepted_at}
    register(exporter.url + "/api/v1/imports", registration)
    upload = send(
        proxy_port,
        "POST",
        "/api/v2/import/ads",
        FEED,
        {"Api-Key": SIM_KEY, "X-Feed-Name": "shop-se"},
    )
    assert upload.status == 202
    proxied = json.loads(upload.body)["id"]
    wait_until(lambda: registered(exporter, proxied), what="the proxy's registration")
    # The proxy's 202 is the start, as a registration's accepted_at is.
    started = get_json(f"{exporter.url}/api/v1/imports/{proxied}")["started_at"]
    assert started is not None
    assert get_json(f"{exporter.url}/api/v1/imports/{FLAG}")["started_at"] is None
    ids = {FLAG: FLAG, FILE: FILE, API: API, PROXY: proxied}

    def all_final() -> Scrape | None:
        page = scrape(exporter.url)
        done = all(page.current_status(i) == FINALS[key] for key, i in ids.items())
        return page if done else None

    wait_until(all_final, timeout=60, what="every import to reach its final status")
    # Later rounds see the same final statuses: nothing moves again.
    scrape(exporter.url)
    page = scrape(exporter.url)
    last_finals = {}
    for key, import_id in ids.items():
        final = FINALS[key]
        for status in ALL_FINISHED:
            counted = page.value("elevate_import_finished_total", **labels_of(key, status))
            assert counted == (1.0 if status == final else 0.0), (key, status)
        duration = page.value("elevate_import_duration_seconds_count", **labels_of(key, final))
        assert duration == 1.0, key
        assert page.value("elevate_import_queue_seconds_count", **labels_of(key)) == 1.0, key
        gauge = page.value("elevate_import_last_final_timestamp_seconds", **labels_of(key, final))
        assert gauge is not None, key
        assert abs(gauge - final_time(exporter, import_id)) < 0.001, key
        last_finals[key] = gauge
    # Measured from accepted_at, an hour before it was registered, not from first seen.
    api_final = labels_of(API, "SUCCESS")
    assert page.value("elevate_import_duration_seconds_bucket", **api_final, le="1800.0") == 0
    assert page.value("elevate_import_duration_seconds_bucket", **api_final, le="7200.0") == 1
    api_sum = page.value("elevate_import_duration_seconds_sum", **api_final)
    assert api_sum is not None
    assert api_sum >= ACCEPTED_AGO
    # The others were seen WAITING first: a few rounds apart, far below a minute.
    for key in (FLAG, FILE, PROXY):
        summed = page.value("elevate_import_duration_seconds_sum", **labels_of(key, FINALS[key]))
        assert summed is not None, key
        assert summed < 60, key
    assert page.value("elevate_import_labels", id=API, feed_name="nightly") == 1
    assert page.value("elevate_import_labels", id=proxied, feed_name="shop-se") == 1
    assert page.value("elevate_import_labels", id=FLAG, feed_name="") == 1

    assert exporter.stop() == 0
    again = start(exporter_process, simulator, store, ids_file, proxy_port)
    page = scrape(again.url)
    for key in ids:
        final = FINALS[key]
        for status in ALL_FINISHED:  # every type seen is there, at 0: nothing counted twice
            assert page.value("elevate_import_finished_total", **labels_of(key, status)) == 0
        assert page.value("elevate_import_duration_seconds_count", **labels_of(key, final)) == 0
        assert page.value("elevate_import_queue_seconds_count", **labels_of(key)) == 0
        restored = page.value(
            "elevate_import_last_final_timestamp_seconds", **labels_of(key, final)
        )
        assert restored == last_finals[key], key


def test_an_import_already_final_at_first_sight_is_counted_without_a_duration(
    simulator: Simulator, exporter_process: ExporterProcessFor, tmp_path: Path
) -> None:
    simulator.add_import(ScriptedImport("5001", (Step("SUCCESS"),), "PRODUCTS"))
    exporter = exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--elevate.import-id",
        "5001",
        "--storage.path",
        str(tmp_path / "store.db"),
        env={"ELEVATE_API_KEY": SIM_KEY},
    )
    page = scrape(exporter.url)
    finished = {"type": "PRODUCTS", "status": "SUCCESS"}
    assert page.value("elevate_import_finished_total", **finished) == 1
    # First seen to first poll would be a false, near-zero duration: none is observed.
    assert page.value("elevate_import_duration_seconds_count", **finished) == 0
    assert page.value("elevate_import_queue_seconds_count", type="PRODUCTS") == 0
    assert page.value("elevate_import_last_final_timestamp_seconds", **finished) is not None


def test_the_standalone_proxy_carries_the_time_of_its_202_to_an_exporter_that_comes_up_later(
    simulator: Simulator,
    exporter_process: ExporterProcessFor,
    proxy_process: ProxyFor,  # noqa: F811
    tmp_path: Path,
) -> None:
    port = free_port()
    proxy = proxy_process(simulator.url, f"http://127.0.0.1:{port}")
    got = send(proxy.feed_port, "POST", UPLOAD_PATH, FEED, {"Api-Key": SIM_KEY})
    assert got.status == 202, got.body
    import_id = json.loads(got.body)["id"]
    # The exporter is not there yet: the delivery waits and tries again.
    wait_until(
        lambda: proxy.metrics().value("elevate_import_proxy_registration_retries_total"),
        timeout=30,
        what="a failed delivery",
    )
    exporter = exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--web.enable-registration",
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--storage.path",
        str(tmp_path / "store.db"),
        env={"ELEVATE_API_KEY": SIM_KEY},
    )
    wait_until(lambda: registered(exporter, import_id), timeout=60, what="the delivery")
    record = get_json(f"{exporter.url}/api/v1/imports/{import_id}")
    started = datetime.fromisoformat(str(record["started_at"])).timestamp()
    first_seen = datetime.fromisoformat(str(record["first_seen"])).timestamp()
    # Measured from the 202, before the exporter could see it, not from its delivery.
    assert started < first_seen
