"""The web configuration file, in the format of Prometheus' exporter-toolkit (web-config.yml).

Same keys, meanings and refusals as the toolkit (unknown keys, keys given twice, wrong types),
so an operator can reuse the file their node_exporter reads; :func:`load_web_config` reads
one, :class:`WebConfigWatcher` keeps the last good version of one that may change.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from elevate_import_exporter.core.files import (
    Signature,
    UnreadableFile,
    path_signature,
    read_regular_file,
    read_text_file,
)
from elevate_import_exporter.httpd.auth import BasicAuth

log = logging.getLogger(__name__)

CLIENT_AUTH_TYPES = (
    "NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)  # fmt: skip
TLS_VERSIONS = ("TLS10", "TLS11", "TLS12", "TLS13")
# A web config is a few lines; a PEM file a few kilobytes (a long chain, a big CA bundle
# stays far below). Anything larger is not what it claims to be.
MAX_WEB_CONFIG_BYTES = 1024 * 1024
MAX_PEM_BYTES = 4 * 1024 * 1024
# The names Go's tls.CipherSuites() knows, which is what the toolkit accepts; whether
# Python's ssl can honour one is for the code that builds the SSL context to say.
CIPHER_SUITES = (
    "TLS_RSA_WITH_AES_128_CBC_SHA", "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)  # fmt: skip
CURVES = ("CurveP256", "CurveP384", "CurveP521", "X25519")
# The only headers the toolkit lets a file set, with the values allowed where it limits
# them: anything else (Authorization, Content-Type, ...) would break the exporter's answers.
EXTRA_HEADERS: Mapping[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (), "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}  # fmt: skip
# $2a$, $2b$ or $2y$, a two-digit cost, 22 characters of salt and 31 of hash.
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
_BCRYPT_COSTS = range(4, 32)
# The Go toolkit's spelling of RequireAnyClientCert, kept for old files.
_CLIENT_AUTH_ALIASES = {"RequireClientCert": "RequireAnyClientCert"}

_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
_TLS_KEYS = (
    "cert", "key", "client_ca", "cert_file", "key_file", "client_ca_file", "client_auth_type",
    "min_version", "max_version", "cipher_suites", "curve_preferences",
    "prefer_server_cipher_suites", "client_allowed_sans",
)  # fmt: skip
_HTTP_KEYS = ("http2", "headers")
_RATE_KEYS = ("interval", "burst")
# Seconds between looks at the file's signature (size, time, inode) for a change.
CHECK_INTERVAL = 1.0
# Seconds a change that would open the server (no users left, TLS or client certificates
# gone) must stay in the file before it is applied: longer than any rewrite takes.
HOLD_SECONDS = 2.0
_Keys = tuple[str, ...] | None  # the keys a mapping may have; None: any


class WebConfigError(ValueError):
    """The web configuration file is unreadable or invalid; the message names file and key."""


@dataclass(frozen=True)
class TlsServerConfig:
    """``tls_server_config``: certificate and key from files (relative to the web config
    file's directory, as in the toolkit; readable when it was loaded) or inline PEM text."""

    cert_file: Path | None = None
    key_file: Path | None = None
    cert: str | None = None  # inline PEM
    key: str | None = field(default=None, repr=False)  # inline PEM
    client_ca_file: Path | None = None
    client_ca: str | None = None  # inline PEM
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"
    max_version: str | None = None  # None: the newest the library knows
    cipher_suites: tuple[str, ...] = ()  # Go cipher suite names, as the toolkit takes them
    curve_preferences: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    client_allowed_sans: tuple[str, ...] = ()


@dataclass(frozen=True)
class HttpServerConfig:
    """``http_server_config``: extra response headers; HTTP/2 is accepted, not served."""

    headers: Mapping[str, str] = field(default_factory=dict)
    http2: bool = True


@dataclass(frozen=True)
class WebConfig:
    """A whole web-config.yml; the default (no file) is plain HTTP without authentication."""

    tls: TlsServerConfig | None = None
    http: HttpServerConfig = field(default_factory=HttpServerConfig)
    basic_auth_users: Mapping[str, str] = field(default_factory=dict, repr=False)  # -> bcrypt
    source: Path | None = None


def load_web_config(path: Path) -> WebConfig:
    """The web config in ``path``, checked; :class:`WebConfigError` names file and key."""
    try:
        _found, text = read_text_file(path, MAX_WEB_CONFIG_BYTES)
    except UnreadableFile as exc:
        raise WebConfigError(f"web config {path}: cannot read it: {exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        problem = str(exc)
        if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
            problem = f"{exc.problem or exc.context} (line {exc.problem_mark.line + 1})"
        problem = " ".join(problem.split())
        raise WebConfigError(f"web config {path}: not valid YAML: {problem}") from None
    return _config(path, data)


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice, as Go's strict YAML decoding does."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _config(path: Path, data: object) -> WebConfig:
    if data is None:  # an empty file: the toolkit's defaults
        return WebConfig(source=path)
    top = _Section(path, data, "", _TOP_KEYS)
    rate_limit = top.section("rate_limit", _RATE_KEYS)
    if str(rate_limit.data.get("interval") or "0").strip() not in ("0", "0s"):
        raise rate_limit.fail("interval", "rate limiting is not supported; remove it")
    http = top.section("http_server_config", _HTTP_KEYS)
    return WebConfig(
        tls=_tls(top.section("tls_server_config", _TLS_KEYS)),
        http=HttpServerConfig(
            headers=_headers(http.section("headers", None)),
            http2=http.flag("http2", True),
        ),
        basic_auth_users=_users(top.section("basic_auth_users", None)),
        source=path,
    )


def _tls(tls: _Section) -> TlsServerConfig | None:
    if not any(v is not None for v in tls.data.values()):
        return None  # as the toolkit: no TLS setting, no TLS
    pairs = (("cert", "cert_file", True), ("key", "key_file", True))
    for inline, file, needed in (*pairs, ("client_ca", "client_ca_file", False)):
        given = [k for k in (file, inline) if tls.data.get(k) not in (None, "")]
        if needed and not given:
            raise tls.fail(file, f"missing (give {file} or {inline})")
        if len(given) == 2:
            raise tls.fail(inline, f"give {file} or {inline}, not both")
    auth = tls.choice("client_auth_type", CLIENT_AUTH_TYPES) or "NoClientCert"
    if auth == "NoClientCert" and (tls.data.get("client_ca_file") or tls.data.get("client_ca")):
        raise tls.fail("client_auth_type", "a client CA is given but this is NoClientCert")
    low = tls.choice("min_version", TLS_VERSIONS) or "TLS12"
    high = tls.choice("max_version", TLS_VERSIONS)
    if high is not None and TLS_VERSIONS.index(high) < TLS_VERSIONS.index(low):
        raise tls.fail("max_version", f"{high} is below min_version {low}")
    return TlsServerConfig(
        cert_file=tls.file("cert_file"), key_file=tls.file("key_file"),
        cert=tls.string("cert"), key=tls.string("key"),
        client_ca_file=tls.file("client_ca_file"), client_ca=tls.string("client_ca"),
        client_auth_type=auth, min_version=low, max_version=high,
        cipher_suites=tls.names("cipher_suites", CIPHER_SUITES),
        curve_preferences=tls.names("curve_preferences", CURVES),
        prefer_server_cipher_suites=tls.flag("prefer_server_cipher_suites", True),
        client_allowed_sans=tls.names("client_allowed_sans", None),
    )  # fmt: skip


def _headers(section: _Section) -> dict[str, str]:
    headers: dict[str, str] = {}
    by_lower = {name.lower(): name for name in EXTRA_HEADERS}
    for name in section.data:
        canonical = by_lower.get(str(name).lower())
        if canonical is None:
            raise section.fail(name, f"cannot be set (only {', '.join(EXTRA_HEADERS)})")
        text = section.string(name, numbers=True) or ""
        if text and EXTRA_HEADERS[canonical] and text not in EXTRA_HEADERS[canonical]:
            raise section.fail(name, _not_one_of(text, EXTRA_HEADERS[canonical]))
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise section.fail(name, "control characters are not allowed")
        if text:  # the toolkit: "Unset if blank"
            headers[canonical] = text
    return headers


def _users(section: _Section) -> dict[str, str]:
    users: dict[str, str] = {}
    for name in section.data:
        if isinstance(name, bool) or not isinstance(name, str | int):
            raise section.fail(str(name), "a user name must be a string")
        user = str(name)
        if ":" in user:
            raise section.fail(user, "a user name cannot contain ':' in basic auth")
        hashed = section.string(name) or ""
        match = _BCRYPT.fullmatch(hashed)
        if match is None or int(match.group(1)) not in _BCRYPT_COSTS:
            raise section.fail(user, "not a bcrypt hash ($2a$, $2b$ or $2y$, cost 04 to 31)")
        users[user] = hashed
    return users


class _Section:
    """One mapping of the file, its keys checked; its getters refuse wrong types."""

    def __init__(self, path: Path, data: object, key: str, known: _Keys) -> None:
        self.path, self.key = path, key
        data = {} if data is None else data
        if not isinstance(data, dict):
            where = key or "(top level)"
            raise WebConfigError(
                f"web config {path}: {where}: must be a mapping, not {_kind(data)}"
            )
        for name in data if known is not None else ():
            if name not in known:  # type: ignore[operator]
                raise self.fail(name, f"unknown key (known: {', '.join(known or ())})")
        self.data: dict[object, object] = data

    def fail(self, name: object, problem: str) -> WebConfigError:
        where = f"{self.key}.{name}" if self.key else name
        return WebConfigError(f"web config {self.path}: {where}: {problem}")

    def section(self, name: str, known: _Keys) -> _Section:
        return _Section(self.path, self.data.get(name), f"{self.key}.{name}".lstrip("."), known)

    def string(self, name: object, *, numbers: bool = False) -> str | None:
        value = self.data.get(name)
        # YAML reads `X-XSS-Protection: 1` as a number; Go's decoder takes it as text.
        if numbers and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if value is not None and not isinstance(value, str):
            raise self.fail(name, f"must be a string, not {_kind(value)}")
        return value or None

    def file(self, name: str) -> Path | None:
        text = self.string(name)
        if text is None:
            return None
        path = self.path.parent / text  # relative to the file, as in the toolkit
        try:
            read_regular_file(path, MAX_PEM_BYTES)
        except UnreadableFile as exc:
            raise self.fail(name, f"cannot read {path}: {exc}") from None
        return path

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        text = self.string(name)
        if text is None:
            return None
        text = _CLIENT_AUTH_ALIASES.get(text, text)
        if text not in choices:
            raise self.fail(name, _not_one_of(text, choices))
        return text

    def names(self, name: str, choices: tuple[str, ...] | None) -> tuple[str, ...]:
        value = self.data.get(name)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(name, f"must be a list, not {_kind(value)}")
        for item in value:
            if not isinstance(item, str) or (choices is not None and item not in choices):
                raise self.fail(name, _not_one_of(item, choices) if choices else "not a string")
        return tuple(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.data.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false, not {_kind(value)}")
        return value


def _not_one_of(value: object, choices: tuple[str, ...]) -> str:
    return f"{value!r} is not one of {', '.join(choices)}"


def _kind(value: object) -> str:
    kinds = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    kinds[type(None)] = "nothing"
    return kinds.get(type(value), f"a {type(value).__name__}")


_NO_CONFIG = WebConfig()


class WebAccess:
    """The web config a request is served with, and the basic auth its users ask for
    (None: none). ``source`` is a web config, or a function giving the current one (such
    as :meth:`WebConfigWatcher.current`), asked once a request; a new config brings a new
    :class:`~.auth.BasicAuth`, which also forgets the checks remembered under the old
    users."""

    def __init__(self, source: WebConfig | Callable[[], WebConfig] | None = None) -> None:
        self._lock = threading.Lock()
        self._current: tuple[WebConfig, BasicAuth | None] = (_NO_CONFIG, None)
        self._source: Callable[[], WebConfig] = lambda: _NO_CONFIG
        self.reload(source)

    def reload(self, source: WebConfig | Callable[[], WebConfig] | None) -> None:
        """Serve with ``source`` from the next request on (SIGHUP)."""
        fixed = source or _NO_CONFIG
        getter = fixed if callable(fixed) else lambda: fixed
        with self._lock:
            self._source = getter
        self.current()

    def current(self) -> tuple[WebConfig, BasicAuth | None]:
        with self._lock:
            config = self._source()
            if config is not self._current[0]:
                users = config.basic_auth_users
                self._current = (config, BasicAuth(users) if users else None)
            return self._current


class WebConfigWatcher:
    """The current web config of ``path``: re-read when the file changes (looked at no more
    than every ``check_interval`` seconds) or on :meth:`reload`; a file that turns bad keeps
    the last good config and logs one warning. Raises :class:`WebConfigError` if the file is
    bad to begin with.

    A file rewritten in place is empty or half-written for a moment, and such a file can
    be a valid config without users. So a change that would remove every user or TLS, or
    weaken client certificates, is held (with a warning) until the file has stayed the same
    for ``hold_seconds`` and is then applied with a warning; until then the last config
    stays in force. Whether TLS is served is decided at start (as in the toolkit): a file
    that adds or removes ``tls_server_config`` gets a warning that this needs a restart,
    and :attr:`unapplied` says so.
    """

    def __init__(
        self,
        path: Path,
        *,
        check_interval: float = CHECK_INTERVAL,
        hold_seconds: float = HOLD_SECONDS,
    ) -> None:
        self.path = path
        self._check_interval = check_interval
        self._hold_seconds = hold_seconds
        self._lock = threading.Lock()
        self._signature = path_signature(path)
        self._config = load_web_config(path)
        self._serves_tls = self._config.tls is not None
        self._checked = time.monotonic()
        self._bad = False
        # A weakening seen, the file's signature then, and since when (monotonic) the file
        # has looked so.
        self._held: tuple[WebConfig, Signature | None, float] | None = None
        # Why the file as last read is not wholly in force; None when it is.
        self.unapplied: str | None = None

    def current(self) -> WebConfig:
        with self._lock:
            if time.monotonic() - self._checked >= self._check_interval:
                self._refresh(force=False)
            return self._config

    def reload(self) -> WebConfig:
        """Read the file now, changed or not (SIGHUP); :attr:`unapplied` tells whether what
        it holds is in force (a warning has said why not, once per change)."""
        with self._lock:
            self._refresh(force=True)
            return self._config

    def _refresh(self, *, force: bool) -> None:
        now = self._checked = time.monotonic()
        signature = path_signature(self.path)
        if signature == self._signature and not force and self._held is None:
            return
        self._signature = signature
        try:
            config = load_web_config(self.path)
        except WebConfigError as exc:
            self.unapplied = f"{exc}; keeping the last good web config"
            if not self._bad:
                log.warning("%s", self.unapplied)
            self._bad, self._held = True, None
            return
        if self._bad:
            log.info("web config %s is good again", self.path)
        self._bad = False
        self._consider(config, signature, now)

    def _consider(self, config: WebConfig, signature: Signature | None, now: float) -> None:
        weakened = weakenings(self._config, config)
        if not weakened:
            self._held = None
        elif self._held is None or self._held[0] != config:
            self._held = (config, signature, now)
            self.unapplied = (
                f"web config {self.path} {weakened}; held until the file stays the same for "
                f"{self._hold_seconds:g} s (a file being rewritten looks like this for a moment)"
            )
            log.warning("%s", self.unapplied)
            return
        elif self._held[1] != signature:  # written again meanwhile: not settled
            self._held = (config, signature, now)
            return
        elif now - self._held[2] < self._hold_seconds:
            return
        else:
            self._held = None
            log.warning("web config %s %s: applied, the file has stayed so", self.path, weakened)
        self.unapplied = self._tls_unapplied(config)
        if config != self._config:  # a rewrite of the same text keeps what was remembered
            self._config = config

    def _tls_unapplied(self, config: WebConfig) -> str | None:
        if (config.tls is not None) == self._serves_tls:
            return None
        if self._serves_tls:
            what = "removes tls_server_config, but TLS stays on until the exporter restarts"
        else:
            what = "adds tls_server_config, but the exporter serves plain HTTP until it restarts"
        message = f"web config {self.path} {what}; the rest of the file is applied"
        if message != self.unapplied:  # once per change, not at every look
            log.warning("%s", message)
        return message


# Client certificate checks from none to the strictest (RequireAnyClientCert is refused
# where TLS is set up, so its rank does not matter).
_CLIENT_AUTH_RANK = {
    "NoClientCert": 0, "RequestClientCert": 0, "RequireAnyClientCert": 1,
    "VerifyClientCertIfGiven": 1, "RequireAndVerifyClientCert": 2,
}  # fmt: skip


def weakenings(old: WebConfig, new: WebConfig) -> str:
    """What ``new`` opens that ``old`` kept closed, in words; empty if nothing."""
    found = []
    if old.basic_auth_users and not new.basic_auth_users:
        found.append("has no basic_auth_users any more (basic auth off)")
    if old.tls is not None and new.tls is None:
        found.append("has no tls_server_config any more")
    elif old.tls is not None and new.tls is not None:
        before, after = old.tls.client_auth_type, new.tls.client_auth_type
        if _CLIENT_AUTH_RANK[after] < _CLIENT_AUTH_RANK[before]:
            found.append(f"lowers client_auth_type from {before} to {after}")
        if old.tls.client_allowed_sans and not new.tls.client_allowed_sans:
            found.append("has no client_allowed_sans any more")
    return " and ".join(found)
