"""HTTP basic authentication against the bcrypt hashes of a web config's ``basic_auth_users``.

A bcrypt check costs tens of milliseconds by design, and Prometheus sends the same
credentials with every scrape, so a successful check is remembered for a short while, as
the exporter-toolkit does. The cache is keyed by an HMAC of user and password under a key
made at start, so neither the password nor a plain hash of it is kept in memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Mapping

import bcrypt

# Seconds a successful check is remembered; a changed password in the file takes effect
# at once anyway, since a new config makes a new BasicAuth.
CACHE_SECONDS = 60.0
# Remembered checks at most (the toolkit's size); the oldest go first.
CACHE_SIZE = 100
REALM = "elevate-import-exporter"
CHALLENGE = f'Basic realm="{REALM}"'


class BasicAuth:
    """Checks ``Authorization: Basic ...`` against ``users`` (name -> bcrypt hash, checked
    as bcrypt when the file was loaded)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {name.encode(): hashed.encode() for name, hashed in users.items()}
        # An unknown user is checked against a real hash (its answer ignored), so that
        # the time taken does not tell which users exist; the costliest one, so that it
        # never answers faster than a known user.
        self._decoy = max(self._users.values(), key=lambda h: h[4:6], default=b"")
        self._key = secrets.token_bytes(32)
        self._remembered: dict[bytes, float] = {}  # HMAC -> when it expires
        self._lock = threading.Lock()
        # One bcrypt check at a time, as the toolkit: a flood of wrong passwords takes
        # one core, not all of them.
        self._bcrypt = threading.Lock()

    def check(self, authorization: str | None) -> bool:
        """True if the header carries the name and password of a user in the file."""
        credentials = parse_basic(authorization)
        if credentials is None or not self._users:
            return False
        user, password = credentials
        stored = self._hash_of(user)
        token = hmac.new(self._key, user + b":" + password, hashlib.sha256).digest()
        if stored is not None and self._remembers(token):
            return True
        with self._bcrypt:
            matches = _checkpw(password, stored or self._decoy)
        if stored is None or not matches:
            return False
        self._remember(token)
        return True

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


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # longer than bcrypt's 72 bytes (refused since bcrypt 5)
        return False
