"""The demo as a newcomer sees it: only the landing page, in a real (headless) browser.

Nobody scrapes /metrics here; the table must still fill in, because the demo polls by
itself and the page reloads itself. Set UPDATE_SCREENSHOT=1 to save the README's
screenshot (docs/landing-page.png) from the run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from elevate_import_exporter.simulator import DEMO_UNKNOWN_ID, demo_imports
from tests.conftest import REPO, exporter_env
from tests.support import free_port, missing, need_tool, stop_process, wait_until

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

SCREENSHOT = REPO / "docs" / "landing-page.png"
# The demo's scripts end within ~16 s; the page reloads every few seconds after that.
FILL_TIMEOUT = 60.0
# Written out, not taken from the code, so a wrong mapping shows.
STATUS_CLASSES = {
    "SUCCESS": "status-success",
    "FAILURE": "status-failure",
    "ABORTED": "status-aborted",
    "IN_PROGRESS": "status-in-progress",
    "NOT_FOUND": "status-not-found",
}
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
# The table as the browser renders it, read in one call so a reload cannot interleave.
READ_TABLE = """
const header = [...document.querySelectorAll("#tracked thead th")].map(th => th.textContent.trim());
return [...document.querySelectorAll("#tracked tbody tr")].map(tr => {
  const row = {};
  [...tr.children].forEach((td, i) => { row[header[i]] = td.textContent.trim(); });
  const status = tr.querySelector("td.status");
  row.classes = status ? status.className : "";
  row.background = status ? getComputedStyle(status).backgroundColor : "";
  return row;
});
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Debian's chromium through its chromedriver; nothing is downloaded."""
    chromium = need_tool("chromium")
    chromedriver = need_tool("chromedriver")
    if importlib.util.find_spec("selenium") is None:
        missing("selenium is not installed (pip install -e '.[dev]')")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager is never asked to find or fetch one.
    service = Service(executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    # The viewport itself, not the window around it, is 1200x800: the README's screenshot.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1200, "height": 800, "deviceScaleFactor": 1, "mobile": False},
    )
    yield driver
    driver.quit()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``demo`` as a process on free loopback ports: its page's URL and its output file."""
    port = free_port()
    output = tmp_path / "demo.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "elevate_import_exporter",
                "demo",
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--simulator.listen-address",
                f"127.0.0.1:{free_port()}",
                # Every request to the exporter is logged, so the test can tell who asked what.
                "--log.level",
                "debug",
            ],
            env=exporter_env(),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the demo exited with {process.returncode}:\n{output.read_text()}")
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=5) as response:
                status: int = response.status
                return status == 200
        except (urllib.error.URLError, OSError):
            return False

    wait_until(ready, timeout=30, interval=0.1, what="the demo to serve")
    yield url, output
    stop_process(process)


def expected_rows() -> dict[str, tuple[str, str]]:
    """Where each demo import ends: id -> (status, message)."""
    ends = {imp.id: (imp.steps[-1].status, imp.steps[-1].message or "") for imp in demo_imports()}
    return ends | {DEMO_UNKNOWN_ID: ("NOT_FOUND", "")}


