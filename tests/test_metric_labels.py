"""--imports.metric-labels: registration and proxy labels as series, bounded. The allowlist
turns labels into elevate_import_labels{id,...} and labels of the aggregates; past
--imports.metric-labels-max-values distinct values a label is published as `other`, with
one warning and a counter, stably across scrapes and restarts; bad names, counts and
buckets end `run` with exit status 2 naming the value."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from elevate_import_exporter.simulator import ScriptedImport, Simulator, Step
from tests.conftest import SIM_KEY, ExporterFor, ExporterProcess, ExporterProcessFor
from tests.support import Scrape, assert_promtool_approves, need_tool, post_json, scrape
from tests.test_cli import NOWHERE, assert_setup_error, invoke

FEEDS = {"7001": "a", "7002": "b", "7003": "c", "7004": "d"}


def register(url: str, document: object) -> None:
    status, text = post_json(url + "/api/v1/imports", document)
    assert status in (200, 201), text


def run_capped(
    exporter_process: ExporterProcessFor, simulator: Simulator, store: Path
) -> ExporterProcess:
    return exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--elevate.min-poll-interval",
        "0s",
        "--web.enable-registration",
        "--storage.path",
        str(store),
        env={
            "ELEVATE_API_KEY": SIM_KEY,
            # Through the variables, as a deployment sets them.
            "ELEVATE_EXPORTER_IMPORTS_METRIC_LABELS": "feed_name,team",
            "ELEVATE_EXPORTER_IMPORTS_METRIC_LABELS_MAX_VALUES": "2",
        },
    )


def published(page: Scrape) -> dict[str, tuple[str, str]]:
    """Each import's (feed_name, team) on elevate_import_labels."""
    found = {}
    for labels, value in page.series("elevate_import_labels").items():
        given = dict(labels)
        assert value == 1
        found[given["id"]] = (given["feed_name"], given["team"])
    return found


def test_the_allowlist_publishes_labels_and_caps_distinct_values_into_other_stably_across_scrapes_and_a_restart(  # noqa: E501
    simulator: Simulator, exporter_process: ExporterProcessFor, tmp_path: Path
) -> None:
    for import_id in [*FEEDS, "7005", "7006"]:
        simulator.add_import(ScriptedImport(import_id, (Step("SUCCESS"),), "PRODUCTS"))
    store = tmp_path / "store.db"
    exporter = run_capped(exporter_process, simulator, store)
    register(
        exporter.url,
        [{"id": i, "labels": {"feed_name": feed, "team": "data"}} for i, feed in FEEDS.items()],
    )
    first, second = scrape(exporter.url), scrape(exporter.url)
    expected = {
        "7001": ("a", "data"),
        "7002": ("b", "data"),
        "7003": ("other", "data"),
        "7004": ("other", "data"),
    }
    assert published(first) == published(second) == expected
    for page in (first, second):
        assert page.value("elevate_import_metric_label_overflow_total", label="feed_name") == 2
        assert page.value("elevate_import_metric_label_overflow_total", label="team") == 0
    finished = {"type": "PRODUCTS", "status": "SUCCESS", "team": "data"}
    assert second.value("elevate_import_finished_total", **finished, feed_name="a") == 1
    assert second.value("elevate_import_finished_total", **finished, feed_name="other") == 2
    assert exporter.stop() == 0
    warnings = [line for line in exporter.stderr().splitlines() if "label feed_name" in line]
    assert len(warnings) == 1, exporter.stderr()
    assert "other" in warnings[0]

    # After a restart the values kept in the store come first: a and b stay, e is other.
    again = run_capped(exporter_process, simulator, store)
    register(
        again.url,
        [
            {"id": "7005", "labels": {"feed_name": "e", "team": "data"}},
            {"id": "7006", "labels": {"feed_name": "a", "team": "data"}},
        ],
    )
    page = scrape(again.url)
    assert published(page) == expected | {"7005": ("other", "data"), "7006": ("a", "data")}
    last = {"type": "PRODUCTS", "status": "SUCCESS", "team": "data"}
    for feed in ("a", "b", "other"):
        at = page.value("elevate_import_last_final_timestamp_seconds", **last, feed_name=feed)
        assert at is not None, feed


