"""The exporter's settings: one frozen object, validated apart from flag parsing.

The CLI hands over the raw strings it got from flags and the environment;
everything about what a good value is lives here, so every source of a value
gets the same checks and the same messages.
"""

from __future__ import annotations

import math
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from elevate_import_exporter.core.files import UnreadableFile, read_text_file
from elevate_import_exporter.core.logs import LOG_FORMATS, LOG_LEVELS
from elevate_import_exporter.core.model import API_FLAVOURS, id_rule
from elevate_import_exporter.core.outcomes import (
    DEFAULT_DURATION_BUCKETS,
    DEFAULT_MAX_VALUES,
    DEFAULT_QUEUE_BUCKETS,
    LabelNameError,
    checked_buckets,
    checked_names,
)
from elevate_import_exporter.core.secret import Secret

# The option tables and the syntax of values live in options.py; re-exported for callers
# that know config only.
from elevate_import_exporter.settings.options import LOG_OPTIONS as LOG_OPTIONS
from elevate_import_exporter.settings.options import PROXY_OPTIONS as PROXY_OPTIONS
from elevate_import_exporter.settings.options import RUN_OPTIONS as RUN_OPTIONS
from elevate_import_exporter.settings.options import ConfigError as ConfigError
from elevate_import_exporter.settings.options import Option as Option
from elevate_import_exporter.settings.options import address_text, default, same_socket, shown_url
from elevate_import_exporter.settings.options import parse_duration as parse_duration
from elevate_import_exporter.settings.options import parse_http_url as parse_http_url
from elevate_import_exporter.settings.options import parse_listen_address as parse_listen_address

MAX_CONCURRENCY = 256
MAX_RETRIES = 10
MAX_TIMEOUT = 300.0
MAX_MIN_POLL_INTERVAL = 24 * 3600.0
MAX_TRACKED_LIMIT = 1_000_000
MAX_RETENTION = 365 * 86400.0
MAX_HISTORY = 10 * 365 * 86400.0
MAX_PROXY_TIMEOUT = 24 * 3600.0
MAX_DRAIN_TIMEOUT = 24 * 3600.0
MAX_METRIC_LABEL_VALUES = 10_000
MAX_BUCKETS = 40
_SECRET_HEADERS = frozenset({"api-key", "authorization", "proxy-authorization", "cookie"})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
# An API key is tens of characters; a larger file is not a key file.
MAX_KEY_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class ClientSettings:
    """What the Elevate client needs, and no more: where, with which key and flavour, and
    how hard to try (in flight at once, seconds a request, extra tries)."""

    base_url: str
    api: str
    api_key: Secret = field(repr=False)
    concurrency: int = 8
    timeout: float = 5.0
    retries: int = 1


@dataclass(frozen=True)
class Settings:
    """Validated settings of ``run``; build them with :func:`load_settings`."""

    base_url: str
    api: str
    api_key: Secret = field(repr=False)
    import_ids: tuple[str, ...]
    ids_file: Path | None
    concurrency: int
    timeout: float
    retries: int
    min_poll_interval: float
    max_tracked: int
    # The first of listen_addresses: where the exporter says it serves.
    listen_host: str
    listen_port: int
    telemetry_path: str
    log_level: str
    log_format: str
    web_config_file: Path | None
    auth_exempt_health: bool
    # Every [host]:port to serve on, the first one first; never empty.
    listen_addresses: tuple[tuple[str, int], ...] = ()
    # None: imports are kept in memory only (--storage.path "").
    storage_path: Path | None = None
    retention: float = 24 * 3600.0
    history: float = 30 * 86400.0
    enable_registration: bool = False
    # Where the import proxy listens; empty: no proxy.
    proxy_addresses: tuple[tuple[str, int], ...] = ()
    proxy_timeout: float = 600.0
    proxy_label_header: str = "X-Feed-Name"
    # Registration and proxy labels published on the info series and the aggregates.
    imports_metric_labels: tuple[str, ...] = ()
    imports_metric_labels_max_values: int = DEFAULT_MAX_VALUES
    imports_duration_buckets: tuple[float, ...] = DEFAULT_DURATION_BUCKETS
    imports_queue_buckets: tuple[float, ...] = DEFAULT_QUEUE_BUCKETS
    # What is allowed but worth a word at start (a key file every user can read); the
    # CLI logs each once logging is set up.
    warnings: tuple[str, ...] = ()

    @property
    def client(self) -> ClientSettings:
        """The part of these settings the Elevate client is built from."""
        return ClientSettings(
            self.base_url, self.api, self.api_key, self.concurrency, self.timeout, self.retries
        )


