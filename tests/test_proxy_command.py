"""`elevate-import-exporter proxy`: its flags and what it refuses before it starts (exit 2,
one line naming the value), and its settings apart from the flags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from elevate_import_exporter.cli import cli
from elevate_import_exporter.settings.config import ConfigError, load_proxy_settings
from elevate_import_exporter.settings.options import PROXY_OPTIONS, REGISTRATION_PASSWORD_ENV
from tests.conftest import EXPORTER_ENV

ELEVATE = "http://127.0.0.1:9"
EXPORTER = "http://127.0.0.1:10025"
# Every variable a command of the package reads, the proxy's own among them: none of the
# shell's reaches these commands.
CLEARED = {*EXPORTER_ENV, *(o.env for o in PROXY_OPTIONS), REGISTRATION_PASSWORD_ENV}


def invoke(*args: str, **env: str) -> Result:
    environment: dict[str, str | None] = dict.fromkeys(CLEARED)
    environment.update(env)
    return CliRunner().invoke(cli, ["proxy", *args], env=environment)


def assert_setup_error(result: Result, *named: str) -> str:
    """Exit status 2, one short line on stderr naming each of ``named``, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert len(lines[0]) < 300, lines[0]
    for name in named:
        assert name in lines[0], lines[0]
    return lines[0]


def base(*more: str) -> list[str]:
    return ["--elevate.base-url", ELEVATE, "--registration.url", EXPORTER, *more]


def test_a_proxy_without_registration_url_exits_2_naming_the_flag_and_its_variable() -> None:
    result = invoke("--elevate.base-url", ELEVATE)
    assert_setup_error(result, "--registration.url", "ELEVATE_EXPORTER_REGISTRATION_URL")


def test_a_registration_url_with_credentials_exits_2_without_showing_the_password() -> None:
    result = invoke(
        "--elevate.base-url", ELEVATE, "--registration.url", "http://feeds:s3cr3t-PW@exp:10025"
    )
    line = assert_setup_error(result, "--registration.url", "--registration.password-file")
    assert "s3cr3t-PW" not in result.output
    assert "credentials" in line


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("ftp://exporter:10025", "ftp://exporter:10025"),
        ("http://exporter:99999", "99999"),
        ("http://exporter:10025/?token=x", "?..."),
    ],
)
def test_a_registration_url_that_is_no_http_base_url_exits_2_naming_it(
    url: str, shown: str
) -> None:
    result = invoke("--elevate.base-url", ELEVATE, "--registration.url", url)
    assert_setup_error(result, "--registration.url", shown)


@pytest.mark.parametrize("value", ["10 minutes", "-1m", "2d", "10"])
def test_a_bad_drain_timeout_exits_2_naming_the_flag_and_the_value(value: str) -> None:
    result = invoke(*base("--proxy.drain-timeout", value))
    assert_setup_error(result, "--proxy.drain-timeout", repr(value))


def test_a_spool_path_that_is_a_directory_exits_2_naming_it(tmp_path: Path) -> None:
    result = invoke(*base("--registration.spool", str(tmp_path)))
    assert_setup_error(result, "--registration.spool", str(tmp_path), "directory")


def test_the_proxy_and_telemetry_on_one_address_exit_2_naming_both_flags() -> None:
    result = invoke(
        *base("--proxy.listen-address", "127.0.0.1:10031", "--web.listen-address", ":10031")
    )
    assert_setup_error(result, "--proxy.listen-address", "--web.listen-address", "10031")


def test_the_default_telemetry_port_given_as_proxy_port_is_refused_naming_it() -> None:
    # The defaults collide once a user moves only the proxy onto the telemetry's port.
    result = invoke(*base("--proxy.listen-address", ":10028"))
    assert_setup_error(result, ":10028", "same address")


def test_a_proxy_without_an_elevate_cluster_exits_2_naming_both_ways_to_give_one() -> None:
    result = invoke("--registration.url", EXPORTER)
    assert_setup_error(result, "--elevate.cluster-id", "--elevate.base-url")


def test_a_password_in_clear_text_to_another_host_is_refused_naming_allow_insecure(
    tmp_path: Path,
) -> None:
    password = tmp_path / "password"
    password.write_text("feeds-pw\n")
    result = invoke(
        "--elevate.base-url",
        ELEVATE,
        "--registration.url",
        "http://exporter.example:10025",
        "--registration.username",
        "feeds",
        "--registration.password-file",
        str(password),
    )
    assert_setup_error(result, "--registration.allow-insecure")
    assert "feeds-pw" not in result.output


def test_a_certificate_without_its_key_exits_2_naming_both_registration_flags(
    tmp_path: Path,
) -> None:
    result = invoke(
        *base("--registration.cert-file", str(tmp_path / "client.pem")),
    )
    assert_setup_error(result, "--registration.cert-file", "--registration.key-file")


