"""The options users set: flag, environment variable, default and help, written once;
and how the values of several options are written (durations, addresses, URLs).

The CLI builds its flags from these tables, :func:`~.config.load_settings`
takes its defaults from them, and the tests compare them with the contract. ``track``
checks its ``--exporter`` URL with :func:`parse_http_url` as ``run`` checks its base URL.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from elevate_import_exporter.core.logs import LOG_FORMATS, LOG_LEVELS
from elevate_import_exporter.core.model import API_FLAVOURS


@dataclass(frozen=True)
class Option:
    """One setting as users see it: flag, environment variable, default, help.

    ``dest`` is the keyword of :func:`~.config.load_settings`.
    """

    flag: str
    dest: str
    env: str
    help: str
    default: str | None = None
    multiple: bool = False
    boolean: bool = False  # a switch: given or not (the variable: true or false)


RUN_OPTIONS = (
    Option(
        "--elevate.cluster-id",
        "cluster_id",
        "ELEVATE_CLUSTER_ID",
        "Cluster id; the API is then https://{id}.api.esales.apptus.cloud.",
    ),
    Option(
        "--elevate.base-url",
        "base_url",
        "ELEVATE_BASE_URL",
        "Full base URL of the API; wins over the cluster id.",
    ),
    Option(
        "--elevate.api-key-file",
        "api_key_file",
        "ELEVATE_API_KEY_FILE",
        "File holding the Api-Key. Or set ELEVATE_API_KEY; no flag takes the key itself.",
    ),
    Option(
        "--elevate.import-id",
        "import_ids",
        "ELEVATE_IMPORT_IDS",
        "Import id to track; repeatable. The variable takes a comma or space separated list.",
        multiple=True,
    ),
    Option(
        "--elevate.import-ids-file",
        "ids_file",
        "ELEVATE_IMPORT_IDS_FILE",
        "File of ids, one a line, '#' comments allowed; re-read when it changes or on SIGHUP.",
    ),
    Option(
        "--elevate.api",
        "api",
        "ELEVATE_API",
        f"Flavour of Elevate's API: {', '.join(API_FLAVOURS)} (Elevate 3 Web API v2; "
        "Elevate 4 Admin API v4, or v3 until its end of life).",
        API_FLAVOURS[0],
    ),
    Option(
        "--elevate.concurrency",
        "concurrency",
        "ELEVATE_CONCURRENCY",
        "Status requests in flight at once.",
        "8",
    ),
    Option(
        "--elevate.timeout",
        "timeout",
        "ELEVATE_TIMEOUT",
        "Seconds for one status request.",
        "5",
    ),
    Option(
        "--elevate.retries",
        "retries",
        "ELEVATE_RETRIES",
        "Extra tries after a 5xx, 429, timeout or connection error, within the scrape deadline.",
        "1",
    ),
    Option(
        "--elevate.min-poll-interval",
        "min_poll_interval",
        "ELEVATE_MIN_POLL_INTERVAL",
        "A scrape sooner than this after the last poll round ended is answered from that "
        "round, without asking Elevate. 0s polls on every scrape.",
        "10s",
    ),
    Option(
        "--imports.max-tracked",
        "max_tracked",
        "ELEVATE_EXPORTER_IMPORTS_MAX_TRACKED",
        "Most import ids tracked at once; ids beyond it are refused with a warning.",
        "10000",
    ),
    Option(
        "--imports.retention",
        "retention",
        "ELEVATE_EXPORTER_IMPORTS_RETENTION",
        "How long an import stays exported once final (or NOT_FOUND); then it is retired: "
        "its series leave the metrics, its record stays in the history.",
        "24h",
    ),
    Option(
        "--imports.metric-labels",
        "imports_metric_labels",
        "ELEVATE_EXPORTER_IMPORTS_METRIC_LABELS",
        "Comma separated registration and proxy label names (at most 4, e.g. feed_name,team) "
        "published on elevate_import_labels{id,...} and as labels of the aggregates "
        "(elevate_import_finished_total and the others).",
    ),
    Option(
        "--imports.metric-labels-max-values",
        "imports_metric_labels_max_values",
        "ELEVATE_EXPORTER_IMPORTS_METRIC_LABELS_MAX_VALUES",
        "Distinct values published per metric label; further ones are published as 'other', "
        "with one warning.",
        "100",
    ),
    Option(
        "--imports.duration-buckets",
        "imports_duration_buckets",
        "ELEVATE_EXPORTER_IMPORTS_DURATION_BUCKETS",
        "Upper bounds in seconds (comma separated, increasing) of elevate_import_duration_seconds.",
        "10,30,60,120,300,600,1200,1800,3600,7200,14400,28800,86400",
    ),
    Option(
        "--imports.queue-buckets",
        "imports_queue_buckets",
        "ELEVATE_EXPORTER_IMPORTS_QUEUE_BUCKETS",
        "Upper bounds in seconds (comma separated, increasing) of elevate_import_queue_seconds.",
        "1,5,15,30,60,120,300,600,1800,3600,7200",
    ),
    Option(
        "--storage.path",
        "storage_path",
        "ELEVATE_EXPORTER_STORAGE_PATH",
        'SQLite file that keeps imports across restarts; "" keeps them in memory only.',
        "data/elevate-import-exporter.db",
    ),
    Option(
        "--storage.history",
        "history",
        "ELEVATE_EXPORTER_STORAGE_HISTORY",
        "How long a retired import stays in the store's history.",
        "30d",
    ),
    Option(
        "--web.enable-registration",
        "enable_registration",
        "ELEVATE_EXPORTER_ENABLE_REGISTRATION",
        "Allow POST and DELETE on /api/v1/imports (registering ids over HTTP). Protect the "
        "port with basic auth (--web.config.file) when it is reachable by others.",
        boolean=True,
    ),
    Option(
        "--web.listen-address",
        "listen_address",
        "ELEVATE_EXPORTER_LISTEN_ADDRESS",
        "[host]:port to serve on; repeatable, to serve on several addresses. The variable "
        "takes a comma separated list.",
        ":10025",
        multiple=True,
    ),
    Option(
        "--web.telemetry-path",
        "telemetry_path",
        "ELEVATE_EXPORTER_TELEMETRY_PATH",
        "Path of the metrics.",
        "/metrics",
    ),
    Option(
        "--web.config.file",
        "web_config_file",
        "ELEVATE_EXPORTER_WEB_CONFIG_FILE",
        "exporter-toolkit web-config.yml: TLS, client certificates, basic auth, headers. "
        "Re-read when it changes and on SIGHUP.",
    ),
    Option(
        "--proxy.listen-address",
        "proxy_listen_address",
        "ELEVATE_EXPORTER_PROXY_LISTEN_ADDRESS",
        "[host]:port of the import proxy (off unless given): feed jobs send their imports "
        "here, they go on to Elevate, and every import id in a 202 answer is tracked. "
        "Repeatable; the variable takes a comma separated list.",
        multiple=True,
    ),
    Option(
        "--proxy.timeout",
        "proxy_timeout",
        "ELEVATE_EXPORTER_PROXY_TIMEOUT",
        "How long the proxy waits for Elevate to answer a request, and for either side to "
        "send the next bytes of a body; longer than Elevate's maximum request duration.",
        "10m",
    ),
    Option(
        "--proxy.label-header",
        "proxy_label_header",
        "ELEVATE_EXPORTER_PROXY_LABEL_HEADER",
        "Request header whose value the proxy records as the feed label of the imports it "
        "tracks (empty: none).",
        "X-Feed-Name",
    ),
    Option(
        "--web.auth-exempt-health",
        "auth_exempt_health",
        "ELEVATE_EXPORTER_AUTH_EXEMPT_HEALTH",
        "Answer /-/healthy and /-/ready without basic auth (for probes that send none).",
        boolean=True,
    ),
)
LOG_OPTIONS = (
    Option(
        "--log.level",
        "log_level",
        "ELEVATE_EXPORTER_LOG_LEVEL",
        f"{', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}.",
        "info",
    ),
    Option(
        "--log.format",
        "log_format",
        "ELEVATE_EXPORTER_LOG_FORMAT",
        f"{' or '.join(LOG_FORMATS)}.",
        "logfmt",
    ),
)
_DEFAULTS = {option.dest: option.default for option in (*RUN_OPTIONS, *LOG_OPTIONS)}


def _run_option(dest: str, *, default: str | None = None, help: str | None = None) -> Option:
    """``run``'s option ``dest`` (same flag, same variable), with another default or help."""
    option = next(option for option in RUN_OPTIONS if option.dest == dest)
    if default is not None:
        option = replace(option, default=default)
    return replace(option, help=help) if help is not None else option