@dataclass(frozen=True)
class ProxySettings:
    """Validated settings of ``proxy``, the import proxy alone; build them with
    :func:`load_proxy_settings`. Files named here (password, CA, certificate, key) are
    read where the link to the exporter is built."""

    base_url: str
    api: str
    # Where feed jobs connect, and where the proxy's own /metrics and health are; never empty.
    proxy_addresses: tuple[tuple[str, int], ...]
    listen_addresses: tuple[tuple[str, int], ...]
    web_config_file: Path | None
    # /-/healthy and /-/ready of the telemetry port without basic auth (probes send none).
    auth_exempt_health: bool
    proxy_timeout: float
    proxy_label_header: str
    drain_timeout: float
    # The exporter's base URL (scheme://host[:port][/prefix]), without credentials.
    registration_url: str
    registration_spool: Path | None
    registration_username: str | None
    registration_password_file: Path | None
    registration_ca_file: Path | None
    registration_cert_file: Path | None
    registration_key_file: Path | None
    registration_allow_insecure: bool
    log_level: str
    log_format: str


def _proxy_default(dest: str) -> str:
    return default(dest, PROXY_OPTIONS)


def load_proxy_settings(
    *,
    cluster_id: str | None = None,
    base_url: str | None = None,
    api: str = _proxy_default("api"),
    proxy_listen_address: str | Iterable[str] = _proxy_default("proxy_listen_address"),
    listen_address: str | Iterable[str] = _proxy_default("listen_address"),
    web_config_file: str | None = None,
    auth_exempt_health: bool = False,
    proxy_timeout: str = _proxy_default("proxy_timeout"),
    proxy_label_header: str = _proxy_default("proxy_label_header"),
    drain_timeout: str = _proxy_default("drain_timeout"),
    registration_url: str | None = None,
    registration_spool: str | None = None,
    registration_username: str | None = None,
    registration_password_file: str | None = None,
    registration_ca_file: str | None = None,
    registration_cert_file: str | None = None,
    registration_key_file: str | None = None,
    registration_allow_insecure: bool = False,
    log_level: str = default("log_level"),
    log_format: str = default("log_format"),
) -> ProxySettings:
    """Validate raw option values into :class:`ProxySettings` or raise :class:`ConfigError`."""
    web = _listen_addresses(listen_address)
    proxy = _proxy_addresses(proxy_listen_address)
    if not proxy:
        raise ConfigError("--proxy.listen-address must be given at least once")
    _apart(web, proxy)
    return ProxySettings(
        base_url=_base_url(cluster_id, base_url),
        api=choice(api, "--elevate.api", API_FLAVOURS),
        proxy_addresses=proxy,
        listen_addresses=web,
        web_config_file=Path(web_config_file) if web_config_file else None,
        auth_exempt_health=bool(auth_exempt_health),
        proxy_timeout=_positive_duration(proxy_timeout, "--proxy.timeout", MAX_PROXY_TIMEOUT),
        proxy_label_header=_header_name(proxy_label_header, "--proxy.label-header"),
        drain_timeout=_duration(drain_timeout, "--proxy.drain-timeout", MAX_DRAIN_TIMEOUT),
        registration_url=_registration_url(registration_url),
        registration_spool=_spool(registration_spool),
        registration_username=registration_username or None,
        registration_password_file=_path(registration_password_file),
        registration_ca_file=_path(registration_ca_file),
        registration_cert_file=_path(registration_cert_file),
        registration_key_file=_path(registration_key_file),
        registration_allow_insecure=bool(registration_allow_insecure),
        log_level=choice(log_level, "--log.level", LOG_LEVELS),
        log_format=choice(log_format, "--log.format", LOG_FORMATS),
    )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _registration_url(value: str | None) -> str:
    name = "--registration.url"
    if not value or not value.strip():
        raise ConfigError(
            f"{name} (ELEVATE_EXPORTER_REGISTRATION_URL) is required: the base URL of the "
            "exporter that tracks the imports, e.g. https://exporter:10025"
        )
    if re.search(r"//[^/?#]*@", value):
        # Not echoed: it holds a password, and a password on a command line shows in `ps`.
        raise ConfigError(
            f"{name} must not hold credentials (user:password@): use --registration.username "
            "with --registration.password-file or ELEVATE_EXPORTER_REGISTRATION_PASSWORD"
        )
    return parse_http_url(value.strip(), name).base


