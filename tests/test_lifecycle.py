"""An import's life: tracked, kept across restarts, retired after the retention, purged
after the history period; and the key checked when there is nothing to poll."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from elevate_import_exporter.app import Application
from elevate_import_exporter.core.records import Query, Registration
from elevate_import_exporter.lifecycle.catalog import PURGE_EVERY
from elevate_import_exporter.polling.poller import PROBE_ID
from elevate_import_exporter.settings.config import load_settings
from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import REPO, SIM_KEY, ExporterProcessFor, exporter_env
from tests.support import free_port, ids_in_every_series, scrape, scrape_text, wait_until

HOUR = 3600.0
DAY = 24 * HOUR


class Clock:
    """Wall-clock time that moves only when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


AppFor = Callable[..., Application]


@pytest.fixture
def app_for(tmp_path: Path) -> Iterator[AppFor]:
    """``app_for(base_url, ids, clock=..., **options)``: a started exporter whose store is
    ``tmp_path/store.db`` unless given; past its first round."""
    started: list[Application] = []

    def start(base_url: str, ids: list[str], clock: Clock, **options: Any) -> Application:
        options.setdefault("storage_path", str(tmp_path / "store.db"))
        settings = load_settings(
            base_url=base_url,
            api_key=options.pop("api_key", SIM_KEY),
            import_ids=ids,
            listen_address="127.0.0.1:0",
            min_poll_interval=options.pop("min_poll_interval", "0s"),
            **options,
        )
        app = Application(settings, clock=clock)
        started.append(app)
        app.start()
        assert app.wait_ready(30)
        return app

    yield start
    for app in started:
        app.stop()


def stop(app: Application) -> None:
    app.stop()


def test_a_final_import_leaves_the_metrics_after_the_retention_and_stays_in_the_history(
    app_for: AppFor,
) -> None:
    clock = Clock()
    imports = [
        ScriptedImport("4001", (Step("FAILURE", message="bad feed"),)),
        ScriptedImport("4002", (Step("IN_PROGRESS"),)),
    ]
    with Simulator(imports, api_key=SIM_KEY) as sim:
        app = app_for(sim.url, ["4001", "4002"], clock, retention="1h")
        assert scrape(app.url).current_status("4001") == "FAILURE"

        clock.advance(HOUR - 1)
        assert scrape(app.url).current_status("4001") == "FAILURE"

        clock.advance(2)
        assert ids_in_every_series(scrape_text(app.url)) == {"4002"}
        result = scrape(app.url)
        assert result.current_status("4002") == "IN_PROGRESS"
        assert result.value("elevate_import_retired_total", status="FAILURE") == 1
        assert result.value("elevate_import_tracked_imports") == 1
        record = app.catalog.get("4001")
        assert record is not None
        assert record.retired
        assert (record.status, record.message) == ("FAILURE", "bad feed")

        # Still given as a flag, it stays retired: not exported, not asked again.
        asked = sim.requests_for("4001")
        assert ids_in_every_series(scrape_text(app.url)) == {"4002"}
        assert sim.requests_for("4001") == asked


def test_an_id_that_stays_not_found_past_the_retention_is_retired(app_for: AppFor) -> None:
    clock = Clock()
    with Simulator([], api_key=SIM_KEY) as sim:  # every id is NOT_FOUND
        app = app_for(sim.url, ["4101"], clock, retention="2h")
        assert scrape(app.url).current_status("4101") == "NOT_FOUND"
        clock.advance(2 * HOUR)
        result = scrape(app.url)
        assert result.series("elevate_import_status") == {}
        assert result.value("elevate_import_retired_total", status="NOT_FOUND") == 1


