"""Streamable HTTP front end: both MCP protocol eras on one endpoint, via the SDK's session manager."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from mcp.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def rebinding_protection(address: str) -> TransportSecuritySettings | None:
    """Host/Origin checks for loopback binds, where DNS rebinding is the threat; none elsewhere."""
    if address not in LOOPBACK and not address.startswith("127."):
        return None
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
    if address.startswith("127.") and address != "127.0.0.1":
        hosts += [f"{address}:*", address]
    origins = [f"{scheme}://{host}" for scheme in ("http", "https") for host in hosts]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


class StreamableHTTPEndpoint:
    """One MCP endpoint: an ASGI app plus the session manager lifetime that must wrap it."""

    def __init__(
        self,
        server: Server[Any],
        *,
        stateless: bool = False,
        security: TransportSecuritySettings | None = None,
        max_request_body_size: int = 4 * 1024 * 1024,
    ) -> None:
        self.manager = StreamableHTTPSessionManager(
            app=server,
            stateless=stateless,
            security_settings=security,
            max_request_body_size=max_request_body_size,
        )
        self.app = StreamableHTTPASGIApp(self.manager)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.manager.run():
            yield

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