# The standalone import proxy (``proxy``): the proxy's options of ``run`` (same flags, same
# variables) with the ports of its own, and where the ids it sees are registered. The
# registration's credentials mean what ``track``'s ``--exporter.*`` mean.
PROXY_OPTIONS = (
    _run_option("cluster_id"),
    _run_option("base_url"),
    _run_option("api"),
    _run_option(
        "proxy_listen_address",
        default=":10027",
        help="[host]:port where feed jobs send their imports; repeatable. The variable "
        "takes a comma separated list.",
    ),
    _run_option(
        "listen_address",
        default=":10028",
        help="[host]:port of the proxy's own /metrics, /-/healthy and /-/ready; repeatable. "
        "The variable takes a comma separated list.",
    ),
    _run_option(
        "web_config_file",
        help="exporter-toolkit web-config.yml: TLS, client certificates, basic auth, headers, "
        "for the proxy's port and its own /metrics alike. Re-read when it changes and on "
        "SIGHUP.",
    ),
    _run_option("auth_exempt_health"),
    _run_option("proxy_timeout"),
    _run_option("proxy_label_header"),
    Option(
        "--proxy.drain-timeout",
        "drain_timeout",
        "ELEVATE_EXPORTER_PROXY_DRAIN_TIMEOUT",
        "After SIGTERM: how long uploads in flight may go on (new ones are refused and "
        "/-/ready answers 503 at once); long enough for the largest feed.",
        "10m",
    ),
    Option(
        "--registration.url",
        "registration_url",
        "ELEVATE_EXPORTER_REGISTRATION_URL",
        "Base URL of the exporter (run with --web.enable-registration) that tracks the ids "
        "of the imports Elevate accepts, e.g. https://exporter:10025. Required.",
    ),
    Option(
        "--registration.spool",
        "registration_spool",
        "ELEVATE_EXPORTER_REGISTRATION_SPOOL",
        "File that keeps the ids not yet registered across restarts of the proxy (none: "
        "they wait in memory only).",
    ),
    Option(
        "--registration.username",
        "registration_username",
        "ELEVATE_EXPORTER_REGISTRATION_USERNAME",
        "Basic auth user of the exporter's web config.",
    ),
    Option(
        "--registration.password-file",
        "registration_password_file",
        "ELEVATE_EXPORTER_REGISTRATION_PASSWORD_FILE",
        "File holding the basic auth password (else the variable "
        "ELEVATE_EXPORTER_REGISTRATION_PASSWORD).",
    ),
    Option(
        "--registration.ca-file",
        "registration_ca_file",
        "ELEVATE_EXPORTER_REGISTRATION_CA_FILE",
        "PEM CA certificates to trust for the exporter instead of the system's.",
    ),
    Option(
        "--registration.cert-file",
        "registration_cert_file",
        "ELEVATE_EXPORTER_REGISTRATION_CERT_FILE",
        "PEM client certificate, with --registration.key-file.",
    ),
    Option(
        "--registration.key-file",
        "registration_key_file",
        "ELEVATE_EXPORTER_REGISTRATION_KEY_FILE",
        "PEM key of the client certificate (not encrypted).",
    ),
    Option(
        "--registration.allow-insecure",
        "registration_allow_insecure",
        "ELEVATE_EXPORTER_REGISTRATION_ALLOW_INSECURE",
        "Send the password over http:// to another host than this one.",
        boolean=True,
    ),
)
# The registration password, as track's: from a file or this variable, never a flag.
REGISTRATION_PASSWORD_ENV = "ELEVATE_EXPORTER_REGISTRATION_PASSWORD"  # noqa: S105 (a name)