def test_a_retired_registration_is_deleted_from_the_history_after_the_history_period(
    app_for: AppFor,
) -> None:
    clock = Clock()
    imports = [ScriptedImport("4201", (Step("SUCCESS"),))]
    with Simulator(imports, api_key=SIM_KEY) as sim:
        app = app_for(sim.url, [], clock, retention="1h", history="1d")
        assert app.catalog.register([Registration("4201", "PRODUCTS")], "api") == [True]
        assert scrape(app.url).current_status("4201") == "SUCCESS"
        clock.advance(HOUR + 1)
        scrape(app.url)
        kept = app.catalog.get("4201")
        assert kept is not None
        assert kept.retired

        clock.advance(DAY - HOUR)  # within the history period of its retirement
        scrape(app.url)
        assert app.catalog.get("4201") is not None

        clock.advance(HOUR + PURGE_EVERY)
        scrape(app.url)
        assert app.catalog.get("4201") is None
        assert app.catalog.query(Query(retired=True))[1] == 0


def test_a_restart_keeps_first_seen_and_status_and_never_asks_a_final_import_again(
    app_for: AppFor,
) -> None:
    clock = Clock()
    imports = [
        ScriptedImport("4301", (Step("SUCCESS"),)),
        ScriptedImport("4302", (Step("IN_PROGRESS"),)),
        ScriptedImport("4303", (Step("WAITING"),)),
    ]
    with Simulator(imports, api_key=SIM_KEY) as sim:
        first = app_for(sim.url, ["4301", "4302"], clock)
        first.catalog.register([Registration("4303", "ADS", (("feed", "ads"),))], "api")
        before = scrape(first.url)
        stop(first)

        clock.advance(600)
        asked = sim.requests_for("4301")
        second = app_for(sim.url, ["4301", "4302"], clock)
        after = scrape(second.url)
        for import_id in ("4301", "4302", "4303"):
            assert after.value(
                "elevate_import_first_seen_timestamp_seconds", id=import_id
            ) == before.value("elevate_import_first_seen_timestamp_seconds", id=import_id)
        assert after.value(
            "elevate_import_last_status_change_timestamp_seconds", id="4301"
        ) == before.value("elevate_import_last_status_change_timestamp_seconds", id="4301")
        assert after.current_status("4301") == "SUCCESS"
        assert after.current_status("4303") == "WAITING"
        assert sim.requests_for("4301") == asked
        record = second.catalog.get("4303")
        assert record is not None
        assert (record.source, record.labels) == ("api", (("feed", "ads"),))


def test_with_nothing_to_poll_a_bad_key_shows_at_once_and_the_verdict_holds_between_probes(
    app_for: AppFor,
) -> None:
    with Simulator([], api_key=SIM_KEY) as sim:
        app = app_for(sim.url, [], Clock(), api_key="not-the-key", storage_path="")
        result = scrape(app.url)
        assert result.value("elevate_import_up") == 0
        assert (result.value("elevate_import_api_requests_total", code="403") or 0) >= 1
        probes = sim.requests_for(PROBE_ID)
        assert probes >= 1

        again = scrape(app.url)
        assert again.value("elevate_import_up") == 0
        assert sim.requests_for(PROBE_ID) == probes


def test_a_second_exporter_on_the_same_store_exits_2_naming_the_file(
    exporter_process: ExporterProcessFor, tmp_path: Path
) -> None:
    with Simulator([], api_key=SIM_KEY) as sim:
        store = tmp_path / "shared.db"
        args = ("--elevate.base-url", sim.url, "--storage.path", str(store))
        exporter_process(*args, env={"ELEVATE_API_KEY": SIM_KEY})
        second = exporter_process(*args, env={"ELEVATE_API_KEY": SIM_KEY}, wait=False)
        second.assert_setup_error(str(store), "locked")