def test_the_demo_page_fills_in_by_itself_without_any_scrape(
    browser: WebDriver, demo: tuple[str, Path]
) -> None:
    from selenium.common.exceptions import (
        JavascriptException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.support.wait import WebDriverWait

    url, output = demo
    expected = expected_rows()
    assert sorted(status for status, _ in expected.values()) == [
        "ABORTED",
        "FAILURE",
        "IN_PROGRESS",
        "NOT_FOUND",
        "SUCCESS",
        "SUCCESS",
    ], "the demo's scripts changed; this test's expectations need a look"

    browser.get(url + "/")
    first_load = browser.execute_script("return performance.timeOrigin")

    def table() -> dict[str, dict[str, Any]]:
        rows = browser.execute_script(READ_TABLE)
        return {row["Id"]: row for row in rows}

    seen: dict[str, tuple[str, str]] = {}

    def filled_in(_driver: object) -> dict[str, dict[str, Any]] | Literal[False]:
        rows = table()
        seen.clear()
        seen.update({i: (row["Status"], row["Message"]) for i, row in rows.items()})
        return rows if seen == expected else False

    # The test never reloads: only the page's own refresh can bring the final statuses.
    try:
        rows = WebDriverWait(
            browser,
            FILL_TIMEOUT,
            poll_frequency=0.5,
            ignored_exceptions=(JavascriptException, StaleElementReferenceException),
        ).until(filled_in)
    except TimeoutException:
        pytest.fail(f"after {FILL_TIMEOUT}s the page shows {seen}, not {expected}")

    assert browser.execute_script("return performance.timeOrigin") != first_load
    for import_id, row in rows.items():
        status = expected[import_id][0]
        assert STATUS_CLASSES[status] in row["classes"].split(), row
        if status in ("SUCCESS", "FAILURE", "ABORTED"):
            assert row["Last polled"] == "final, not asked again", row
        else:
            assert row["Last polled"].endswith(" s ago"), row
    backgrounds = {row["Status"]: row["background"] for row in rows.values()}
    assert len({backgrounds[s] for s in ("SUCCESS", "FAILURE", "IN_PROGRESS", "NOT_FOUND")}) == 4
    assert backgrounds["FAILURE"] == backgrounds["ABORTED"]

    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOT))

    log = output.read_text(encoding="utf-8", errors="replace")
    # The page came more than once, though the test opened it once; /metrics never.
    assert len(re.findall(r"GET / [0-9]{3}", log)) >= 2, log
    assert not re.search(r"[A-Z]+ /metrics", log), "nobody scraped the demo"


# How far the widest table reaches past the viewport, in CSS pixels (0: it fits).
OVERFLOW = """
const width = document.documentElement.clientWidth;
const tables = [...document.querySelectorAll("table")];
return Math.max(0, document.documentElement.scrollWidth - width,
                ...tables.map(t => Math.ceil(t.getBoundingClientRect().right) - width));
"""


def test_a_full_history_fits_a_1280_pixel_screen_with_its_labels_and_source(
    browser: WebDriver, tmp_path: Path
) -> None:
    from elevate_import_exporter.core.model import ImportInfo
    from elevate_import_exporter.core.records import ImportRecord
    from elevate_import_exporter.core.state import ImportState, Snapshot
    from elevate_import_exporter.site.landing import landing_page

    now = 1_800_000_000.0
    message = "Import failed: attribute 'price' is not a number on line 17 of the feed. " * 2
    labels = (("feed_name", "products-nightly-se"), ("path", "/api/v2/import/products"))
    history = [
        ImportRecord(
            f"5537431447739019{n:03d}",
            source="proxy",
            first_seen=now - 7200,
            type="PRODUCTS",
            labels=labels,
            status="FAILURE",
            message=message,
            status_since=now - 3600,
            final_at=now - 3600,
            retired_at=now - 60,
        )
        for n in range(5)
    ]
    live = ImportState(
        "9f1c2a7e-1b2c-4d5e-8f90-123456789abc",
        now - 60,
        ImportInfo("9f1c2a7e-1b2c-4d5e-8f90-123456789abc", "IN_PROGRESS", "PRODUCTS", message),
        now - 60,
        last_polled=now - 5,
    )
    page = tmp_path / "page.html"
    page.write_bytes(
        landing_page(Snapshot({live.id: live}, None), "/metrics", history, 1, 1, now=now)
    )
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
    )
    browser.get(page.as_uri())
    assert browser.execute_script(OVERFLOW) == 0
    # Every column is still there and shows its text.
    headers = browser.execute_script(
        "return [...document.querySelectorAll('#history th')].map(th => th.textContent)"
    )
    assert headers[-2:] == ["Labels", "Source"]
    cells = browser.execute_script(
        "return [...document.querySelectorAll('#history tbody tr:first-child td')]"
        ".map(td => td.textContent)"
    )
    assert cells[-1] == "proxy"
    assert "feed_name=products-nightly-se" in cells[-2]