def _spool(value: str | None) -> Path | None:
    """The spool file, or None; refused if it is a folder or a device (its folder is made
    where it is opened)."""
    if not value:
        return None
    path = Path(value)
    if path.is_dir():
        raise ConfigError(f"--registration.spool {value!r} is a directory: name a file in it")
    if path.exists() and not path.is_file():
        raise ConfigError(f"--registration.spool {value!r} is not a regular file")
    return path


def cluster_url(cluster_id: str) -> str:
    return f"https://{cluster_id}.api.esales.apptus.cloud"


def load_settings(
    *,
    cluster_id: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    api_key_file: str | None = None,
    import_ids: Iterable[str] = (),
    ids_file: str | None = None,
    api: str = default("api"),
    concurrency: str | int = default("concurrency"),
    timeout: str | float = default("timeout"),
    retries: str | int = default("retries"),
    min_poll_interval: str = default("min_poll_interval"),
    max_tracked: str | int = default("max_tracked"),
    listen_address: str | Iterable[str] = default("listen_address"),
    telemetry_path: str = default("telemetry_path"),
    log_level: str = default("log_level"),
    log_format: str = default("log_format"),
    web_config_file: str | None = None,
    auth_exempt_health: bool = False,
    storage_path: str | None = default("storage_path"),
    retention: str = default("retention"),
    history: str = default("history"),
    enable_registration: bool = False,
    proxy_listen_address: str | Iterable[str] = (),
    proxy_timeout: str = default("proxy_timeout"),
    proxy_label_header: str = default("proxy_label_header"),
    imports_metric_labels: str | Iterable[str] | None = None,
    imports_metric_labels_max_values: str | int = default("imports_metric_labels_max_values"),
    imports_duration_buckets: str | Iterable[float] = default("imports_duration_buckets"),
    imports_queue_buckets: str | Iterable[float] = default("imports_queue_buckets"),
) -> Settings:
    """Validate raw option values into :class:`Settings` or raise :class:`ConfigError`.

    ``api_key`` is the value of ``ELEVATE_API_KEY``; no flag takes the key itself.
    """
    addresses = _listen_addresses(listen_address)
    host, port = addresses[0]
    proxy_addresses = _proxy_addresses(proxy_listen_address)
    _apart(addresses, proxy_addresses)
    flavour = choice(api, "--elevate.api", API_FLAVOURS)
    key = _api_key(api_key, api_key_file)
    return Settings(
        base_url=_base_url(cluster_id, base_url),
        api=flavour,
        api_key=key,
        import_ids=_import_ids(import_ids, flavour),
        ids_file=Path(ids_file) if ids_file else None,
        concurrency=_whole_number(concurrency, "--elevate.concurrency", 1, MAX_CONCURRENCY),
        timeout=_seconds(timeout, "--elevate.timeout"),
        retries=_whole_number(retries, "--elevate.retries", 0, MAX_RETRIES),
        min_poll_interval=_duration(
            min_poll_interval, "--elevate.min-poll-interval", MAX_MIN_POLL_INTERVAL
        ),
        max_tracked=_whole_number(max_tracked, "--imports.max-tracked", 1, MAX_TRACKED_LIMIT),
        listen_host=host,
        listen_port=port,
        telemetry_path=_telemetry_path(telemetry_path),
        log_level=choice(log_level, "--log.level", LOG_LEVELS),
        log_format=choice(log_format, "--log.format", LOG_FORMATS),
        web_config_file=Path(web_config_file) if web_config_file else None,
        auth_exempt_health=bool(auth_exempt_health),
        listen_addresses=addresses,
        storage_path=Path(storage_path) if storage_path else None,
        retention=_positive_duration(retention, "--imports.retention", MAX_RETENTION),
        history=_duration(history, "--storage.history", MAX_HISTORY),
        enable_registration=bool(enable_registration),
        proxy_addresses=proxy_addresses,
        proxy_timeout=_positive_duration(proxy_timeout, "--proxy.timeout", MAX_PROXY_TIMEOUT),
        proxy_label_header=_header_name(proxy_label_header, "--proxy.label-header"),
        imports_metric_labels=_metric_labels(imports_metric_labels),
        imports_metric_labels_max_values=_whole_number(
            imports_metric_labels_max_values,
            "--imports.metric-labels-max-values",
            1,
            MAX_METRIC_LABEL_VALUES,
        ),
        imports_duration_buckets=_buckets(imports_duration_buckets, "--imports.duration-buckets"),
        imports_queue_buckets=_buckets(imports_queue_buckets, "--imports.queue-buckets"),
        warnings=tuple(w for w in [key_file_warning(api_key_file)] if w),
    )


