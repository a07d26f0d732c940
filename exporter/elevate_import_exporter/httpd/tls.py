"""TLS for the HTTP server, from the exporter-toolkit's ``tls_server_config``.

Same meanings as the toolkit wherever Python's ``ssl`` can honour them; where it cannot,
the configuration is refused with a message naming the key, never quietly weakened:

- ``client_auth_type``: ``NoClientCert`` and ``RequestClientCert`` -> no certificate asked
  (the toolkit asks for one under ``RequestClientCert`` but neither verifies nor uses it, so
  every client is let in either way); ``VerifyClientCertIfGiven`` -> ``CERT_OPTIONAL``;
  ``RequireAndVerifyClientCert`` -> ``CERT_REQUIRED``. ``RequireAnyClientCert`` is refused:
  ``ssl`` cannot require a certificate without verifying it.
- ``min_version``/``max_version``: TLS12 and TLS13; TLS10/TLS11 are refused (OpenSSL 3
  refuses them at its default security level, and they are broken).
- ``cipher_suites``: the Go names of TLS 1.2 suites, mapped to OpenSSL's; TLS 1.3 suites
  cannot be chosen through ``ssl`` and are refused (Go ignores them).
- ``curve_preferences``: one curve; ``ssl`` cannot set an ordered list, so more are refused.
- ``client_allowed_sans``: checked after the handshake (:meth:`TlsProvider.refusal`).

:class:`TlsProvider` builds a new context when the certificate, key or CA files change, so
new connections get a rotated certificate without a restart.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from elevate_import_exporter.core.files import UnreadableFile, path_signature, read_text_file
from elevate_import_exporter.httpd.webconfig import (
    MAX_PEM_BYTES,
    TlsServerConfig,
    WebConfigError,
)

log = logging.getLogger(__name__)

_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CIPHERS = {  # Go's tls.CipherSuites() names of TLS 1.2 suites -> OpenSSL names
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
_TLS13_CIPHERS = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
)
_CURVES = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}
_VERIFY = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_SAN_KINDS = {"DNS", "IP Address", "email", "URI"}  # the kinds the toolkit compares


def _refuse(key: str, why: str) -> WebConfigError:
    return WebConfigError(f"tls_server_config.{key}: {why}")


def server_context(config: TlsServerConfig) -> ssl.SSLContext:
    """A server context for ``config``; :class:`WebConfigError` names what cannot be honoured."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _set_versions(context, config)
    _load_certificate(context, config)
    _set_client_auth(context, config)
    _set_ciphers(context, config)
    _set_curve(context, config)
    if config.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def _set_versions(context: ssl.SSLContext, config: TlsServerConfig) -> None:
    lowest = _version("min_version", config.min_version)
    context.minimum_version = lowest
    if config.max_version is not None:
        highest = _version("max_version", config.max_version)
        if highest < lowest:
            raise _refuse("max_version", f"{config.max_version} is below min_version")
        context.maximum_version = highest


def _version(key: str, name: str) -> ssl.TLSVersion:
    if name in ("TLS10", "TLS11"):
        raise _refuse(key, f"{name} is not offered (broken, and refused by OpenSSL 3); use TLS12")
    if name not in _VERSIONS:
        raise _refuse(key, f"unknown TLS version {name!r}; use TLS12 or TLS13")
    return _VERSIONS[name]


def _load_certificate(context: ssl.SSLContext, config: TlsServerConfig) -> None:
    if config.cert_file is None and config.cert is None:
        raise _refuse("cert_file", "missing one of cert or cert_file")
    if config.key_file is None and config.key is None:
        raise _refuse("key_file", "missing one of key or key_file")
    key_name = "key_file" if config.key_file else "key"
    try:
        with (
            _as_file(config.cert_file, config.cert) as cert,
            _as_file(config.key_file, config.key) as key,
        ):
            context.load_cert_chain(cert, key, password=_no_password)
    except (OSError, ssl.SSLError, _EncryptedKey) as exc:
        raise _refuse(key_name, f"cannot load certificate and key: {_reason(exc)}") from None


class _EncryptedKey(Exception):
    def __str__(self) -> str:
        return "the key is encrypted; give it unencrypted, as the toolkit takes it"


def _no_password() -> bytes:
    # Without this OpenSSL would prompt on the terminal for an encrypted key's password.
    raise _EncryptedKey


@contextlib.contextmanager
def _as_file(path: Path | None, pem: str | None) -> Iterator[str]:
    """``path``, or inline ``pem`` in a private temporary file (``ssl`` loads only files)."""
    if path is not None:
        # Checked here, without blocking, before OpenSSL opens it: a file swapped for a
        # named pipe must not stall the accept loop. (No copy in a temporary file: the
        # container runs with a read-only root, and /tmp may not be writable.)
        read_pem(path)
        yield str(path)
        return
    fd, name = tempfile.mkstemp(suffix=".pem")  # mode 0600: the key must not leak
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(pem or "")
        yield name
    finally:
        Path(name).unlink()