def default(dest: str, options: tuple[Option, ...] | None = None) -> str:
    """The default of a setting, as users write it (in ``options``: ``run``'s and the log's
    unless given)."""
    table = _DEFAULTS if options is None else {option.dest: option.default for option in options}
    value = table[dest]
    if value is None:
        raise KeyError(dest)
    return value


# -- how values are written ------------------------------------------------------------


class ConfigError(ValueError):
    """A setting is missing or has a bad value; the message names it."""


_DURATION = re.compile(
    r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?"
)
_UNIT_SECONDS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def parse_duration(value: str) -> float | None:
    """Seconds of a duration in Prometheus' syntax (``90s``, ``15m``, ``1h30m``, ``0``)."""
    text = value.strip()
    if text == "0":
        return 0.0
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        return None
    return float(
        sum(int(n) * unit for n, unit in zip(match.groups(), _UNIT_SECONDS, strict=True) if n)
    )


def duration_between(
    value: str,
    name: str,
    low: float,
    high: float,
    examples: str,
    shown: Callable[[float], str] = "{:g}s".format,
) -> float:
    """The seconds of ``value``, a duration from ``low`` to ``high``, else
    :class:`ConfigError` naming ``name`` and giving ``examples`` (``shown`` writes the
    bounds)."""
    seconds = parse_duration(value)
    if seconds is None or not low <= seconds <= high:
        raise ConfigError(
            f"{name} must be a duration such as {examples}, from {shown(low)} to "
            f"{shown(high)}, got {value[:100]!r}"
        )
    return seconds


