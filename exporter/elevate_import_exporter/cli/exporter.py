"""``run`` and ``demo``: the exporter itself, and the exporter watching a simulated API."""

from __future__ import annotations

import os
import secrets
from typing import Any

import click

from elevate_import_exporter import __version__
from elevate_import_exporter.app import Application
from elevate_import_exporter.cli.common import (
    SetupError,
    flag,
    flags,
    log,
    log_settings,
    run_option,
    running_simulator,
    serve_until_stopped,
    settings_from,
    warn_about,
)
from elevate_import_exporter.core import logs
from elevate_import_exporter.httpd.listeners import ListenError
from elevate_import_exporter.httpd.webconfig import WebConfigError
from elevate_import_exporter.lifecycle.store import StoreError
from elevate_import_exporter.polling.idsfile import IdsFileError
from elevate_import_exporter.settings.config import Settings
from elevate_import_exporter.settings.options import LOG_OPTIONS, RUN_OPTIONS
from elevate_import_exporter.simulator import (
    DEMO_UNKNOWN_ID,
    STATUS_PATH,
    FeedJob,
    demo_feeds,
    demo_imports,
)
from elevate_import_exporter.site.restapi import IMPORTS

SIMULATOR_LISTEN_ADDRESS = "127.0.0.1:10026"
DEMO_PROXY_LISTEN_ADDRESS = "127.0.0.1:10027"
# The demo behaves as if Prometheus scraped it this often, so its page moves by itself.
DEMO_SCRAPE_INTERVAL = 2.0


@click.command()
@flags(*RUN_OPTIONS, *LOG_OPTIONS)
def run(**options: Any) -> None:
    """Run the exporter. SIGHUP re-reads the ids file; SIGTERM and SIGINT stop it, after
    the answers of requests in flight (a few seconds at most)."""
    settings = settings_from(api_key=os.environ.get("ELEVATE_API_KEY"), **options)
    logs.configure(settings.log_level, settings.log_format, [settings.api_key.reveal()])
    app = _start(settings)
    warn_about(settings)
    log.info(
        "serving metrics at %s for %d import ids (Elevate at %s); %s; %s",
        ", ".join(url + settings.telemetry_path for url in app.urls),
        len(app.ids.current()),
        settings.base_url,
        f"import proxy at {', '.join(app.proxy_urls)}" if app.proxy_urls else "import proxy off",
        f"registration on at {app.url}{IMPORTS}"
        if app.registration_enabled
        else "registration off",
    )
    serve_until_stopped(app.serve_forever, app.stop, reload=app.reload, drain=app.drain)


@click.command()
@flag(run_option("listen_address"), help="[host]:port the exporter serves on.")
@click.option(
    "--simulator.listen-address",
    "simulator_address",
    envvar="ELEVATE_SIMULATOR_LISTEN_ADDRESS",
    default=SIMULATOR_LISTEN_ADDRESS,
    show_envvar=True,
    show_default=True,
    help="[host]:port of the simulated Elevate API.",
)
@click.option(
    "--proxy",
    "with_proxy",
    is_flag=True,
    help="Run the import proxy too, and a made-up feed job that pushes a few feeds through "
    "it: the imports they start join the page by themselves.",
)
@flag(
    run_option("proxy_listen_address"),
    default=DEMO_PROXY_LISTEN_ADDRESS,
    help="[host]:port of the import proxy (with --proxy).",
)
@flags(*LOG_OPTIONS)
def demo(
    listen_address: tuple[str, ...],
    simulator_address: str,
    with_proxy: bool,
    proxy_listen_address: str,
    log_level: str,
    log_format: str,
) -> None:
    """Try it: a simulated Elevate API with scripted imports, and the exporter watching it."""
    level, fmt = log_settings(log_level, log_format)
    key = secrets.token_urlsafe(24)
    logs.configure(level, fmt, [key])
    imports = demo_imports()
    ids = [imp.id for imp in imports] + [DEMO_UNKNOWN_ID]
    with running_simulator(imports, key, simulator_address) as simulator:
        settings = settings_from(
            base_url=simulator.url,
            api_key=key,
            import_ids=ids,
            listen_address=listen_address,
            min_poll_interval=f"{DEMO_SCRAPE_INTERVAL:g}s",
            # The demo's imports are made up anew each time: nothing worth keeping on disk.
            storage_path="",
            proxy_listen_address=[proxy_listen_address] if with_proxy else [],
            log_level=level,
            log_format=fmt,
        )
        app = _start(settings)
        stop_scraping = app.scrape_every(DEMO_SCRAPE_INTERVAL)
        feed_job = None
        proxy_line = ""
        if with_proxy:
            proxy_url = _url(proxy_listen_address)
            feed_job = FeedJob(proxy_url, key, simulator.import_desk, demo_feeds())
            proxy_line = (
                f"  import proxy:       {proxy_url}/   (a made-up feed job pushes "
                f"{len(demo_feeds())} feeds through it every minute: their imports are tracked "
                "by themselves)\n"
            )
        click.echo(
            f"Elevate import exporter {__version__}: demo\n"
            f"  exporter:           {app.url}/   (metrics: {app.url}{settings.telemetry_path})\n"
            f"  simulated Elevate:  {simulator.url}{STATUS_PATH}{{id}}\n"
            f"{proxy_line}"
            f"Tracking {len(ids)} imports: two succeed, one fails, one stays in progress, "
            f"one is aborted, one is unknown to the cluster.\n"
            f"They move over the next 30 seconds; the page follows them by itself "
            f"(the demo polls every {DEMO_SCRAPE_INTERVAL:g} s, as Prometheus would scrape). "
            f"Ctrl-C stops."
        )
        if feed_job is not None:
            feed_job.start()

        def cleanup() -> None:
            if feed_job is not None:
                feed_job.stop()
            stop_scraping()
            app.stop()

        serve_until_stopped(app.serve_forever, cleanup, drain=app.drain)


def _url(address: str) -> str:
    host, _, port = address.rpartition(":")
    return f"http://{host or '127.0.0.1'}:{port}"


def _start(settings: Settings) -> Application:
    try:
        return Application(settings)
    except StoreError as exc:
        option = run_option("storage_path")
        raise SetupError(
            f"{exc}; set {option.flag} ({option.env}) to a database file that only this "
            f'exporter uses, in a folder it may write, or {option.flag} "" to keep imports in '
            "memory only"
        ) from None
    except (IdsFileError, ListenError, WebConfigError) as exc:
        raise SetupError(str(exc)) from None