_API_PATH = re.compile(r"(?:/.*)?/api(?:/v\d+(?:/.*)?)?/?", re.IGNORECASE)


def _base_url(cluster_id: str | None, base_url: str | None) -> str:
    if base_url:
        url = parse_http_url(base_url, "--elevate.base-url")
        # A path prefix is a gateway's (the proxy puts it before every path too); the
        # API's own path there would be asked twice, and every id would count a 404.
        if _API_PATH.fullmatch(url.path):
            raise ConfigError(
                "--elevate.base-url is scheme://host[:port] only (or a gateway's path "
                f"prefix): the exporter adds /api/... itself, got {shown_url(base_url)!r}"
            )
        return url.base
    if cluster_id:
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", cluster_id):
            raise ConfigError(
                f"--elevate.cluster-id must be a DNS label (letters, digits, '-'), "
                f"got {cluster_id!r}"
            )
        return cluster_url(cluster_id.lower())
    raise ConfigError(
        "no Elevate cluster: set --elevate.cluster-id (ELEVATE_CLUSTER_ID) "
        "or --elevate.base-url (ELEVATE_BASE_URL)"
    )


def _api_key(from_env: str | None, path: str | None) -> Secret:
    if from_env and path:
        raise ConfigError(
            "both ELEVATE_API_KEY and --elevate.api-key-file (ELEVATE_API_KEY_FILE) are set; "
            "use one"
        )
    if path:
        key = read_key_file(path)
        where = f"the API key file {path}"
    elif from_env:
        key = from_env
        where = "ELEVATE_API_KEY"
    else:
        raise ConfigError(
            "no API key: set ELEVATE_API_KEY or --elevate.api-key-file (ELEVATE_API_KEY_FILE)"
        )
    return Secret(check_key(key, where))


def key_file_warning(path: str | Path | None) -> str | None:
    """A warning if every user of the host can read the key file, else None.

    Only a warning: a container runtime may mount a secret that way, and the exporter
    cannot change it. A file its group can read is left alone: the shipped Kubernetes
    manifest mounts the key 0440 for the pod's fsGroup on purpose.
    """
    try:
        mode = stat.S_IMODE(Path(path).stat().st_mode) if path else 0
    except OSError:
        mode = 0
    if not mode & stat.S_IROTH:
        return None
    return (
        f"the API key file {path} can be read by every user (mode {mode:04o}): "
        f"chmod o-r {path} (in Kubernetes: the secret volume's defaultMode, e.g. 0440)"
    )


def read_key_file(path: str | Path) -> str:
    """The key in a file, without its trailing line break; :class:`ConfigError` if unreadable."""
    try:
        return read_text_file(Path(path), MAX_KEY_FILE_BYTES)[1].rstrip("\r\n")
    except UnreadableFile as exc:
        raise ConfigError(f"cannot read the API key file {path}: {exc}") from None


def check_key(key: str, where: str) -> str:
    """``key`` if it can go into an HTTP header; the message never quotes the key itself."""
    if not key.strip():
        raise ConfigError(f"{where} is empty")
    # A control character would split or break the header.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key) or not key.isascii():
        raise ConfigError(f"{where} holds a line break, control or non-ASCII character")
    return key


def _import_ids(values: Iterable[str], flavour: str) -> tuple[str, ...]:
    valid, rule = id_rule(flavour)
    ids: dict[str, None] = {}
    for value in values:
        if not valid(value):
            with_flavour = "" if flavour == API_FLAVOURS[0] else f" with --elevate.api {flavour}"
            raise ConfigError(f"invalid import id {value[:100]!r}{with_flavour}: an id is {rule}")
        ids[value] = None
    return tuple(ids)