def parse_listen_address(address: str, name: str) -> tuple[str, int]:
    """``[host]:port`` as the Prometheus exporters take it; an empty host means every address."""
    match = re.fullmatch(r"(?:\[([0-9A-Fa-f:.%\w]+)\]|([^\[\]:]*)):(\d{1,5})", address.strip())
    port = int(match.group(3)) if match else -1
    if match is None or not 0 <= port <= 65535:
        raise ConfigError(f"{name} must be [host]:port, e.g. ':10025', got {address!r}")
    return (match.group(1) or match.group(2) or ""), port


def address_text(address: tuple[str, int]) -> str:
    """``(host, port)`` as the listen-address flags take it."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def same_socket(first: tuple[str, int], second: tuple[str, int]) -> bool:
    """Whether binding both addresses would clash: the same port (not 0), and hosts that
    are plainly one address, or one of them every address. Other host names: bind() says."""
    (host_a, port_a), (host_b, port_b) = first, second
    if port_a != port_b or port_a == 0:
        return False
    a, b = _ip(host_a), _ip(host_b)
    if host_a.lower() == host_b.lower() or (a is not None and a == b):
        return True
    # "" and "::" are every address, IPv4 too: the listeners bind them dual-stack.
    if "" in (host_a, host_b) or _ip("::") in (a, b):
        return True
    both_v4 = a is not None and b is not None and a.version == b.version == 4
    return both_v4 and _ip("0.0.0.0") in (a, b)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class HttpUrl:
    """An http:// or https:// URL that a connection can be made to, taken apart."""

    scheme: str  # lower case
    host: str  # without the brackets of an IPv6 address
    port: int  # the scheme's own when none is given
    path: str  # without its trailing "/"
    netloc: str  # host and port as given

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.path}"


_NETLOC = re.compile(r"(?:\[[^\]]*\]|[^:]*)(?::(.*))?")


def parse_http_url(value: str, name: str) -> HttpUrl:
    """``value`` taken apart, or :class:`ConfigError` naming ``name`` and the value as
    :func:`shown_url` shows it. What a request would only fail on later is refused here:
    an unclosed ``[``, a port that is not 1 to 65535 in digits, spaces, control characters."""
    shown = shown_url(value)
    if not value.isascii() or any(c.isspace() or not c.isprintable() for c in value):
        raise ConfigError(
            f"{name} must be an http:// or https:// base URL without query, spaces, control or "
            f"non-ASCII characters (a host name in its xn-- form), got {shown!r}"
        )
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise ConfigError(f"{name} is not a URL (an unclosed '[' ?), got {shown!r}") from None
    scheme, netloc = parts.scheme.lower(), _NETLOC.fullmatch(parts.netloc)
    if scheme not in ("http", "https") or not host or netloc is None:
        raise ConfigError(f"{name} must be an http:// or https:// URL with a host, got {shown!r}")
    if "@" in parts.netloc or parts.query or parts.fragment or value.endswith(("?", "#")):
        raise ConfigError(
            f"{name} must be a base URL without query, fragment or user:password@, got {shown!r}"
        )
    port = netloc.group(1) or ("443" if scheme == "https" else "80")
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ConfigError(
            f"{name} has the port {port[:20]!r}; a port is a number from 1 to 65535, got {shown!r}"
        )
    return HttpUrl(scheme, host, int(port), parts.path.rstrip("/"), parts.netloc)


def shown_url(value: str) -> str:
    """``value`` to quote in a message: without user:password@ and the text of a query or
    a fragment (either may hold a key or a password), cut to 100 characters."""
    shown = re.sub(r"(?<=//)[^/?#]*@", "***@", value)
    shown = re.sub(r"\?[^#]*", "?...", shown, count=1)
    return re.sub(r"#.*", "#...", shown, count=1)[:100]
