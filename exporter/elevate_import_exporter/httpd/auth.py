"""HTTP basic authentication against the bcrypt hashes of a web config's ``basic_auth_users``.

A bcrypt check costs tens of milliseconds by design, and Prometheus sends the same
credentials with every scrape, so a successful check is remembered for a short while, as
the exporter-toolkit does. The cache is keyed by an HMAC of user and password under a key
made at start, so neither the password nor a plain hash of it is kept in memory.

A remembered check takes no bcrypt turn, so it never waits behind checks that do. Those
run one at a time, with a few more allowed to wait for their turn: :meth:`BasicAuth.verify`
answers :attr:`Verdict.BUSY` to the rest at once, so that a flood of wrong passwords holds
a handful of handler threads (not all of them) and the server sheds it with a 429.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import secrets
import threading
import time
from collections import Counter
from collections.abc import Mapping

import bcrypt

# Seconds a successful check is remembered; a changed password in the file takes effect
# at once anyway, since a new config makes a new BasicAuth.
CACHE_SECONDS = 60.0
# Remembered checks at most (the toolkit's size); the oldest go first.
CACHE_SIZE = 100
REALM = "elevate-import-exporter"
CHALLENGE = f'Basic realm="{REALM}"'
# bcrypt checks admitted at once: one runs (as in the toolkit: a flood takes one core, not
# all of them), the others wait for their turn; beyond them a check is refused as busy.
ADMITTED_CHECKS = 4
# Seconds a client refused as busy is asked to wait (Retry-After).
RETRY_AFTER = 1
# A valid bcrypt digest (31 characters) to complete the decoy hash; what it is the digest
# of does not matter, only that it matches nothing a client sends.
_DIGEST = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(4))[29:]


class Verdict(enum.Enum):
    GRANTED = "granted"
    DENIED = "denied"
    BUSY = "busy"  # not checked: too many bcrypt checks at once; ask again later


class BasicAuth:
    """Checks ``Authorization: Basic ...`` against ``users`` (name -> bcrypt hash, checked
    as bcrypt when the file was loaded)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {name.encode(): hashed.encode() for name, hashed in users.items()}
        # An unknown user is checked against a decoy hash (its answer ignored) of the
        # costliest user's cost, so that the time taken does not tell which users exist.
        # It is a hash of nothing: a user's own hash would do as well, but a decoy that
        # can never match cannot let anyone in by mistake.
        self.decoy_cost = max((_cost(hashed) for hashed in self._users.values()), default=4)
        self._decoy = bcrypt.gensalt(self.decoy_cost) + _DIGEST
        self._key = secrets.token_bytes(32)
        self._remembered: dict[bytes, float] = {}  # HMAC -> when it expires
        self._lock = threading.Lock()  # guards _remembered and _work
        self._work: Counter[int] = Counter()  # bcrypt checks done, by cost
        self._turn = threading.Lock()  # the one bcrypt check running
        self._admitted = threading.BoundedSemaphore(ADMITTED_CHECKS)

    @property
    def decoy_hash(self) -> str:
        return self._decoy.decode()

    def work_done(self) -> Counter[int]:
        """The bcrypt checks done so far, by cost."""
        with self._lock:
            return Counter(self._work)

    def check(self, authorization: str | None) -> bool:
        """True if the header carries the name and password of a user in the file; waits
        for a bcrypt turn however many checks are waiting."""
        return self._verify(authorization, wait=True) is Verdict.GRANTED

    def verify(self, authorization: str | None) -> Verdict:
        """Whether the header carries the name and password of a user in the file, or
        :attr:`Verdict.BUSY` at once when the check would wait behind too many others."""
        return self._verify(authorization, wait=False)

    def _verify(self, authorization: str | None, *, wait: bool) -> Verdict:
        credentials = parse_basic(authorization)
        if credentials is None or not self._users:
            return Verdict.DENIED
        user, password = credentials
        stored = self._hash_of(user)
        token = hmac.new(self._key, user + b":" + password, hashlib.sha256).digest()
        if stored is not None and self._remembers(token):
            return Verdict.GRANTED
        if not self._admitted.acquire(blocking=wait):
            return Verdict.BUSY
        try:
            with self._turn:
                matches = stored is not None and self._checkpw(password, stored)
                # A wrong password of a user cheaper than the costliest is padded with the
                # decoy's work: a refusal then costs at least what an unknown user's costs,
                # whoever's name was sent (a right password is not padded: the client is
                # in, and its timing tells it nothing it does not know).
                if not matches and (stored is None or _cost(stored) < self.decoy_cost):
                    self._checkpw(password, self._decoy)
        finally:
            self._admitted.release()
        if not matches:
            return Verdict.DENIED
        self._remember(token)
        return Verdict.GRANTED

    def _checkpw(self, password: bytes, hashed: bytes) -> bool:
        with self._lock:
            self._work[_cost(hashed)] += 1
        return _checkpw(password, hashed)

    def _hash_of(self, user: bytes) -> bytes | None:
        # Every name compared, in constant time each: no early exit tells how far a
        # guessed name got.
        found = None
        for name, hashed in self._users.items():
            if hmac.compare_digest(name, user):
                found = hashed
        return found

    def _remembers(self, token: bytes) -> bool:
        # A dict lookup is not constant-time, but its key is an HMAC under a secret key:
        # its timing tells nothing about the password.
        with self._lock:
            expires = self._remembered.get(token)
            if expires is None:
                return False
            if expires <= time.monotonic():
                del self._remembered[token]
                return False
            return True

    def _remember(self, token: bytes) -> None:
        with self._lock:
            now = time.monotonic()
            if len(self._remembered) >= CACHE_SIZE:
                for old in [t for t, expires in self._remembered.items() if expires <= now]:
                    del self._remembered[old]
            while len(self._remembered) >= CACHE_SIZE:
                del self._remembered[next(iter(self._remembered))]
            self._remembered[token] = now + CACHE_SECONDS


