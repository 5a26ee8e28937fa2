"""Listening TCP sockets for the gateway's servers (binds, the admin API, the stats address)."""

from __future__ import annotations

import socket
import weakref

_OPEN: weakref.WeakSet[socket.socket] = weakref.WeakSet()  # every listener made here, while it lives


def tcp_listener(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A bound, listening, non-inheritable socket; raises OSError.

    Made with IPPROTO_TCP on purpose: asyncio sets TCP_NODELAY on accepted connections only for such
    sockets, and without it every keep-alive answer waits for the peer's delayed ACK (about 40 ms)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    _OPEN.add(sock)
    return sock


def listening_addresses() -> list[tuple[str, int]]:
    """(address, port) of every socket this process listens on (binds, admin API, stats) that is still open:
    what a registered agent must never point at."""
    found = []
    for sock in list(_OPEN):
        try:
            address, port = sock.getsockname()[:2]
        except OSError:  # closed
            continue
        found.append((address, port))
    return found
