"""Basic auth under attack, through a real `run` process: a flood of wrong passwords does
not starve the clients whose credentials are remembered, and how long a refusal takes does
not tell which user names exist."""

from __future__ import annotations

import http.client
import threading
import time
from base64 import b64encode
from collections import Counter
from pathlib import Path

import bcrypt
import pytest

from elevate_import_exporter.httpd.auth import BasicAuth
from elevate_import_exporter.simulator import Simulator
from tests.conftest import SIM_KEY, ExporterProcess, ExporterProcessFor
from tests.support import free_port, wait_until

GOOD = "the right one"


def basic(user: str, password: str) -> str:
    return "Basic " + b64encode(f"{user}:{password}".encode()).decode()


def hashed(password: str, cost: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


def start(
    exporter_process: ExporterProcessFor,
    simulator: Simulator,
    tmp_path: Path,
    users: str,
    where: str = "exporter",
) -> tuple[ExporterProcess, int]:
    """The exporter with basic auth; the port of ``where``: its own, or its import proxy's."""
    config = tmp_path / "web-config.yml"
    config.write_text("basic_auth_users:\n" + users)
    port, proxy_port = free_port(), free_port()
    proc = exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--proxy.listen-address",
        f"127.0.0.1:{proxy_port}",
        "--web.config.file",
        str(config),
        env={"ELEVATE_API_KEY": SIM_KEY},
        wait=False,
    )
    return proc, proxy_port if where == "proxy" else port


def get(port: int, authorization: str, timeout: float = 60.0) -> tuple[int, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/-/healthy", headers={"Authorization": authorization})
        answer = connection.getresponse()
        answer.read()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}
    finally:
        connection.close()


def wait_serving(port: int, authorization: str) -> int:
    """The status the client with ``authorization`` gets once it is let in: the
    exporter's 200, or what Elevate answers through the proxy."""
    got: list[int] = []

    def up() -> bool:
        try:
            got.append(get(port, authorization, timeout=10)[0])
        except OSError:
            return False
        return got[-1] not in (401, 429, 503)

    wait_until(up, timeout=30, what="the exporter to let the good client in")
    return got[-1]


# -- 6. a flood of wrong passwords -------------------------------------------------------------

ATTACKERS = 100
GOOD_REQUESTS = 20
# Far above what a good request takes on a loaded machine, far below what it takes behind
# a queue of ~100 bcrypt checks of cost 12 (about 25 s on one core).
PATIENCE = 6.0


@pytest.mark.parametrize(
    ("where", "attacker_user"),
    [("exporter", "prom"), ("exporter", "nobody"), ("proxy", "nobody")],
    ids=["known user", "unknown user", "unknown user at the proxy"],
)
def test_a_flood_of_wrong_passwords_does_not_starve_a_client_with_remembered_credentials(
    exporter_process: ExporterProcessFor,
    simulator: Simulator,
    tmp_path: Path,
    where: str,
    attacker_user: str,
) -> None:
    users = f"  prom: '{hashed(GOOD, 12)}'\n"
    proc, port = start(exporter_process, simulator, tmp_path, users, where)
    good = basic("prom", GOOD)
    expected = wait_serving(port, good)  # checked once: remembered from now on
    answered: Counter[int] = Counter()
    retry_after: set[str] = set()
    stop = threading.Event()
    lock = threading.Lock()

    def attack(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        wrong = basic(attacker_user, f"guess {number}")
        while not stop.is_set():
            try:
                connection.request("GET", "/-/healthy", headers={"Authorization": wrong})
                answer = connection.getresponse()
                answer.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                continue
            with lock:
                answered[answer.status] += 1
                if answer.status in (429, 503):
                    retry_after.add(answer.getheader("Retry-After") or "")
        connection.close()

    attackers = [threading.Thread(target=attack, args=(n,), daemon=True) for n in range(ATTACKERS)]
    for thread in attackers:
        thread.start()
    try:
        # The flood is on once its first answers come back.
        wait_until(lambda: sum(answered.values()) >= 4, timeout=60)
        waits: list[float] = []
        codes: list[int] = []
        for _ in range(GOOD_REQUESTS):
            began = time.monotonic()
            try:
                codes.append(get(port, good, timeout=PATIENCE)[0])
            except TimeoutError:
                codes.append(0)
            waits.append(time.monotonic() - began)
            if codes[-1] != 200:
                break
        flood_still_on = all(thread.is_alive() for thread in attackers)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(130)
    assert flood_still_on
    assert codes == [expected] * GOOD_REQUESTS, (codes, waits)
    assert answered[expected] == 0
    assert answered[401] >= 1  # some wrong passwords were checked, and refused
    assert retry_after
    assert all(value.isdigit() and int(value) >= 1 for value in retry_after)
    assert proc.process.poll() is None
    assert get(port, good)[0] == expected


# -- 7. timing and user names ---------------------------------------------------------------


def test_unknown_users_are_checked_against_a_decoy_of_the_costliest_users_cost() -> None:
    users = {
        "cheap": hashed("a", 4),
        "dear": hashed("b", 11),
        "middle": hashed("c", 6),
    }
    auth = BasicAuth(users)
    assert auth.decoy_cost == 11
    assert auth.decoy_hash not in users.values()  # no user's hash serves as the decoy
    assert BasicAuth({"only": hashed("a", 5)}).decoy_cost == 5


def test_every_refusal_does_the_bcrypt_work_of_the_costliest_user() -> None:
    auth = BasicAuth({"cheap": hashed("a", 4), "dear": hashed("b", 10)})
    for header in (basic("cheap", "wrong"), basic("nobody", "wrong"), basic("dear", "wrong")):
        before = auth.work_done()
        assert not auth.check(header)
        costs = auth.work_done() - before
        # Wrong passwords of cheap users cost at least what unknown users cost.
        assert costs[10] == 1, (header, costs)
    before = auth.work_done()
    assert auth.check(basic("cheap", "a"))
    assert auth.work_done() - before == Counter({4: 1})  # a right password is not padded


def test_a_wrong_password_of_a_cheap_user_takes_as_long_as_an_unknown_user(
    exporter_process: ExporterProcessFor, simulator: Simulator, tmp_path: Path
) -> None:
    users = f"  cheap: '{hashed(GOOD, 4)}'\n  dear: '{hashed(GOOD, 12)}'\n"
    _proc, port = start(exporter_process, simulator, tmp_path, users)
    wait_serving(port, basic("cheap", GOOD))

    times: dict[str, list[float]] = {"cheap": [], "nobody": [], "dear": []}
    for attempt in range(5):  # interleaved, so that a burst of load hits all three alike
        for user, taken in times.items():
            began = time.monotonic()
            assert get(port, basic(user, f"wrong {attempt}"))[0] == 401
            taken.append(time.monotonic() - began)
    # Load only ever adds to a time: the least of each is the work itself.
    cheap, unknown, dear = (min(times[user]) for user in ("cheap", "nobody", "dear"))
    # A cost-12 check is ~250 times a cost-4 one: a cheap refusal would be far below.
    assert cheap >= dear / 3, (cheap, unknown, dear)
    assert unknown >= dear / 3, (cheap, unknown, dear)