# What ``hash-password`` makes: the toolkit's documentation uses cost 10, which a check
# takes tens of milliseconds at, and which the check cache above makes cheap per scrape.
DEFAULT_COST = 10
MIN_COST, MAX_COST = 4, 31
# bcrypt reads no further than 72 bytes: a longer password would be cut without a word
# (bcrypt 5 refuses it), so a hash of it could not be told from its first 72 bytes' hash.
MAX_PASSWORD_BYTES = 72


class PasswordError(ValueError):
    """A password or cost that cannot make a hash; the message never holds the password."""


def hash_password(password: bytes, cost: int = DEFAULT_COST) -> str:
    """The bcrypt hash (``$2b$``) of ``password`` for a web config's ``basic_auth_users``."""
    if not MIN_COST <= cost <= MAX_COST:
        raise PasswordError(f"the cost must be from {MIN_COST} to {MAX_COST}, got {cost}")
    if not password:
        raise PasswordError("the password is empty")
    if len(password) > MAX_PASSWORD_BYTES:
        raise PasswordError(
            f"the password is {len(password)} bytes long; bcrypt takes at most "
            f"{MAX_PASSWORD_BYTES} (UTF-8) bytes"
        )
    return bcrypt.hashpw(password, bcrypt.gensalt(cost)).decode("ascii")


def parse_basic(authorization: str | None) -> tuple[bytes, bytes] | None:
    """User and password (UTF-8 bytes) of ``Basic base64(user:password)``, or None if the
    header is missing or not exactly that."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True)
        decoded.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return user, password


def _cost(hashed: bytes) -> int:
    """The cost of a ``$2?$NN$...`` hash (checked as bcrypt when the file was loaded)."""
    return int(hashed[4:6])


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # longer than bcrypt's 72 bytes (refused since bcrypt 5)
        return False