def _set_client_auth(context: ssl.SSLContext, config: TlsServerConfig) -> None:
    kind = config.client_auth_type
    has_ca = config.client_ca_file is not None or config.client_ca is not None
    if kind == "RequireAnyClientCert":
        raise _refuse(
            "client_auth_type",
            "RequireAnyClientCert cannot be honoured: Python's ssl cannot require a client "
            "certificate without verifying it; use RequireAndVerifyClientCert with client_ca_file",
        )
    if kind not in _VERIFY:
        raise _refuse("client_auth_type", f"unknown value {kind!r}")
    if has_ca and kind == "NoClientCert":
        raise _refuse("client_ca_file", "client CAs given without a client_auth_type")
    if config.client_allowed_sans and _VERIFY[kind] == ssl.CERT_NONE:
        raise _refuse(
            "client_allowed_sans",
            f"needs a client certificate, which {kind} does not verify; "
            "use VerifyClientCertIfGiven or RequireAndVerifyClientCert",
        )
    context.verify_mode = _VERIFY[kind]
    if context.verify_mode == ssl.CERT_NONE:
        return
    try:
        if config.client_ca_file is not None:
            context.load_verify_locations(cadata=read_pem(config.client_ca_file))
        elif config.client_ca is not None:
            context.load_verify_locations(cadata=config.client_ca)
        else:  # as Go does without ClientCAs: the system's roots
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    except (OSError, ssl.SSLError) as exc:
        key = "client_ca_file" if config.client_ca_file else "client_ca"
        raise _refuse(key, f"cannot load client CAs: {_reason(exc)}") from None


def _set_ciphers(context: ssl.SSLContext, config: TlsServerConfig) -> None:
    if not config.cipher_suites:
        return
    names = []
    for suite in config.cipher_suites:
        if suite in _TLS13_CIPHERS:
            raise _refuse(
                "cipher_suites",
                f"{suite} is a TLS 1.3 suite; Python's ssl cannot choose those "
                "(the toolkit ignores them too): leave it out",
            )
        if suite not in _CIPHERS:
            raise _refuse("cipher_suites", f"unknown cipher suite {suite!r}")
        names.append(_CIPHERS[suite])
    try:
        context.set_ciphers(":".join(names))
    except ssl.SSLError:
        raise _refuse("cipher_suites", "none of them is available in this OpenSSL") from None


def _set_curve(context: ssl.SSLContext, config: TlsServerConfig) -> None:
    curves = config.curve_preferences
    if not curves:
        return
    if len(curves) > 1:
        raise _refuse(
            "curve_preferences",
            "Python's ssl can set one curve only, not an ordered list; give exactly one",
        )
    if curves[0] not in _CURVES:
        raise _refuse("curve_preferences", f"unknown curve {curves[0]!r}")
    try:
        context.set_ecdh_curve(_CURVES[curves[0]])
    except (ValueError, ssl.SSLError) as exc:
        raise _refuse("curve_preferences", f"{curves[0]}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, ssl.SSLError):
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


def peer_sans(peer: Mapping[str, object]) -> list[str]:
    """A verified peer certificate's SANs as the toolkit compares them (DNS, IP, email, URI)."""
    sans = peer.get("subjectAltName", ())
    found = []
    for kind, value in sans if isinstance(sans, tuple) else ():
        if kind not in _SAN_KINDS:
            continue
        if kind == "IP Address":  # OpenSSL writes IPv6 long and in capitals, Go short
            with contextlib.suppress(ValueError):
                value = ipaddress.ip_address(value.strip()).compressed
        found.append(str(value))
    return found


Signature = tuple[object, ...]


class TlsProvider:
    """The TLS context for each new connection; rebuilt when the configuration or the
    certificate, key or CA files change (stat signature), so rotation needs no restart.

    A change that fails to load keeps the last good context and logs one warning per
    change. ``config`` is a configuration or a function returning the current one (such as
    the TLS part of a watched web config); whether TLS is served is decided at start, as in
    the toolkit, so a later None (TLS taken out of the file) keeps the last context.
    """

    def __init__(self, config: TlsServerConfig | Callable[[], TlsServerConfig | None]) -> None:
        self._config = config if callable(config) else (lambda: config)
        self._lock = threading.Lock()
        first = self._config()
        if first is None:
            raise WebConfigError("tls_server_config: missing")
        self._allowed = first.client_allowed_sans
        self._context = server_context(first)  # refuses a bad start
        self._signature = self._attempted = _signature(first)

    def context(self) -> ssl.SSLContext:
        """The context for a connection accepted now."""
        config = self._config()
        signature = self._signature if config is None else _signature(config)
        with self._lock:
            if config is not None and signature not in (self._signature, self._attempted):
                self._attempted = signature
                try:
                    self._context = server_context(config)
                except WebConfigError as exc:
                    log.warning("TLS configuration changed but cannot be used, kept: %s", exc)
                else:
                    self._signature = signature
                    self._allowed = config.client_allowed_sans
                    log.info("TLS certificate or configuration reloaded")
            return self._context

    def refusal(self, sock: ssl.SSLSocket) -> str | None:
        """Why the peer of a finished handshake is refused (``client_allowed_sans``), or None."""
        with self._lock:
            allowed = self._allowed
        if not allowed:
            return None
        peer = sock.getpeercert()
        if not peer:
            return "no client certificate, and client_allowed_sans is set"
        sans = peer_sans(peer)
        if any(san in allowed for san in sans):
            return None
        return f"client certificate SANs {sans} are not in client_allowed_sans"


def _signature(config: TlsServerConfig) -> Signature:
    files = (config.cert_file, config.key_file, config.client_ca_file)
    return (config, *(_stat(path) for path in files))


def _stat(path: Path | None) -> tuple[int, ...] | None:
    return None if path is None else path_signature(path)


def read_pem(path: Path) -> str:
    """A PEM file's text, read as any outside file is (regular files only, never blocking)."""
    try:
        return read_text_file(path, MAX_PEM_BYTES)[1]
    except UnreadableFile as exc:
        raise OSError(f"cannot read {path}: {exc}") from None
