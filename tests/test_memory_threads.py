"""Memory that depended on how many threads had run (issue 25): a pool's threads start
only when tasks need them, and the exporter process keeps malloc to a couple of arenas.

Bounds are wide: the fixed code sits far below them, the old one far above.
"""

from __future__ import annotations

import http.client
import os
import platform
import re
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from elevate_import_exporter.core.workers import Workers
from elevate_import_exporter.simulator import Simulator
from tests.conftest import ExporterProcessFor
from tests.support import free_port

ARENA = 64 * 1024 * 1024


def _threads_named(prefix: str) -> int:
    return sum(1 for thread in threading.enumerate() if thread.name.startswith(prefix))


def test_a_pool_of_64_running_one_task_at_a_time_starts_a_few_threads_not_64() -> None:
    workers = Workers(64, name="lazy-pool-test")
    try:
        for n in range(200):
            assert workers.submit(pow, n, 2).result(timeout=30) == n * n
        assert _threads_named("lazy-pool-test") <= 4
    finally:
        workers.stop()


def test_a_pool_still_runs_as_many_tasks_at_once_as_its_size() -> None:
    # Eight tasks that each wait for all eight: they finish only if eight threads run.
    workers = Workers(8, name="wide-pool-test")
    meeting = threading.Barrier(8, timeout=30)
    try:
        futures = [workers.submit(meeting.wait) for _ in range(8)]
        assert sorted(f.result(timeout=60) for f in futures) == list(range(8))
        assert _threads_named("wide-pool-test") == 8
    finally:
        workers.stop()


def test_a_stopped_pool_starts_no_thread_for_a_late_task() -> None:
    workers = Workers(4, name="stopped-pool-test")
    workers.stop()
    workers.submit(pow, 2, 2)
    assert _threads_named("stopped-pool-test") == 0


def _thread_arenas(pid: int) -> int:
    """glibc's thread arenas: 64 MiB reserved at 64 MiB alignment, a read-write part
    followed by an inaccessible rest (or read-write in full)."""
    rows = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        rows.append((start, end, fields[1], len(fields) > 5))
    count = 0
    for index, (start, end, perms, named) in enumerate(rows):
        if named or start % ARENA or not perms.startswith("rw"):
            continue
        rest = rows[index + 1] if index + 1 < len(rows) else None
        whole = end - start == ARENA
        reserved = rest is not None and rest[0] == end and rest[1] == start + ARENA
        if whole or (reserved and rest is not None and rest[2].startswith("---")):
            count += 1
    return count


def _status_field(pid: int, name: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{name}:\s+(\d+)", text, re.M)
    assert match is not None
    return int(match.group(1))


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc arenas"
)
def test_the_exporter_with_its_proxy_keeps_few_threads_and_arenas_after_traffic(
    exporter_process: ExporterProcessFor, simulator: Simulator
) -> None:
    proxy_port = free_port()
    env = {"ELEVATE_API_KEY": simulator.api_key}
    assert "MALLOC_ARENA_MAX" not in os.environ
    exporter = exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--proxy.listen-address",
        f"127.0.0.1:{proxy_port}",
        "--web.enable-registration",
        env=env,
    )
    web = urlsplit(exporter.url)
    for n in range(40):
        # Registrations, scrapes and proxied uploads, each on a new connection, as many
        # clients send them.
        conn = http.client.HTTPConnection(web.hostname or "127.0.0.1", web.port, timeout=30)
        conn.request(
            "POST",
            "/api/v1/imports",
            f'{{"id": "{5000 + n}"}}',
            {"Content-Type": "application/json"},
        )
        assert conn.getresponse().status in (200, 201)
        conn.close()
        assert exporter.get("/metrics")[0] == 200
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=30)
        conn.request("POST", "/api/v2/import/products", b"x" * 200, {"Api-Key": simulator.api_key})
        assert conn.getresponse().status == 202
        conn.close()
    pid = exporter.process.pid
    # Before: 107 threads (64 proxy handlers and 32 HTTP handlers started at once) and
    # 15 thread arenas; after: a handful of each.
    assert _status_field(pid, "Threads") <= 40
    assert _thread_arenas(pid) <= 4
