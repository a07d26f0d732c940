"""The id-source seam: fixed and in-memory sources, and TrackedIds joining them under a cap."""

from __future__ import annotations

import logging
import threading

import pytest

from elevate_import_exporter.polling.sources import (
    FixedIds,
    IdSource,
    MemoryIds,
    MutableIdSource,
    TrackedIds,
)

SOURCES_LOGGER = "elevate_import_exporter.polling.sources"


def source_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == SOURCES_LOGGER and r.levelno == logging.WARNING
    ]


class CountingSource:
    """A source written for the test: counts reloads, hands out what it is told to."""

    def __init__(self, name: str, ids: tuple[str, ...]) -> None:
        self.name = name
        self.ids = ids
        self.reloads = 0

    def current(self) -> tuple[str, ...]:
        return self.ids

    def reload(self) -> None:
        self.reloads += 1


# -- FixedIds -----------------------------------------------------------------------


def test_fixed_ids_keep_their_order_and_drop_repeats() -> None:
    fixed = FixedIds(["1003", "1001", "1003", "1002", "1001"])
    assert fixed.current() == ("1003", "1001", "1002")
    assert fixed.name == "flag"


def test_fixed_ids_hand_out_the_same_tuple_every_time_and_survive_a_reload() -> None:
    fixed = FixedIds(["1001", "1002"], name="env")
    first = fixed.current()
    fixed.reload()
    assert fixed.current() is first
    assert fixed.name == "env"


def test_fixed_ids_do_not_follow_the_list_they_were_built_from() -> None:
    given = ["1001"]
    fixed = FixedIds(given)
    given.append("1002")
    assert fixed.current() == ("1001",)


def test_fixed_and_memory_ids_satisfy_the_protocols_the_poller_side_relies_on() -> None:
    assert isinstance(FixedIds([]), IdSource)
    assert not isinstance(FixedIds([]), MutableIdSource)
    assert isinstance(MemoryIds("api"), MutableIdSource)


# -- MemoryIds ----------------------------------------------------------------------


def test_adding_an_id_twice_tracks_it_once_and_says_so() -> None:
    memory = MemoryIds("api", ["1001"])
    assert memory.add("1002") is True
    assert memory.add("1002") is False
    assert memory.add("1001") is False
    assert memory.current() == ("1001", "1002")


def test_removing_an_id_twice_removes_it_once_and_says_so() -> None:
    memory = MemoryIds("api", ["1001", "1002", "1003"])
    assert memory.remove("1002") is True
    assert memory.remove("1002") is False
    assert memory.remove("9999") is False
    assert memory.current() == ("1001", "1003")


def test_an_id_removed_and_added_again_goes_to_the_end() -> None:
    memory = MemoryIds("api", ["1001", "1002"])
    memory.remove("1001")
    memory.add("1001")
    assert memory.current() == ("1002", "1001")


def test_memory_ids_hand_out_the_same_tuple_until_they_change() -> None:
    memory = MemoryIds("api", ["1001"])
    first = memory.current()
    assert memory.current() is first
    memory.add("1001")  # already there: no change
    memory.remove("9999")  # never there: no change
    assert memory.current() is first
    memory.add("1002")
    assert memory.current() is not first


