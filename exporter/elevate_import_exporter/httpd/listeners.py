"""Listening sockets: bound to each ``[host]:port`` the exporter serves on, watched together.

An empty host means every address, IPv4 and IPv6. Binding is all or nothing: when one
address cannot be bound, those bound before it are given back and :class:`ListenError`
names the one that failed, as the flag takes it.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Sequence


class ListenError(Exception):
    """The HTTP server could not bind one of its addresses."""


class Listeners:
    """The listening sockets of one server, registered with a selector as one."""

    def __init__(self, socks: socket.socket | Sequence[socket.socket]) -> None:
        self.socks = [socks] if isinstance(socks, socket.socket) else list(socks)
        for sock in self.socks:
            sock.setblocking(False)
        self.ports = [int(sock.getsockname()[1]) for sock in self.socks]

    def watch(self, selector: selectors.BaseSelector) -> None:
        """Register each socket, its own selector data, for the connections it has ready."""
        for sock in self.socks:
            selector.register(sock, selectors.EVENT_READ, sock)

    def unwatch(self, selector: selectors.BaseSelector) -> None:
        for sock in self.socks:
            selector.unregister(sock)

    def close(self) -> None:
        """Close every socket: new connections are refused, not left in the backlog."""
        for sock in self.socks:
            sock.close()


def listen_all(addresses: Sequence[tuple[str, int]]) -> Listeners:
    """A socket listening on each ``(host, port)``, or :class:`ListenError`."""
    socks: list[socket.socket] = []
    try:
        for host, port in addresses:
            socks.append(listen(host, port))
    except ListenError:
        for sock in socks:
            sock.close()
        raise
    return Listeners(socks)


def listen(host: str, port: int) -> socket.socket:
    named = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    candidates: list[tuple[str, socket.AddressFamily]]
    if host:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ListenError(f"cannot listen on {named}: {exc.strerror}") from None
        candidates = [(str(info[4][0]), info[0]) for info in infos]
    else:
        candidates = [("::", socket.AF_INET6), ("0.0.0.0", socket.AF_INET)]
    error: OSError | None = None
    for address, family in candidates:
        try:
            # An empty host means every address, IPv4 included.
            return socket.create_server(
                (address, port),
                family=family,
                backlog=socket.SOMAXCONN,
                dualstack_ipv6=family == socket.AF_INET6 and socket.has_dualstack_ipv6(),
            )
        except OSError as exc:
            error = exc
    reason = error.strerror if error is not None and error.strerror else str(error)
    raise ListenError(f"cannot listen on {named}: {reason}")
