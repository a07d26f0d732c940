"""``proxy``: the import proxy alone, stateless, in front of Elevate; the ids of the imports
Elevate accepts go to an exporter's registration API (``--registration.url``)."""

from __future__ import annotations

import os
from typing import Any

import click

from elevate_import_exporter import __version__
from elevate_import_exporter.cli.common import (
    SetupError,
    flags,
    log,
    serve_until_stopped,
    warn_if_key_goes_in_clear,
)
from elevate_import_exporter.cli.track import (
    LinkFlags,
    check_transport,
    link_credentials,
    link_endpoint,
    link_tls,
    open_client,
)
from elevate_import_exporter.core import logs
from elevate_import_exporter.httpd.listeners import ListenError
from elevate_import_exporter.httpd.webconfig import WebConfigError, WebConfigWatcher
from elevate_import_exporter.lifecycle.track import TrackError
from elevate_import_exporter.proxy.delivery import Delivery, SpoolError, http_sender
from elevate_import_exporter.proxy.standalone import StandaloneProxy
from elevate_import_exporter.settings.config import ConfigError, ProxySettings, load_proxy_settings
from elevate_import_exporter.settings.options import (
    LOG_OPTIONS,
    PROXY_OPTIONS,
    REGISTRATION_PASSWORD_ENV,
    address_text,
)

REGISTRATION_FLAGS = LinkFlags("--registration.url", "--registration", REGISTRATION_PASSWORD_ENV)
# Each registration request: connecting, every read and the whole exchange. The queue
# retries with its own backoff, so one attempt a request.
REGISTRATION_TIMEOUT = 10.0

EPILOG = f"""\b
Feed jobs send their uploads to --proxy.listen-address instead of Elevate; the
answers are Elevate's, unchanged. The id of every import Elevate accepts (202)
is queued and handed to the exporter at --registration.url (run with
--web.enable-registration), which tracks it with the source "proxy". The feed
never waits for the exporter: while it is down, ids wait (and retry with
backoff), in --registration.spool too if given.

\b
SIGTERM: /-/ready answers 503 at once, new connections are refused, uploads in
flight finish (up to --proxy.drain-timeout), what is queued is delivered
(30 s at most), then the proxy exits 0. The password comes from
--registration.password-file or the variable {REGISTRATION_PASSWORD_ENV}.
Example:
  elevate-import-exporter proxy --elevate.cluster-id w123 \\
    --registration.url https://exporter:10025 \\
    --registration.username proxy --registration.password-file /run/secrets/pw"""


@click.command("proxy", epilog=EPILOG)
@flags(*PROXY_OPTIONS, *LOG_OPTIONS)
def proxy_command(**options: Any) -> None:
    """Run the import proxy alone, in front of Elevate (several replicas may run side by
    side); the exporter behind it may restart without a feed noticing."""
    try:
        settings = load_proxy_settings(**options)
        endpoint = link_endpoint(settings.registration_url, REGISTRATION_FLAGS)
        credentials = link_credentials(
            settings.registration_username,
            _text(settings.registration_password_file),
            REGISTRATION_FLAGS,
        )
        tls = link_tls(
            _text(settings.registration_ca_file),
            _text(settings.registration_cert_file),
            _text(settings.registration_key_file),
            REGISTRATION_FLAGS,
        )
        check_transport(
            endpoint,
            credentials,
            tls,
            REGISTRATION_FLAGS,
            allow_insecure=settings.registration_allow_insecure,
        )
    except (ConfigError, TrackError) as exc:
        raise SetupError(str(exc)) from None
    logs.configure(
        settings.log_level, settings.log_format, [credentials.password] if credentials else []
    )
    web_config = _web_config(settings)
    client, reaper = open_client(
        endpoint,
        credentials,
        tls,
        REGISTRATION_FLAGS,
        timeout=REGISTRATION_TIMEOUT,
        retries=0,
        user_agent=f"elevate-import-exporter/{__version__} proxy",
    )
    try:
        delivery = Delivery(http_sender(client), spool=settings.registration_spool)
    except SpoolError as exc:
        client.link.session.close()
        reaper.close()
        raise SetupError(str(exc)) from None
    try:
        standalone = StandaloneProxy(
            settings.proxy_addresses,
            settings.listen_addresses,
            settings.base_url,
            delivery=delivery,
            registration=endpoint.shown,
            timeout=settings.proxy_timeout,
            label_header=settings.proxy_label_header,
            drain_timeout=settings.drain_timeout,
            api=settings.api,
            web_config=web_config,
            auth_exempt_health=settings.auth_exempt_health,
            # The CA bundle the exporter's proxy trusts too (requests reads the same variable).
            ca_bundle=os.environ.get("REQUESTS_CA_BUNDLE") or None,
        )
    except ListenError as exc:
        delivery.close(0.0)
        client.link.session.close()
        reaper.close()
        raise SetupError(str(exc)) from None
    warn_if_key_goes_in_clear(settings.base_url)
    scheme = standalone.scheme
    log.info(
        "import proxy at %s forwarding to Elevate at %s; ids registered at %s%s; "
        "metrics at %s; drain timeout %gs",
        ", ".join(_urls(scheme, settings.proxy_addresses, standalone.proxy_ports)),
        settings.base_url,
        endpoint.shown,
        f", spooled in {settings.registration_spool}" if settings.registration_spool else "",
        ", ".join(
            u + "/metrics" for u in _urls(scheme, settings.listen_addresses, standalone.web_ports)
        ),
        settings.drain_timeout,
    )

    def reload() -> None:
        if web_config is not None:
            web_config.reload()
            if web_config.unapplied is None:  # else a warning has said why not
                log.info("reloaded the web configuration %s", web_config.path)

    def cleanup() -> None:
        standalone.close()
        client.link.session.close()
        reaper.close()

    serve_until_stopped(standalone.serve_forever, cleanup, reload=reload, drain=standalone.drain)


def _text(path: os.PathLike[str] | None) -> str | None:
    return os.fspath(path) if path is not None else None


def _web_config(settings: ProxySettings) -> WebConfigWatcher | None:
    if settings.web_config_file is None:
        return None
    try:
        return WebConfigWatcher(settings.web_config_file)
    except WebConfigError as exc:
        raise SetupError(str(exc)) from None


def _urls(scheme: str, addresses: tuple[tuple[str, int], ...], ports: list[int]) -> list[str]:
    hosts = [host or "localhost" for host, _port in addresses]
    return [
        f"{scheme}://{address_text((host, port))}" for host, port in zip(hosts, ports, strict=True)
    ]