def test_concurrent_adds_from_many_threads_track_each_id_once_and_report_one_winner() -> None:
    memory = MemoryIds("api")
    threads_count, per_thread = 8, 2_000
    # Every thread adds the same ids, in a different order, all at once.
    ids = [f"id-{n}" for n in range(per_thread)]
    start = threading.Barrier(threads_count)
    won: list[int] = [0] * threads_count

    def add_all(index: int) -> None:
        order = ids[index::threads_count] + [i for i in ids if int(i[3:]) % threads_count != index]
        start.wait()
        won[index] = sum(memory.add(import_id) for import_id in order)

    threads = [threading.Thread(target=add_all, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)

    current = memory.current()
    assert sorted(current) == sorted(ids)
    assert len(current) == len(set(current))
    # Exactly one add per id answered True, whoever made it.
    assert sum(won) == per_thread


def test_concurrent_adds_and_removes_leave_a_current_set_that_matches_the_answers() -> None:
    memory = MemoryIds("api")
    ids = [f"id-{n}" for n in range(500)]
    start = threading.Barrier(2)
    added: list[int] = [0]
    removed: list[int] = [0]

    def adder() -> None:
        start.wait()
        added[0] = sum(memory.add(i) for i in ids)

    def remover() -> None:
        start.wait()
        removed[0] = sum(memory.remove(i) for i in ids)

    threads = [threading.Thread(target=adder), threading.Thread(target=remover)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert added[0] == len(ids)
    assert len(memory.current()) == added[0] - removed[0]


# -- TrackedIds ---------------------------------------------------------------------


def test_tracked_ids_join_the_sources_in_order_and_keep_an_id_once() -> None:
    tracked = TrackedIds(
        [
            FixedIds(["1002", "1001"]),
            CountingSource("file", ("1001", "1003", "1002", "1004")),
            MemoryIds("api", ["1005", "1003"]),
        ]
    )
    assert tracked.current() == ("1002", "1001", "1003", "1004", "1005")


def test_an_id_belongs_to_the_first_source_that_holds_it() -> None:
    tracked = TrackedIds(
        [FixedIds(["1001"]), CountingSource("file", ("1001", "1002")), MemoryIds("api", ["1003"])]
    )
    tracked.current()
    assert tracked.source_of("1001") == "flag"
    assert tracked.source_of("1002") == "file"
    assert tracked.source_of("1003") == "api"
    assert tracked.source_of("9999") is None


def test_counts_give_every_source_even_an_empty_one_and_count_shared_ids_once() -> None:
    tracked = TrackedIds(
        [
            FixedIds(["1001", "1002"]),
            CountingSource("file", ("1002", "1003", "1004")),
            MemoryIds("api"),
        ]
    )
    assert tracked.counts() == {"flag": 2, "file": 2, "api": 0}


def test_counts_follow_a_source_that_changed_without_a_call_to_current_first() -> None:
    api = MemoryIds("api")
    tracked = TrackedIds([FixedIds(["1001"]), api])
    assert tracked.counts() == {"flag": 1, "api": 0}
    api.add("1002")
    api.add("1003")
    assert tracked.counts() == {"flag": 1, "api": 2}


def test_tracked_ids_hand_out_the_same_tuple_while_no_source_changed() -> None:
    api = MemoryIds("api", ["1002"])
    tracked = TrackedIds([FixedIds(["1001"]), api])
    first = tracked.current()
    assert all(tracked.current() is first for _ in range(100))

    api.add("1003")
    second = tracked.current()
    assert second == ("1001", "1002", "1003")
    assert second is not first
    assert tracked.current() is second


def test_an_id_that_leaves_its_first_source_moves_to_the_next_one_holding_it() -> None:
    api = MemoryIds("api", ["1001"])
    tracked = TrackedIds([api, CountingSource("file", ("1001",))])
    assert tracked.source_of("1001") is None  # nothing joined yet
    tracked.current()
    assert tracked.source_of("1001") == "api"
    api.remove("1001")
    assert tracked.current() == ("1001",)
    assert tracked.source_of("1001") == "file"


def test_reload_reaches_every_source() -> None:
    first, second = CountingSource("file", ()), CountingSource("store", ())
    TrackedIds([first, FixedIds([]), second]).reload()
    assert (first.reloads, second.reloads) == (1, 1)


# -- the cap: --imports.max-tracked -------------------------------------------------


def test_ids_beyond_the_cap_are_refused_keeping_the_first_in_source_order() -> None:
    tracked = TrackedIds(
        [FixedIds(["1001", "1002"]), CountingSource("file", ("1002", "1003", "1004", "1005"))],
        max_tracked=3,
    )
    assert tracked.current() == ("1001", "1002", "1003")
    assert tracked.refused == 2
    assert tracked.source_of("1004") is None
    assert tracked.counts() == {"flag": 2, "file": 1}


def test_without_a_cap_or_under_it_nothing_is_refused() -> None:
    ids = tuple(f"{n}" for n in range(1000, 1100))
    assert TrackedIds([FixedIds(ids)]).refused == 0
    uncapped = TrackedIds([FixedIds(ids)])
    assert len(uncapped.current()) == 100
    assert uncapped.refused == 0
    exactly = TrackedIds([FixedIds(ids)], max_tracked=100)
    assert exactly.current() == ids
    assert exactly.refused == 0


def test_refused_is_known_before_anyone_asked_for_the_current_ids() -> None:
    tracked = TrackedIds([FixedIds(["1001", "1002", "1003"])], max_tracked=1)
    assert tracked.refused == 2


def test_the_cap_warns_once_per_change_of_the_refused_number_not_per_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=SOURCES_LOGGER)
    api = MemoryIds("api", ["1001", "1002", "1003"])
    tracked = TrackedIds([api], max_tracked=2)
    for _ in range(50):
        tracked.current()
        tracked.counts()
    warnings = source_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "1 import ids refused" in warnings[0]
    assert "first 2 " in warnings[0]

    # A change of the source that leaves the refused number as it was: no new warning.
    api.remove("1003")
    api.add("1004")
    tracked.current()
    assert len(source_warnings(caplog)) == 1

    api.add("1005")
    for _ in range(10):
        tracked.current()
    warnings = source_warnings(caplog)
    assert len(warnings) == 2, warnings
    assert "2 import ids refused" in warnings[1]


def test_falling_back_under_the_cap_tracks_everything_again_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=SOURCES_LOGGER)
    api = MemoryIds("api", ["1001", "1002", "1003"])
    tracked = TrackedIds([api], max_tracked=2)
    assert tracked.refused == 1
    api.remove("1001")
    assert tracked.current() == ("1002", "1003")
    assert tracked.refused == 0
    assert len(source_warnings(caplog)) == 1
    assert any(
        r.levelno == logging.INFO and "refused" in r.getMessage()
        for r in caplog.records
        if r.name == SOURCES_LOGGER
    )


def test_an_id_freed_by_the_cap_moves_in_when_an_earlier_one_leaves() -> None:
    api = MemoryIds("api", ["1001", "1002", "1003"])
    tracked = TrackedIds([FixedIds(["1000"]), api], max_tracked=3)
    assert tracked.current() == ("1000", "1001", "1002")
    api.remove("1001")
    assert tracked.current() == ("1000", "1002", "1003")
    assert tracked.refused == 0


@pytest.mark.parametrize("bad", [0, -1])
def test_a_cap_below_one_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TrackedIds([FixedIds(["1001"])], max_tracked=bad)
