"""Settings validation: every option's good and bad values, straight through load_settings."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from elevate_import_exporter.settings.config import ConfigError, Settings, load_settings

KEY = "KEY-5f1c9e-DO-NOT-LEAK"


def settings(**options: Any) -> Settings:
    """load_settings with a base URL and a key unless the test gives its own."""
    if "cluster_id" not in options:
        options.setdefault("base_url", "http://127.0.0.1:9")
    if "api_key_file" not in options:
        options.setdefault("api_key", KEY)
    return load_settings(**options)


def config_error(**options: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        settings(**options)
    return str(caught.value)


# -- where Elevate is ---------------------------------------------------------------------


def test_a_cluster_id_becomes_the_elevate_cloud_url() -> None:
    assert settings(cluster_id="w8x2k4").base_url == "https://w8x2k4.api.esales.apptus.cloud"


def test_the_base_url_wins_over_the_cluster_id() -> None:
    chosen = settings(cluster_id="w8x2k4", base_url="https://elevate.proxy.example:8443/prefix")
    assert chosen.base_url == "https://elevate.proxy.example:8443/prefix"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:9/", "http://127.0.0.1:9"),
        ("https://w8x2k4.elevate-api.cloud/", "https://w8x2k4.elevate-api.cloud"),
        ("http://[::1]:8080/prefix/", "http://[::1]:8080/prefix"),
    ],
)
def test_a_trailing_slash_of_the_base_url_is_dropped(given: str, expected: str) -> None:
    assert settings(base_url=given).base_url == expected


def test_without_cluster_id_or_base_url_the_error_names_both_settings() -> None:
    message = config_error(cluster_id=None, base_url=None)
    assert "--elevate.cluster-id" in message
    assert "--elevate.base-url" in message


@pytest.mark.parametrize("cluster_id", ["has space", "under_score", "dot.ted", "-lead", "a/b"])
def test_a_cluster_id_that_is_no_host_name_label_is_refused(cluster_id: str) -> None:
    message = config_error(cluster_id=cluster_id)
    assert "--elevate.cluster-id" in message
    assert cluster_id in message


@pytest.mark.parametrize("base_url", ["ftp://example.org", "example.org", "http://", "/relative"])
def test_a_base_url_that_is_no_http_url_is_refused(base_url: str) -> None:
    message = config_error(base_url=base_url)
    assert "--elevate.base-url" in message


# -- the API key --------------------------------------------------------------------------


def test_the_key_comes_from_ELEVATE_API_KEY() -> None:
    assert settings(api_key=KEY).api_key.reveal() == KEY


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_the_key_file_is_read_without_its_trailing_newline(tmp_path: Path, ending: str) -> None:
    path = tmp_path / "key"
    path.write_bytes((KEY + ending).encode())
    assert settings(api_key_file=str(path)).api_key.reveal() == KEY


def test_a_key_in_both_the_environment_and_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    message = config_error(api_key=KEY, api_key_file=str(path))
    assert "ELEVATE_API_KEY" in message
    assert "--elevate.api-key-file" in message
    assert KEY not in message


def test_without_a_key_the_error_names_both_ways_to_give_one() -> None:
    message = config_error(api_key=None)
    assert "ELEVATE_API_KEY" in message
    assert "--elevate.api-key-file" in message


@pytest.mark.parametrize("content", ["", "\n", "   \n"])
def test_an_empty_key_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "key"
    path.write_text(content)
    message = config_error(api_key_file=str(path))
    assert str(path) in message
    assert "empty" in message


def test_a_blank_key_in_the_environment_is_refused() -> None:
    assert "ELEVATE_API_KEY" in config_error(api_key="   ")


@pytest.mark.parametrize(
    "bad_key",
    [KEY + "\nX-Injected: 1", KEY + "\r", "\x00" + KEY, KEY + "\x7f", KEY + "\u00e9"],
)
def test_a_key_with_a_line_break_or_control_character_is_refused_without_quoting_it(
    bad_key: str,
) -> None:
    message = config_error(api_key=bad_key)
    assert "ELEVATE_API_KEY" in message
    assert KEY not in message


def test_a_key_file_with_a_second_line_is_refused_without_quoting_it(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(f"{KEY}\n{KEY}-second-line\n")
    message = config_error(api_key_file=str(path))
    assert str(path) in message
    assert KEY not in message


def test_a_missing_key_file_is_refused_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "no-such-key"
    message = config_error(api_key_file=str(path))
    assert str(path) in message


def test_a_directory_as_key_file_is_refused_naming_the_path(tmp_path: Path) -> None:
    assert str(tmp_path) in config_error(api_key_file=str(tmp_path))


# -- import ids ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "good", ["5537431447739019570", "a" * 64, "A-z_0-9", "x", "-", "_underscore_"]
)
def test_ids_of_1_to_64_letters_digits_underscores_and_dashes_are_taken(good: str) -> None:
    assert settings(import_ids=[good]).import_ids == (good,)


@pytest.mark.parametrize(
    "bad",
    ["a" * 65, "12/34", "", "caf\u00e9", "\u0661\u0662\u0663", "12 34", "12.34", "12%2F34", "id\n"],
)
def test_a_bad_id_is_refused_naming_it(bad: str) -> None:
    message = config_error(import_ids=["1001", bad])
    assert repr(bad) in message


def test_duplicate_ids_are_tracked_once_in_the_order_given() -> None:
    assert settings(import_ids=["3", "1", "3", "2", "1"]).import_ids == ("3", "1", "2")


def test_no_ids_at_all_is_a_valid_configuration() -> None:
    assert settings(import_ids=[]).import_ids == ()


def test_the_ids_file_setting_is_kept_as_a_path(tmp_path: Path) -> None:
    assert settings(ids_file=str(tmp_path / "ids")).ids_file == tmp_path / "ids"


# -- numbers ------------------------------------------------------------------------------


def test_the_defaults_are_the_contracts() -> None:
    chosen = settings()
    assert (chosen.concurrency, chosen.timeout, chosen.retries) == (8, 5.0, 1)
    assert (chosen.listen_host, chosen.listen_port) == ("", 10025)
    assert chosen.listen_addresses == (("", 10025),)
    assert chosen.telemetry_path == "/metrics"
    assert (chosen.log_level, chosen.log_format) == ("info", "logfmt")
    # The second wave's: 10s and 10000.
    assert (chosen.min_poll_interval, chosen.max_tracked) == (10.0, 10000)


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("concurrency", "1", 1),
        ("concurrency", "64", 64),
        ("timeout", "0.25", 0.25),
        ("timeout", "30", 30.0),
        ("retries", "0", 0),
        ("retries", "3", 3),
    ],
)
def test_numbers_in_range_are_taken_from_their_strings(
    option: str, value: str, expected: float
) -> None:
    assert getattr(settings(**{option: value}), option) == expected


@pytest.mark.parametrize(
    ("option", "flag", "value"),
    [
        ("concurrency", "--elevate.concurrency", "0"),
        ("concurrency", "--elevate.concurrency", "-3"),
        ("concurrency", "--elevate.concurrency", "100000"),
        ("concurrency", "--elevate.concurrency", "2.5"),
        ("concurrency", "--elevate.concurrency", "eight"),
        ("concurrency", "--elevate.concurrency", ""),
        ("timeout", "--elevate.timeout", "0"),
        ("timeout", "--elevate.timeout", "-1"),
        ("timeout", "--elevate.timeout", "nan"),
        ("timeout", "--elevate.timeout", "inf"),
        ("timeout", "--elevate.timeout", "100000"),
        ("timeout", "--elevate.timeout", "5s"),
        ("retries", "--elevate.retries", "-1"),
        ("retries", "--elevate.retries", "1000"),
        ("retries", "--elevate.retries", "one"),
        ("retries", "--elevate.retries", "1.5"),
    ],
)
def test_a_number_out_of_range_or_not_a_number_is_refused_naming_flag_and_value(
    option: str, flag: str, value: str
) -> None:
    message = config_error(**{option: value})
    assert flag in message
    assert repr(value) in message


# -- durations and limits of the second wave ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0s", 0.0), ("0", 0.0), ("90s", 90.0), ("1h30m", 5400.0), ("500ms", 0.5), ("24h", 86400.0)],
)
def test_a_minimum_poll_interval_in_prometheus_duration_syntax_is_taken(
    value: str, seconds: float
) -> None:
    assert settings(min_poll_interval=value).min_poll_interval == seconds


# "10" has no unit, "25h" is beyond the cap of a day.
@pytest.mark.parametrize("value", ["10", "-1s", "1.5s", "abc", "25h", "", "1d1d", "5 m"])
def test_a_minimum_poll_interval_that_is_no_duration_or_over_a_day_is_refused(value: str) -> None:
    message = config_error(min_poll_interval=value)
    assert "--elevate.min-poll-interval" in message
    assert repr(value) in message


@pytest.mark.parametrize(("value", "limit"), [("1", 1), ("10000", 10000), ("250000", 250000)])
def test_a_whole_number_of_tracked_ids_is_taken(value: str, limit: int) -> None:
    assert settings(max_tracked=value).max_tracked == limit


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "many", "", "10000000000"])
def test_a_tracked_ids_limit_that_is_no_positive_whole_number_is_refused(value: str) -> None:
    message = config_error(max_tracked=value)
    assert "--imports.max-tracked" in message
    assert repr(value) in message


# -- where to listen ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        (":10025", "", 10025),
        ("127.0.0.1:9", "127.0.0.1", 9),
        ("[::1]:10025", "::1", 10025),
        ("localhost:8080", "localhost", 8080),
        ("0.0.0.0:65535", "0.0.0.0", 65535),
    ],
)
def test_listen_addresses_in_host_port_form_are_taken(address: str, host: str, port: int) -> None:
    chosen = settings(listen_address=address)
    assert (chosen.listen_host, chosen.listen_port) == (host, port)


@pytest.mark.parametrize(
    "address", ["abc", ":99999", "1.2.3.4", "", ":", "::1:10025", "host:port", "[::1]", ":-1"]
)
def test_a_bad_listen_address_is_refused_naming_it(address: str) -> None:
    message = config_error(listen_address=address)
    assert "--web.listen-address" in message
    assert repr(address) in message


def test_several_listen_addresses_are_taken_in_order_the_first_as_host_and_port() -> None:
    chosen = settings(listen_address=["127.0.0.1:9", "[::1]:10025", ":8080"])
    assert chosen.listen_addresses == (("127.0.0.1", 9), ("::1", 10025), ("", 8080))
    assert (chosen.listen_host, chosen.listen_port) == ("127.0.0.1", 9)


def test_one_listen_address_is_a_list_of_one() -> None:
    assert settings(listen_address="[::1]:10025").listen_addresses == (("::1", 10025),)


def test_a_bad_second_listen_address_is_refused_naming_it() -> None:
    message = config_error(listen_address=["127.0.0.1:9", "host:port"])
    assert "--web.listen-address" in message
    assert "'host:port'" in message


def test_a_listen_address_given_twice_is_refused_naming_it() -> None:
    message = config_error(listen_address=["127.0.0.1:9", ":10025", "127.0.0.1:9"])
    assert "--web.listen-address" in message
    assert "'127.0.0.1:9'" in message
    assert "more than once" in message


def test_any_free_port_may_be_asked_for_more_than_once() -> None:
    chosen = settings(listen_address=["127.0.0.1:0", "127.0.0.1:0"])
    assert chosen.listen_addresses == (("127.0.0.1", 0), ("127.0.0.1", 0))


def test_no_listen_address_at_all_is_refused() -> None:
    assert "--web.listen-address" in config_error(listen_address=[])


# -- telemetry path, logs -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/custom/metrics", "/elevate"])
def test_a_telemetry_path_from_the_root_is_taken(path: str) -> None:
    assert settings(telemetry_path=path).telemetry_path == path


@pytest.mark.parametrize("path", ["metrics", "", "/", "/-/healthy", "/-/metrics", "/m?x=1"])
def test_a_telemetry_path_that_would_clash_or_is_no_path_is_refused(path: str) -> None:
    message = config_error(telemetry_path=path)
    assert "--web.telemetry-path" in message
    assert repr(path) in message


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_the_four_log_levels_are_taken(level: str) -> None:
    assert settings(log_level=level).log_level == level


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_both_log_formats_are_taken(fmt: str) -> None:
    assert settings(log_format=fmt).log_format == fmt


@pytest.mark.parametrize(
    ("option", "flag", "value"),
    [
        ("log_level", "--log.level", "verbose"),
        ("log_level", "--log.level", ""),
        ("log_format", "--log.format", "text"),
        ("log_format", "--log.format", "yaml"),
    ],
)
def test_an_unknown_log_level_or_format_is_refused_naming_it(
    option: str, flag: str, value: str
) -> None:
    message = config_error(**{option: value})
    assert flag in message
    assert repr(value) in message


# -- the settings object ------------------------------------------------------------------


def test_the_settings_cannot_be_changed_once_loaded() -> None:
    chosen = settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        chosen.base_url = "http://elsewhere.example"  # type: ignore[misc]


def test_the_settings_do_not_show_the_key_when_printed(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    for chosen in (settings(), settings(api_key=None, api_key_file=str(path))):
        assert KEY not in repr(chosen)
        assert KEY not in str(chosen)
        assert KEY not in repr(chosen.api_key)
        assert KEY not in str(chosen.api_key)
        assert KEY not in f"{chosen.api_key}"


# -- the API's flavour ----------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["web-v2", "admin-v4", "admin-v3", "ADMIN-V4"])
def test_the_three_flavours_of_the_api_are_taken(flavour: str) -> None:
    assert settings(api=flavour).api == flavour.lower()


def test_the_web_api_v2_is_the_default_flavour() -> None:
    assert settings().api == "web-v2"


@pytest.mark.parametrize("bad", ["admin-v5", "v4", "", "web"])
def test_an_unknown_flavour_is_refused_naming_the_flag(bad: str) -> None:
    message = config_error(api=bad)
    assert "--elevate.api" in message
    assert repr(bad) in message


@pytest.mark.parametrize("flavour", ["admin-v4", "admin-v3"])
def test_an_admin_flavour_refuses_an_id_that_is_not_decimal_digits(flavour: str) -> None:
    message = config_error(api=flavour, import_ids=["5537431447739019570", "feed-7"])
    assert "'feed-7'" in message
    assert flavour in message
    assert "digits" in message


def test_an_admin_flavour_takes_ids_of_digits_beyond_2_to_the_53() -> None:
    chosen = settings(api="admin-v4", import_ids=["5537431447739019570123", "0042"])
    assert chosen.import_ids == ("5537431447739019570123", "0042")


@pytest.mark.parametrize(
    ("option", "value", "flag"),
    [
        ("retention", "0s", "--imports.retention"),
        ("retention", "366d", "--imports.retention"),
        ("retention", "24 h", "--imports.retention"),
        ("history", "-1d", "--storage.history"),
        ("history", "30d1", "--storage.history"),
        ("proxy_timeout", "0", "--proxy.timeout"),
        ("proxy_timeout", "1e9s", "--proxy.timeout"),
        ("proxy_label_header", "X-Feed Name", "--proxy.label-header"),
        ("proxy_label_header", "X-Feed\r\nApi-Key: x", "--proxy.label-header"),
        ("proxy_label_header", "authorization", "--proxy.label-header"),
        ("proxy_label_header", "Cookie", "--proxy.label-header"),
        ("proxy_listen_address", "127.0.0.1:-1", "--proxy.listen-address"),
    ],
)
def test_a_bad_lifecycle_or_proxy_setting_is_refused_naming_its_flag(
    option: str, value: str, flag: str
) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(ConfigError, match=re.escape(flag)):
        load_settings(base_url="http://127.0.0.1:9", api_key="k", **options)


def test_the_lifecycle_and_proxy_settings_are_taken_in_prometheus_durations() -> None:
    settings = load_settings(
        base_url="http://127.0.0.1:9",
        api_key="k",
        retention="36h",
        history="7d",
        proxy_timeout="15m",
        proxy_listen_address=["127.0.0.1:10027", "[::1]:10028"],
        storage_path="",
    )
    assert (settings.retention, settings.history, settings.proxy_timeout) == (
        36 * 3600.0,
        7 * 86400.0,
        900.0,
    )
    assert settings.proxy_addresses == (("127.0.0.1", 10027), ("::1", 10028))
    assert settings.storage_path is None
