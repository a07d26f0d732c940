"""The delivery's spool: ids queued survive a kill of the proxy (replayed at the next start,
in order), a line torn by the kill is skipped with a warning, the file is compacted to what
still waits, and a spool path that is a directory is refused as a setup error."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from elevate_import_exporter.proxy.delivery import Delivery, SpoolError, http_sender
from tests.support import free_port, wait_until
from tests.test_delivery_queue import (  # noqa: F401 (fixtures)
    ClientFor,
    Receiver,
    base_of,
    client_for,
    deliveries,
    ids,
    reaper,
)

KILLED = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from elevate_import_exporter.core.records import Registration
    from elevate_import_exporter.proxy.delivery import Delivery, DeliveryFailed

    def down(batch):
        raise DeliveryFailed("unreachable", "the exporter is down", retry=True)

    delivery = Delivery(down, spool=Path(sys.argv[1]), backoff_first=0.01, backoff_max=0.05)
    delivery.start()
    for n in range(int(sys.argv[2])):
        delivery.register([Registration(f"k{n:03}", "PRODUCTS", (("feed", "f"),))], "proxy")
    print("queued", flush=True)
    sys.stdin.read()
    """
)


def spool_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def added(path: Path) -> list[str]:
    return [str(line["id"]) for line in spool_lines(path) if "id" in line]


def test_ids_queued_when_the_proxy_is_killed_are_delivered_by_the_next_one_in_order(
    tmp_path: Path,
    client_for: ClientFor,  # noqa: F811
    deliveries: list[Delivery],  # noqa: F811
    httpserver: HTTPServer,
) -> None:
    spool = tmp_path / "spool" / "registrations.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(spool), "50"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"queued\n"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    receiver = Receiver()
    receiver.serve(httpserver)
    delivery = Delivery(
        http_sender(client_for(base_of(httpserver))),
        spool=spool,
        batch=1,
        backoff_first=0.01,
        backoff_max=0.05,
    )
    deliveries.append(delivery)
    assert delivery.snapshot().waiting == 50
    delivery.start()
    wait_until(lambda: delivery.snapshot().delivered == 50, what="the spooled ids delivered")
    assert receiver.posted == [f"k{n:03}" for n in range(50)]
    # What was delivered is marked: a third start has nothing to send again.
    delivery.close(10)
    again = Delivery(http_sender(client_for(base_of(httpserver))), spool=spool)
    deliveries.append(again)
    assert again.snapshot().waiting == 0