def test_a_user_name_without_a_password_names_the_registration_password_variable() -> None:
    result = invoke(*base("--registration.username", "feeds"))
    assert_setup_error(result, "--registration.password-file", REGISTRATION_PASSWORD_ENV)


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("ELEVATE_EXPORTER_REGISTRATION_URL", "exporter:10025", "--registration.url"),
        ("ELEVATE_EXPORTER_PROXY_DRAIN_TIMEOUT", "soon", "--proxy.drain-timeout"),
        ("ELEVATE_EXPORTER_PROXY_LISTEN_ADDRESS", "nowhere", "--proxy.listen-address"),
        ("ELEVATE_EXPORTER_LISTEN_ADDRESS", ":70000", "--web.listen-address"),
        ("ELEVATE_EXPORTER_PROXY_LABEL_HEADER", "Authorization", "--proxy.label-header"),
        ("ELEVATE_API", "v9", "--elevate.api"),
    ],
)
def test_a_bad_value_in_a_proxy_variable_is_refused_as_its_option(
    env: str, value: str, named: str
) -> None:
    given = {"ELEVATE_BASE_URL": ELEVATE, "ELEVATE_EXPORTER_REGISTRATION_URL": EXPORTER}
    given[env] = value
    assert_setup_error(invoke(**given), named)


def _help_blocks() -> dict[str, str]:
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    blocks: dict[str, str] = {}
    flag = ""
    # The options' section only: the epilog below it names flags too.
    options = result.output.split("Options:\n", 1)[1]
    for line in options.splitlines():
        if not line.strip():
            break
        found = re.match(r"\s{2}(--[\w.-]+)", line)
        if found:
            flag = found.group(1)
        if flag:
            blocks[flag] = " ".join(f"{blocks.get(flag, '')} {line}".split())
    return blocks


# The brief's and the contract's flags of `proxy`, with their variables and defaults:
# written out here, not taken from the option table.
PROXY_FLAGS = (
    ("--proxy.listen-address", "ELEVATE_EXPORTER_PROXY_LISTEN_ADDRESS", ":10027"),
    ("--web.listen-address", "ELEVATE_EXPORTER_LISTEN_ADDRESS", ":10028"),
    ("--web.config.file", "ELEVATE_EXPORTER_WEB_CONFIG_FILE", None),
    ("--web.auth-exempt-health", "ELEVATE_EXPORTER_AUTH_EXEMPT_HEALTH", None),
    ("--elevate.cluster-id", "ELEVATE_CLUSTER_ID", None),
    ("--elevate.base-url", "ELEVATE_BASE_URL", None),
    ("--elevate.api", "ELEVATE_API", "web-v2"),
    ("--proxy.timeout", "ELEVATE_EXPORTER_PROXY_TIMEOUT", "10m"),
    ("--proxy.label-header", "ELEVATE_EXPORTER_PROXY_LABEL_HEADER", "X-Feed-Name"),
    ("--proxy.drain-timeout", "ELEVATE_EXPORTER_PROXY_DRAIN_TIMEOUT", "10m"),
    ("--registration.url", "ELEVATE_EXPORTER_REGISTRATION_URL", None),
    ("--registration.spool", "ELEVATE_EXPORTER_REGISTRATION_SPOOL", None),
    ("--registration.username", "ELEVATE_EXPORTER_REGISTRATION_USERNAME", None),
    ("--registration.password-file", "ELEVATE_EXPORTER_REGISTRATION_PASSWORD_FILE", None),
    ("--registration.ca-file", "ELEVATE_EXPORTER_REGISTRATION_CA_FILE", None),
    ("--registration.cert-file", "ELEVATE_EXPORTER_REGISTRATION_CERT_FILE", None),
    ("--registration.key-file", "ELEVATE_EXPORTER_REGISTRATION_KEY_FILE", None),
    ("--registration.allow-insecure", "ELEVATE_EXPORTER_REGISTRATION_ALLOW_INSECURE", None),
    ("--log.level", "ELEVATE_EXPORTER_LOG_LEVEL", "info"),
    ("--log.format", "ELEVATE_EXPORTER_LOG_FORMAT", "logfmt"),
)


def test_proxy_help_shows_exactly_the_agreed_flags_with_their_variables_and_defaults() -> None:
    blocks = _help_blocks()
    assert set(blocks) - {"--help"} == {flag for flag, _env, _default in PROXY_FLAGS}
    for flag, env, default in PROXY_FLAGS:
        block = blocks[flag]
        # Without spaces: click may break a long variable's name across lines.
        assert re.search(rf"envvar:{re.escape(env)}[;\]]", block.replace(" ", "")), block
        if default is not None:
            assert f"default: {default}" in block, block


def test_no_proxy_flag_takes_a_password_or_a_key() -> None:
    names = {flag for flag, _env, _default in PROXY_FLAGS}
    assert not {name for name in names if re.search(r"password$|key$|api-key", name)}


def test_the_settings_without_flags_take_the_documented_defaults() -> None:
    settings = load_proxy_settings(base_url=ELEVATE, registration_url=EXPORTER + "/")
    assert settings.proxy_addresses == (("", 10027),)
    assert settings.listen_addresses == (("", 10028),)
    assert settings.drain_timeout == 600.0
    assert settings.proxy_timeout == 600.0
    assert settings.registration_url == EXPORTER  # the trailing slash taken off
    assert settings.registration_spool is None


def test_the_settings_refuse_a_spool_that_is_a_directory_as_a_config_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        load_proxy_settings(
            base_url=ELEVATE, registration_url=EXPORTER, registration_spool=str(tmp_path)
        )


def test_a_drain_timeout_of_0s_is_allowed_and_means_no_wait() -> None:
    settings = load_proxy_settings(base_url=ELEVATE, registration_url=EXPORTER, drain_timeout="0s")
    assert settings.drain_timeout == 0.0