def test_without_an_allowlist_no_labels_series_is_published_and_the_aggregates_have_no_extra_labels(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    simulator.add_import(ScriptedImport("8001", (Step("SUCCESS"),), "ADS"))
    exporter = exporter_for(simulator.url, ["8001"])
    page = scrape(exporter.url)
    assert page.series("elevate_import_labels") == {}
    assert page.value("elevate_import_finished_total", type="ADS", status="SUCCESS") == 1
    assert page.value("elevate_import_finished_total", type="ADS", status="NOT_FOUND") == 0


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("id", "'id'"),
        ("team,status", "'status'"),
        ("cluster", "'cluster'"),
        ("Team", "'Team'"),
        ("1team", "'1team'"),
        ("team,team", "'team'"),
        ("a,b,c,d,e", "at most 4"),
        ("feed-name", "'feed-name'"),
        ("__team", "'__team'"),
    ],
)
def test_a_bad_metric_label_name_exits_2_naming_it(value: str, named: str) -> None:
    args = ["run", "--elevate.base-url", NOWHERE, "--imports.metric-labels", value]
    assert_setup_error(invoke(args, ELEVATE_API_KEY=SIM_KEY), "--imports.metric-labels", named)


@pytest.mark.parametrize(
    ("flag", "variable", "value"),
    [
        ("--imports.metric-labels-max-values", "METRIC_LABELS_MAX_VALUES", "0"),
        ("--imports.metric-labels-max-values", "METRIC_LABELS_MAX_VALUES", "many"),
        ("--imports.duration-buckets", "DURATION_BUCKETS", "60,30"),
        ("--imports.duration-buckets", "DURATION_BUCKETS", "0,30"),
        ("--imports.duration-buckets", "DURATION_BUCKETS", "10,nan"),
        ("--imports.queue-buckets", "QUEUE_BUCKETS", "1,1"),
        ("--imports.queue-buckets", "QUEUE_BUCKETS", "1,,5"),
        ("--imports.queue-buckets", "QUEUE_BUCKETS", "-5"),
    ],
)
def test_a_bad_count_or_bucket_list_exits_2_naming_it_as_flag_and_as_variable(
    flag: str, variable: str, value: str
) -> None:
    base = ["run", "--elevate.base-url", NOWHERE]
    assert_setup_error(invoke([*base, flag, value], ELEVATE_API_KEY=SIM_KEY), flag, value)
    from_env = invoke(
        base, ELEVATE_API_KEY=SIM_KEY, **{f"ELEVATE_EXPORTER_IMPORTS_{variable}": value}
    )
    assert_setup_error(from_env, flag, value)


def test_the_exporter_process_refuses_a_reserved_label_name_with_exit_2(
    exporter_process: ExporterProcessFor,
) -> None:
    exporter = exporter_process(
        "--elevate.base-url",
        NOWHERE,
        "--imports.metric-labels",
        "feed_name,instance",
        env={"ELEVATE_API_KEY": SIM_KEY},
        wait=False,
    )
    exporter.assert_setup_error("--imports.metric-labels", "'instance'")


def test_buckets_given_are_the_histograms_buckets(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    simulator.add_import(ScriptedImport("8101", (Step("WAITING", queries=1), Step("SUCCESS"))))
    exporter = exporter_for(
        simulator.url,
        ["8101"],
        imports_duration_buckets="5,50",
        imports_queue_buckets="2",
    )
    page = scrape(exporter.url)
    durations = {
        dict(labels)["le"]
        for labels in page.series("elevate_import_duration_seconds_bucket")
        if dict(labels)["status"] == "SUCCESS"
    }
    assert durations == {"5.0", "50.0", "+Inf"}
    queues = {dict(labels)["le"] for labels in page.series("elevate_import_queue_seconds_bucket")}
    assert queues == {"2.0", "+Inf"}
    assert page.value("elevate_import_duration_seconds_count", type="PRODUCTS", status="SUCCESS")


def test_promtool_check_metrics_reports_nothing_on_a_page_with_the_new_families(
    simulator: Simulator, exporter_for: ExporterFor
) -> None:
    promtool = need_tool("promtool")
    simulator.add_import(ScriptedImport("9001", (Step("WAITING", queries=1), Step("SUCCESS"))))
    simulator.add_import(ScriptedImport("9002", (Step("FAILURE"),), "ADS"))
    exporter = exporter_for(
        simulator.url,
        ["9001"],
        enable_registration=True,
        imports_metric_labels="feed_name,team",
    )
    register(exporter.url, {"id": "9002", "labels": {"feed_name": 'a "quoted"\\ feed'}})
    with urllib.request.urlopen(exporter.url + "/metrics", timeout=30) as response:
        text = response.read().decode("utf-8")
    page = Scrape(text)
    # The page really holds every new family, with samples.
    for name in (
        "elevate_import_finished_total",
        "elevate_import_duration_seconds_count",
        "elevate_import_queue_seconds_count",
        "elevate_import_last_final_timestamp_seconds",
        "elevate_import_labels",
        "elevate_import_metric_label_overflow_total",
    ):
        assert page.series(name), name
    assert page.value("elevate_import_labels", id="9002", feed_name='a "quoted"\\ feed', team="")
    assert_promtool_approves(promtool, text)
