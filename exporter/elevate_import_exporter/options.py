"""The options users set: flag, environment variable, default and help, written once.

The CLI builds its flags from these tables, :func:`~elevate_import_exporter.config.load_settings`
takes its defaults from them, and the tests compare them with the contract.
"""

from __future__ import annotations

from dataclasses import dataclass

from elevate_import_exporter.logs import LOG_FORMATS, LOG_LEVELS
from elevate_import_exporter.model import API_FLAVOURS


@dataclass(frozen=True)
class Option:
    """One setting as users see it: flag, environment variable, default, help.

    ``dest`` is the keyword of :func:`~elevate_import_exporter.config.load_settings`.
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


def default(dest: str) -> str:
    """The default of a setting, as users write it."""
    value = _DEFAULTS[dest]
    if value is None:
        raise KeyError(dest)
    return value
