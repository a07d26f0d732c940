"""The feed path never waits on the monitoring (issue 23), through real processes: feed jobs
upload through the standalone ``proxy`` command to the simulator, and the proxy hands the
ids of 202 answers to an exporter (``run --web.enable-registration``) that may be killed,
restarted, missing, or not an exporter at all.

The outage and the large upload are the issue's own figures; the other tests use what
each needs, and each test ends within about a minute on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from elevate_import_exporter.simulator import Simulator
from tests.conftest import SIM_KEY, ExporterProcessFor
from tests.feed_path_support import (
    FeedJob,
    Halves,
    HostileRegistry,
    RegistrationTarget,
    accepted_ids,
    assert_each_once,
    new_upload_outcome,
    push_feed,
)
from tests.standalone_proxy import DELIVERED, DROPPED, RETRIES, WAITING, Proxies
from tests.support import free_port, wait_until

# The figures: the exporter is restarted 20 s after the SIGKILL (uploads go on
# being accepted, and their ids queued, while nothing listens at the registration URL),
# and the upload in flight at the SIGTERM is 200 MiB, far more than any buffer between
# the client, the proxy and the simulator, so half of it is really in flight.
OUTAGE_SECONDS = 20.0
BIG_UPLOAD_MIB = 200
# A feed that waited on a registration would wait at least the registration client's
# timeout (10 s) against a trickling target; an upload of 2 KiB through a healthy proxy
# takes milliseconds, so this leaves a loaded machine two orders of magnitude.
UPLOAD_SECONDS = 5.0


@pytest.fixture
def proxies(tmp_path: Path) -> Iterator[Proxies]:
    started = Proxies(tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(api_key=SIM_KEY) as simulator:
        yield simulator


@pytest.fixture
def target(
    tmp_path: Path, exporter_process: ExporterProcessFor, sim: Simulator
) -> RegistrationTarget:
    """The exporter the proxies register with, not yet started."""
    return RegistrationTarget(exporter_process, sim.url, tmp_path / "exporter.db")


def pushed(port: int, feed: str, count: int) -> list[str]:
    """The ids of ``count`` uploads in a row, each of which must be accepted in time."""
    outcomes = [push_feed(port, feed) for _ in range(count)]
    assert [o.status for o in outcomes] == [202] * count, outcomes
    slow = [o.seconds for o in outcomes if o.seconds > UPLOAD_SECONDS]
    assert not slow, f"uploads took {slow} s: the feed path waited on something"
    return accepted_ids(outcomes)


def test_feeds_flow_without_a_failure_while_the_exporter_is_killed_and_every_id_is_tracked_once(
    sim: Simulator, target: RegistrationTarget, proxies: Proxies
) -> None:
    exporter = target.start()
    proxy = proxies.start(sim.url, target.url)
    job = FeedJob(proxy.feed_port, "shop-se")
    wait_until(lambda: len(accepted_ids(job.outcomes)) >= 3, timeout=30, what="feeds flowing")

    exporter.process.kill()
    exporter.process.wait(30)
    killed_at = len(job.outcomes)
    time.sleep(OUTAGE_SECONDS)  # the outage itself: nothing to poll, it is the scenario
    during = accepted_ids(job.outcomes[killed_at:])
    assert len(during) >= 2, "no feed went through while the exporter was down"
    # Nothing could take these, so they wait at least.
    assert proxy.value(WAITING) >= len(during)

    target.start()
    restarted_at = len(job.outcomes)
    wait_until(lambda: len(job.outcomes) >= restarted_at + 3, timeout=30, what="more feeds")
    outcomes = job.stop()

    failed = [o for o in outcomes if o.status != 202]
    assert not failed, f"{len(failed)} of {len(outcomes)} uploads failed: {failed[:3]}"
    assert [u.status for u in sim.uploads] == [202] * len(outcomes)
    ids = accepted_ids(outcomes)
    listed = target.wait_for(ids)
    assert_each_once(listed, ids)
    assert {record["labels"]["feed_name"] for record in listed} == {"shop-se"}
    wait_until(lambda: proxy.value(WAITING) == 0, timeout=30, what="the queue emptied")
    assert proxy.value(DELIVERED) == len(ids)


def test_sigterm_lets_a_large_upload_in_flight_finish_byte_exact_while_new_ones_are_turned_away(
    sim: Simulator, target: RegistrationTarget, proxies: Proxies
) -> None:
    target.start()
    proxy = proxies.start(sim.url, target.url, "--proxy.drain-timeout", "2m")
    big = Halves(proxy.feed_port, BIG_UPLOAD_MIB, "big-feed")
    try:
        big.send_half()
        proxy.process.terminate()

        def not_ready() -> bool:
            if proxy.process.poll() is not None:
                pytest.fail(f"the proxy exited with an upload in flight:\n{proxy.stderr()}")
            return proxy.ready_status() == 503

        wait_until(not_ready, timeout=15, what="/-/ready 503 after SIGTERM")
        seen: list[str] = []

        def turned_away() -> bool:
            seen.append(new_upload_outcome(proxy.feed_port))
            return seen[-1] in ("refused", "503")

        wait_until(turned_away, timeout=15, interval=0.2, what="a new upload turned away")
        assert proxy.process.poll() is None, "the proxy exited with an upload in flight"
        assert proxy.ready_status() == 503, "ready again while draining"
        big.send_half()
        status, body = big.answer()
    finally:
        big.close()

    assert status == 202, body
    import_id = str(json.loads(body)["id"])
    [arrived] = [u for u in sim.uploads if u.headers.get("x-feed-name") == "big-feed"]
    assert (arrived.bytes, arrived.sha256, arrived.complete) == (big.size, big.sha256, True)
    assert arrived.import_id == import_id
    # The ones turned away never reached Elevate.
    assert [u for u in sim.uploads if u.headers.get("x-feed-name") == "late"] == []
    assert proxy.process.wait(60) == 0, proxy.stderr()
    [record] = [r for r in target.wait_for([import_id]) if r["id"] == import_id]
    assert record["labels"]["feed_name"] == "big-feed"
    assert record["source"] == "proxy"


def test_ids_spooled_while_the_exporter_is_down_survive_a_sigkill_of_the_proxy(
    tmp_path: Path, sim: Simulator, target: RegistrationTarget, proxies: Proxies
) -> None:
    spool = tmp_path / "registrations.spool"
    proxy = proxies.start(sim.url, target.url, "--registration.spool", str(spool))
    ids = pushed(proxy.feed_port, "shop-no", 5)
    wait_until(lambda: proxy.value(WAITING) == 5, timeout=30, what="five ids waiting")
    proxy.kill()

    target.start()
    again = proxies.start(sim.url, target.url, "--registration.spool", str(spool))
    assert_each_once(target.wait_for(ids), ids)
    wait_until(lambda: again.value(WAITING) == 0, timeout=30, what="the spool replayed")
    assert again.value(DELIVERED) == 5

    # Delivered ids are not replayed by the next start, killed as this one is.
    again.kill()
    third = proxies.start(sim.url, target.url, "--registration.spool", str(spool))
    fresh = pushed(third.feed_port, "shop-no", 1)
    assert_each_once(target.wait_for(ids + fresh), ids + fresh)
    wait_until(lambda: third.value(WAITING) == 0, timeout=30, what="the fresh id delivered")
    assert third.value(DELIVERED) == 1


def test_without_a_spool_a_sigkill_loses_exactly_the_ids_the_proxy_counted_as_waiting(
    sim: Simulator, target: RegistrationTarget, proxies: Proxies
) -> None:
    proxy = proxies.start(sim.url, target.url)
    lost = pushed(proxy.feed_port, "shop-dk", 5)
    wait_until(lambda: proxy.value(WAITING) == 5, timeout=30, what="five ids waiting")
    # Five are far below the queue's bound: none was dropped to make room.
    assert proxy.dropped() == 0
    proxy.kill()

    target.start()
    again = proxies.start(sim.url, target.url)
    assert again.value(WAITING) == 0
    fresh = pushed(again.feed_port, "shop-dk", 1)
    listed = target.wait_for(fresh)
    # The loss is the five the gauge showed, no more, no less: the memory queue held them.
    assert [record["id"] for record in listed] == fresh
    assert not set(lost) & {record["id"] for record in listed}


def test_two_proxy_replicas_in_front_of_one_exporter_have_every_id_tracked_once(
    sim: Simulator, target: RegistrationTarget, proxies: Proxies
) -> None:
    target.start()
    replicas = [proxies.start(sim.url, target.url) for _ in range(2)]
    jobs = [FeedJob(r.feed_port, f"replica-{n}") for n, r in enumerate(replicas)]
    wait_until(lambda: all(len(job.outcomes) >= 8 for job in jobs), timeout=40, what="eight each")
    outcomes = [job.stop() for job in jobs]

    for each in outcomes:
        assert [o.status for o in each] == [202] * len(each), each
    ids = [accepted_ids(each) for each in outcomes]
    listed = target.wait_for(ids[0] + ids[1])
    assert_each_once(listed, ids[0] + ids[1])
    feed_of = {record["id"]: record["labels"]["feed_name"] for record in listed}
    for n, replica_ids in enumerate(ids):
        assert {feed_of[i] for i in replica_ids} == {f"replica-{n}"}
    wait_until(
        lambda: all(r.value(WAITING) == 0 for r in replicas), timeout=30, what="queues emptied"
    )
    assert [r.value(DELIVERED) for r in replicas] == [len(each) for each in ids]


PASSWORD = "wrong-PASSWORD-4f1c-NEVER-SHOW"
# Every condition here is the registration target's, not the ids': they stay queued and are
# retried (a 404 from a server that is no exporter and a 401 included), as issue 23 asks.
KEPT = ("nothing_listens", "not_an_exporter", "garbage", "trickle", "unauthorized")


@pytest.mark.parametrize(
    "condition", ["nothing_listens", "not_an_exporter", "garbage", "trickle", "unauthorized"]
)
def test_a_registration_url_that_cannot_take_the_ids_leaves_the_feeds_untouched(
    condition: str, tmp_path: Path, sim: Simulator, proxies: Proxies
) -> None:
    hostile: HostileRegistry | None = None
    extra: list[str] = []
    if condition == "nothing_listens":
        url = f"http://127.0.0.1:{free_port()}"
    elif condition == "not_an_exporter":
        url = sim.url  # answers 404 to /api/v1/imports
    else:
        hostile = HostileRegistry(condition)
        url = hostile.url
        if condition == "unauthorized":
            (tmp_path / "password").write_text(PASSWORD)
            extra = [
                "--registration.username",
                "proxy",
                "--registration.password-file",
                str(tmp_path / "password"),
            ]
    try:
        proxy = proxies.start(sim.url, url, *extra)
        warned_before = len(proxy.warnings())
        pushed(proxy.feed_port, "shop-fi", 6)
        assert [u.status for u in sim.uploads] == [202] * 6

        if condition in KEPT:
            # Kept and retried: twice at least, so that a warning per attempt would show.
            wait_until(lambda: proxy.value(RETRIES) >= 2, timeout=50, interval=0.5, what="retries")
            assert (proxy.value(WAITING), proxy.dropped()) == (6, 0)
        else:
            # A 4xx is an answer: dropped as refused, counted, none vanishing silently.
            wait_until(
                lambda: proxy.value(DROPPED, reason="refused") == 6,
                timeout=50,
                interval=0.5,
                what="refusals counted",
            )
            assert proxy.value(WAITING) == 0
        assert proxy.value(DELIVERED) == 0
        # And the feed path is as fast as ever while this goes on.
        pushed(proxy.feed_port, "shop-fi", 2)
        warnings = proxy.warnings()[warned_before:]
        assert len(warnings) == 1, warnings
        scraped = proxy.metrics().text
    finally:
        if hostile is not None:
            hostile.close()
    assert PASSWORD not in proxy.stderr() + scraped


def test_a_registration_target_that_goes_away_twice_is_warned_about_twice_and_misses_nothing(
    sim: Simulator, target: RegistrationTarget, proxies: Proxies
) -> None:
    proxy = proxies.start(sim.url, target.url)
    warned_before = len(proxy.warnings())
    first = pushed(proxy.feed_port, "shop-is", 3)
    wait_until(lambda: proxy.value(RETRIES) >= 2, timeout=40, what="retries counted")
    assert len(proxy.warnings()) - warned_before == 1, proxy.warnings()

    exporter = target.start()
    target.wait_for(first)
    wait_until(lambda: proxy.value(WAITING) == 0, timeout=30, what="the queue emptied")
    # Coming back is a change too: one line at most (it may be at warning level).
    recovered = len(proxy.warnings()) - warned_before
    assert recovered in (1, 2), proxy.warnings()
    assert proxy.value("elevate_import_proxy_last_delivery_timestamp_seconds") > 0

    exporter.process.kill()
    exporter.process.wait(30)
    retried = proxy.value(RETRIES)
    second = pushed(proxy.feed_port, "shop-is", 3)
    wait_until(lambda: proxy.value(RETRIES) >= retried + 2, timeout=40, what="retries again")
    assert len(proxy.warnings()) - warned_before == recovered + 1, proxy.warnings()

    target.start()
    assert_each_once(target.wait_for(first + second), first + second)
    wait_until(lambda: proxy.value(WAITING) == 0, timeout=30, what="the queue emptied again")
    assert proxy.value(DELIVERED) == 6