def _whole_number(value: str | int, name: str, low: int, high: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return number


def _seconds(value: str | float, name: str) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not 0 < number <= MAX_TIMEOUT:
        raise ConfigError(
            f"{name} must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}, got {value!r}"
        )
    return number


def _duration(value: str, name: str, high: float) -> float:
    seconds = parse_duration(str(value))
    if seconds is None or seconds > high:
        raise ConfigError(
            f"{name} must be a duration such as 30s, 5m or 0s, at most {high:g}s, got {value!r}"
        )
    return seconds


def _proxy_addresses(given: str | Iterable[str]) -> tuple[tuple[str, int], ...]:
    values = [given] if isinstance(given, str) else list(given)
    values = [v for value in values for v in value.split(",") if v.strip()]
    addresses = tuple(parse_listen_address(v.strip(), "--proxy.listen-address") for v in values)
    _apart((), addresses)
    return addresses


def _metric_labels(given: str | Iterable[str] | None) -> tuple[str, ...]:
    values = [] if given is None else [given] if isinstance(given, str) else list(given)
    names = [n.strip() for value in values for n in value.split(",") if n.strip()]
    try:
        return checked_names(names)
    except LabelNameError as exc:
        raise ConfigError(f"--imports.metric-labels: {exc}") from None


def _buckets(given: str | Iterable[float], name: str) -> tuple[float, ...]:
    texts = given.split(",") if isinstance(given, str) else [str(v) for v in given]
    texts = [text.strip() for text in texts]
    try:
        bounds = [float(text) for text in texts]
        if len(bounds) > MAX_BUCKETS:
            raise ValueError(f"at most {MAX_BUCKETS} buckets")
        return checked_buckets(bounds)
    except ValueError as exc:
        raise ConfigError(
            f"{name} must be increasing positive seconds separated by commas, such as "
            f"10,60,600 ({exc}), got {','.join(texts)!r}"
        ) from None


def _header_name(value: str, name: str) -> str:
    value = value.strip()
    if value and not _HEADER_NAME.fullmatch(value):
        raise ConfigError(f"{name} must be an HTTP header name such as X-Feed-Name, got {value!r}")
    if value.lower() in _SECRET_HEADERS:
        raise ConfigError(f"{name} {value!r} carries a secret; it cannot be a label")
    return value


def _positive_duration(value: str, name: str, high: float) -> float:
    seconds = parse_duration(str(value))
    if seconds is None or not 0 < seconds <= high:
        raise ConfigError(
            f"{name} must be a duration such as 90s, 24h or 7d, more than 0 and at most "
            f"{high:g}s, got {value!r}"
        )
    return seconds


def choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    """``value`` lower-cased if it is one of ``choices``, else :class:`ConfigError`."""
    lowered = value.strip().lower()
    if lowered not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return lowered


def _telemetry_path(path: str) -> str:
    if not path.startswith("/") or path == "/" or path.startswith("/-/") or "?" in path:
        raise ConfigError(
            f"--web.telemetry-path must start with '/' and be neither '/' nor under '/-/', "
            f"got {path!r}"
        )
    return path


def _listen_addresses(given: str | Iterable[str]) -> tuple[tuple[str, int], ...]:
    """Each address once; port 0 (any free port) may come more than once."""
    name = "--web.listen-address"
    given = [given] if isinstance(given, str) else list(given)
    if not given:
        raise ConfigError(f"{name} must be given at least once")
    addresses: list[tuple[str, int]] = []
    for address in given:
        parsed = parse_listen_address(address, name)
        if parsed in addresses and parsed[1] != 0:
            raise ConfigError(f"{name} {address!r} is given more than once")
        addresses.append(parsed)
    _apart(addresses)
    return tuple(addresses)


def _apart(web: Iterable[tuple[str, int]], proxy: Iterable[tuple[str, int]] = ()) -> None:
    """:class:`ConfigError` naming both flags and addresses if two would be one socket.

    Found here, the error says which settings collide; found by bind(), it would only
    say "Address already in use", as if another program held the port.
    """
    named = [("--web.listen-address", a) for a in web]
    named += [("--proxy.listen-address", a) for a in proxy]
    for index, (first_name, first) in enumerate(named):
        for second_name, second in named[index + 1 :]:
            if same_socket(first, second):
                second_text = second_name + " " if second_name != first_name else ""
                raise ConfigError(
                    f"{first_name} {address_text(first)} and {second_text}"
                    f"{address_text(second)} are the same address: give each a port of its own"
                )