def test_a_line_torn_by_a_kill_is_skipped_with_a_warning_and_later_lines_stay_whole(
    tmp_path: Path,
    client_for: ClientFor,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    spool = tmp_path / "registrations.jsonl"
    whole = [{"seq": n, "id": f"w{n}", "type": "", "labels": {}} for n in range(3)]
    body = "".join(json.dumps(line) + "\n" for line in whole)
    spool.write_text(body + '{"seq": 3, "id": "torn", "ty')
    down = http_sender(client_for(f"http://127.0.0.1:{free_port()}"))
    first = Delivery(down, spool=spool, backoff_first=0.01, backoff_max=0.05)
    assert first.snapshot().waiting == 3
    assert any("damaged" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    first.register(ids("after"), "proxy")
    first.close(0)
    assert added(spool) == ["w0", "w1", "w2", "after"]
    second = Delivery(down, spool=spool, backoff_first=0.01, backoff_max=0.05)
    second.close(0)
    assert second.snapshot().waiting == 4


@pytest.mark.parametrize(
    "junk",
    [
        b"\x00\x00\x00\x00\n",
        b"[1, 2]\n",
        b'{"seq": 9, "id": 5}\n',
        b'{"done": [0, "x"]}\n',
        b"x" * 200_000 + b"\n",
        b"\xff\xfe\n",
    ],
)
def test_a_damaged_line_in_the_middle_loses_only_itself(
    tmp_path: Path,
    client_for: ClientFor,  # noqa: F811
    junk: bytes,
) -> None:
    spool = tmp_path / "registrations.jsonl"
    line = '{{"seq": {0}, "id": "m{0}", "type": "", "labels": {{}}}}\n'
    spool.write_bytes(line.format(0).encode() + junk + line.format(1).encode())
    delivery = Delivery(http_sender(client_for("http://127.0.0.1:9")), spool=spool)
    delivery.close(0)
    assert added(spool) == ["m0", "m1"]


def test_the_spool_is_compacted_to_what_still_waits(
    tmp_path: Path,
    client_for: ClientFor,  # noqa: F811
    deliveries: list[Delivery],  # noqa: F811
) -> None:
    spool = tmp_path / "registrations.jsonl"
    port = free_port()
    receiver = Receiver()
    server = HTTPServer("127.0.0.1", port)
    receiver.serve(server)
    server.start()
    send = http_sender(client_for(f"http://127.0.0.1:{port}"))
    delivery = Delivery(send, spool=spool, batch=2, backoff_first=0.01, backoff_max=0.05)
    deliveries.append(delivery)
    delivery.start()
    try:
        for n in range(100):
            delivery.register(ids(f"c{n:03}"), "proxy")
        wait_until(lambda: delivery.snapshot().delivered == 100, what="100 delivered")
    finally:
        server.stop()
    # Without compaction: 100 lines added and 50 markers.
    assert len(spool_lines(spool)) <= 4
    delivery.register(ids("x1", "x2", "x3"), "proxy")
    wait_until(lambda: delivery.snapshot().retries >= 1, what="a retry while down")
    delivery.close(0)
    assert set(added(spool)) >= {"x1", "x2", "x3"}
    assert len(spool_lines(spool)) <= 8
    later = Delivery(send, spool=spool)
    deliveries.append(later)
    assert later.snapshot().waiting == 3
    assert added(spool) == ["x1", "x2", "x3"]


def test_the_spool_stays_bounded_while_the_exporter_is_down_and_the_queue_full(
    tmp_path: Path,
    client_for: ClientFor,  # noqa: F811
    deliveries: list[Delivery],  # noqa: F811
) -> None:
    spool = tmp_path / "registrations.jsonl"
    down = http_sender(client_for(f"http://127.0.0.1:{free_port()}"))
    delivery = Delivery(
        down, spool=spool, capacity=10, batch=5, backoff_first=0.01, backoff_max=0.05
    )
    deliveries.append(delivery)
    for n in range(1000):
        delivery.register(ids(f"o{n:04}"), "proxy")
    assert delivery.snapshot().dropped["queue_full"] == 990
    assert len(spool_lines(spool)) <= 3 * 10 + 5
    delivery.close(0)
    later = Delivery(down, spool=spool, capacity=10)
    deliveries.append(later)
    assert later.snapshot().waiting == 10
    assert added(spool) == [f"o{n:04}" for n in range(990, 1000)]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    made = tmp_path / "a-folder"
    made.mkdir()
    return made


def test_a_spool_that_is_a_directory_or_a_link_to_one_is_refused_clearly(
    tmp_path: Path, folder: Path
) -> None:
    link = tmp_path / "link"
    link.symlink_to(folder)
    for path in (folder, link):
        with pytest.raises(SpoolError, match="is a directory"):
            Delivery(lambda batch: None, spool=path)


def test_a_spool_that_is_a_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(SpoolError, match="named pipe"):
        Delivery(lambda batch: None, spool=pipe)


def test_a_spool_in_use_by_another_delivery_is_refused(
    tmp_path: Path,
    deliveries: list[Delivery],  # noqa: F811
) -> None:
    spool = tmp_path / "registrations.jsonl"
    deliveries.append(Delivery(lambda batch: None, spool=spool))
    with pytest.raises(SpoolError):
        Delivery(lambda batch: None, spool=spool)
