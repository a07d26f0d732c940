"""Files that block or lie: a named pipe or a huge file in place of the key file, the web
configuration or a certificate never stalls the exporter; it is refused with a reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trustme

from elevate_import_exporter.httpd.tls import TlsProvider
from elevate_import_exporter.httpd.webconfig import TlsServerConfig, WebConfigError, load_web_config
from elevate_import_exporter.simulator import Simulator
from tests.conftest import SIM_KEY, ExporterProcessFor
from tests.support import finishes


@pytest.fixture
def certificate(tmp_path: Path) -> TlsServerConfig:
    leaf = trustme.CA().issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    return TlsServerConfig(cert_file=tmp_path / "server.pem", key_file=tmp_path / "server.key")


def test_a_named_pipe_as_the_key_file_exits_2_at_once_naming_it(
    exporter_process: ExporterProcessFor, simulator: Simulator, tmp_path: Path
) -> None:
    pipe = tmp_path / "api-key"
    os.mkfifo(pipe)
    proc = exporter_process(
        "--elevate.base-url", simulator.url, "--elevate.api-key-file", str(pipe), wait=False
    )
    proc.assert_setup_error(str(pipe), "named pipe")


def test_a_key_file_larger_than_any_key_exits_2_naming_it(
    exporter_process: ExporterProcessFor, simulator: Simulator, tmp_path: Path
) -> None:
    huge = tmp_path / "api-key"
    huge.write_bytes(b"k" * (1024 * 1024))
    proc = exporter_process(
        "--elevate.base-url", simulator.url, "--elevate.api-key-file", str(huge), wait=False
    )
    proc.assert_setup_error(str(huge), "larger than")


def test_a_named_pipe_as_the_web_config_exits_2_at_once_naming_it(
    exporter_process: ExporterProcessFor, simulator: Simulator, tmp_path: Path
) -> None:
    pipe = tmp_path / "web-config.yml"
    os.mkfifo(pipe)
    proc = exporter_process(
        "--elevate.base-url",
        simulator.url,
        "--web.config.file",
        str(pipe),
        env={"ELEVATE_API_KEY": SIM_KEY},
        wait=False,
    )
    proc.assert_setup_error(str(pipe), "named pipe")


def test_a_named_pipe_as_a_certificate_in_the_web_config_is_refused_naming_the_key(
    tmp_path: Path, certificate: TlsServerConfig
) -> None:
    os.mkfifo(tmp_path / "pipe.pem")
    config = tmp_path / "web-config.yml"
    config.write_text("tls_server_config:\n  cert_file: pipe.pem\n  key_file: server.key\n")
    error = finishes(lambda: load_web_config(config))
    assert isinstance(error, WebConfigError)
    assert "cert_file" in str(error)
    assert "named pipe" in str(error)


def test_a_certificate_swapped_for_a_named_pipe_keeps_the_last_good_one_without_blocking(
    tmp_path: Path, certificate: TlsServerConfig
) -> None:
    provider = TlsProvider(certificate)
    before = provider.context()
    (tmp_path / "server.pem").unlink()
    os.mkfifo(tmp_path / "server.pem")
    contexts: list[object] = []
    assert finishes(lambda: contexts.append(provider.context())) is None
    assert contexts == [before]
