"""Where a runtime-registered agent may live: not at the gateway itself, and not (unless allowed) on a
loopback, private, link-local or otherwise non-public network.

A registrant is only trusted to name an agent, not to make the gateway a proxy into its own admin API or
the networks behind it. The rule is checked twice: when the agent is registered (every address its host
name resolves to), and again on every connection the gateway opens to a runtime agent, against the address
actually connected to, so a name that resolves elsewhere later (DNS rebinding) gains nothing. Agents from
the config are the operator's and are not checked.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import ipaddress
import socket
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore

from gateway.listening import listening_addresses
from protocols import internals

__all__ = ["AddressPolicy", "RefusedAddress"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_ENFORCED: contextvars.ContextVar[AddressPolicy | None] = contextvars.ContextVar("agent_addresses", default=None)


class RefusedAddress(ValueError):
    """The agent's URL leads somewhere a registered agent may not be; the message is for the operator's log."""


class AddressPolicy:
    """`allowed`: networks (CIDR strings) a registered agent may use although they are not public."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = [ipaddress.ip_network(network, strict=False) for network in allowed]

    def refusal(self, host: str, port: int, local: str | None = None) -> str | None:
        """Why an agent may not be reached at host:port (None: it may). `local`: this end's address of a
        connection to it (a peer with the same address is this machine)."""
        try:
            ip = _plain(ipaddress.ip_address(host.split("%", 1)[0]))
        except ValueError:
            return f"{host} is not an IP address"
        if self._is_own(ip, port, local):
            return f"{_show(ip, port)} is the gateway's own listening address"
        if (ip.is_global and not ip.is_multicast) or any(ip in network for network in self.allowed):
            return None
        return f"{_show(ip, port)} is not a public address (list its network in registration.allowNetworks)"

    async def check(self, url: str) -> None:
        """Raise RefusedAddress unless every address `url`'s host resolves to may be used (ValueError when
        it does not resolve at all)."""
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        try:
            found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ValueError(f"{host!r} does not resolve: {exc}") from None
        for *_, address in found:
            why = self.refusal(str(address[0]), port)
            if why is not None:
                raise RefusedAddress(why)

    @contextlib.contextmanager
    def enforced(self) -> Iterator[None]:
        """Connections opened within (by clients `install` prepared) are refused if they lead somewhere
        this policy forbids."""
        token = _ENFORCED.set(self)
        try:
            yield
        finally:
            _ENFORCED.reset(token)

    def _is_own(self, ip: IPAddress, port: int, local: str | None) -> bool:
        for address, own_port in listening_addresses():
            if own_port != port:
                continue
            bound = _plain(ipaddress.ip_address(address.split("%", 1)[0]))
            if ip == bound:
                return True
            here = ip.is_loopback or ip.is_unspecified or str(ip) == local or ip in _host_addresses()
            if bound.is_unspecified and here:  # a wildcard bind answers on every address of this machine
                return True
        return False


def install(client: Any) -> None:
    """Have an httpx client's connections checked against the policy `AddressPolicy.enforced()` sets (if any)."""
    internals.wrap_network_backend(client, _CheckedBackend)


class _CheckedBackend:
    """An httpcore network backend that checks the address each new TCP connection reached."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        stream = await self.inner.connect_tcp(host, port, *args, **kwargs)
        policy = _ENFORCED.get()
        if policy is None:
            return stream
        peer = stream.get_extra_info("server_addr")
        mine = stream.get_extra_info("client_addr")
        why = policy.refusal(str(peer[0]), int(peer[1]), str(mine[0]) if mine else None) if peer else "no peer address"
        if why is not None:
            await stream.aclose()
            raise httpcore.ConnectError(f"connection refused by the gateway: {why}")
        return stream

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        if _ENFORCED.get() is not None:
            raise httpcore.ConnectError("connection refused by the gateway: a registered agent is reached over TCP")
        return await self.inner.connect_unix_socket(*args, **kwargs)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def _plain(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (::ffff:127.0.0.1) is the IPv4 address it carries."""
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip


def _show(ip: IPAddress, port: int) -> str:
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


@functools.cache
def _host_addresses() -> frozenset[IPAddress]:
    """This machine's addresses, as far as its own name resolves (a best effort: looked up once)."""
    try:
        found = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        return frozenset()
    return frozenset(_plain(ipaddress.ip_address(str(a[4][0]).split("%", 1)[0])) for a in found)