@pytest.mark.parametrize(
    "content",
    [b"this is not a database\n" * 100, None],
    ids=["garbage", "truncated"],
)
def test_a_damaged_store_stops_the_exporter_with_exit_2_and_is_left_as_it_was(
    exporter_process: ExporterProcessFor, tmp_path: Path, content: bytes | None
) -> None:
    store = tmp_path / "damaged.db"
    with Simulator([], api_key=SIM_KEY) as sim:
        if content is None:
            app = Application(
                load_settings(
                    base_url=sim.url,
                    api_key=SIM_KEY,
                    listen_address="127.0.0.1:0",
                    storage_path=str(store),
                )
            )
            app.catalog.register([Registration(f"{n:06d}") for n in range(3000)], "api")
            app.stop()
            whole = store.read_bytes()
            store.write_bytes(whole[: len(whole) // 2])
        else:
            store.write_bytes(content)
        before = (hashlib.sha256(store.read_bytes()).hexdigest(), store.stat().st_mtime_ns)
        process = exporter_process(
            "--elevate.base-url",
            sim.url,
            "--storage.path",
            str(store),
            env={"ELEVATE_API_KEY": SIM_KEY},
            wait=False,
        )
        process.assert_setup_error(str(store))
    assert (hashlib.sha256(store.read_bytes()).hexdigest(), store.stat().st_mtime_ns) == before


def post(url: str, body: object) -> int:
    request = urllib.request.Request(
        url + "/api/v1/imports",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return int(answer.status)


def test_registrations_answered_before_a_sigkill_are_all_there_after_the_restart(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store.db"
    ids = [f"{5_000_000 + n}" for n in range(1000)]
    imports = [ScriptedImport(ids[0], (Step("SUCCESS"),))]

    def start(sim: Simulator) -> tuple[subprocess.Popen[bytes], str]:
        address = f"127.0.0.1:{free_port()}"
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "elevate_import_exporter", "run"),
                *("--elevate.base-url", sim.url, "--web.listen-address", address),
                *("--storage.path", str(store), "--web.enable-registration"),
                *("--elevate.min-poll-interval", "0s"),
            ],
            env=exporter_env(ELEVATE_API_KEY=SIM_KEY),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://{address}"

        def ready() -> bool:
            assert process.poll() is None, "the exporter exited"
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=5) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        wait_until(ready, timeout=30, what="the exporter to be ready")
        return process, url

    with Simulator(imports, api_key=SIM_KEY) as sim:
        process, url = start(sim)
        try:
            # The first one finishes before the burst and is known as final.
            assert post(url, {"id": ids[0]}) == 201
            assert scrape(url).current_status(ids[0]) == "SUCCESS"
            # One id a request, as a burst of feed jobs would: each answered 201.
            assert {post(url, {"id": import_id}) for import_id in ids[1:]} == {201}
            before = listed(url)
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

        sim.reset_counts()
        process, url = start(sim)
        try:
            after = listed(url)
            result = scrape(url)
        finally:
            process.terminate()
            process.wait()
    assert len(before) == len(ids)
    assert after == before
    assert result.value("elevate_import_source_imports", source="api") == len(ids)
    # The finished one is not asked again; the others, still NOT_FOUND, are.
    assert sim.requests_for(ids[0]) == 0
    # Asked once by the start-up round, once by the scrape.
    assert sim.requests_for(ids[1]) == sim.requests_for(ids[-1]) == 2


def listed(url: str) -> dict[str, str]:
    """First seen of every import, as GET /api/v1/imports tells it."""
    with urllib.request.urlopen(url + "/api/v1/imports?limit=1000", timeout=30) as answer:
        page = json.load(answer)
    return {item["id"]: item["first_seen"] for item in page["imports"]}


def test_a_registration_shows_in_the_counters_at_once_even_between_poll_rounds(
    app_for: AppFor,
) -> None:
    with Simulator([], api_key=SIM_KEY) as sim:
        app = app_for(sim.url, [], Clock(), storage_path="", min_poll_interval="1h")
        app.catalog.register([Registration("4401")], "api")
        first = scrape(app.url)
        assert first.value("elevate_import_registrations_total", result="created") == 1
        # The same id again changes no import, and no round runs: only the counter moves.
        app.catalog.register([Registration("4401")], "api")
        again = scrape(app.url)
        assert again.value("elevate_import_registrations_total", result="existing") == 1
