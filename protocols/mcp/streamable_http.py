"""Streamable HTTP front end: both MCP protocol eras on one endpoint, via the SDK's session manager."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from mcp.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import INVALID_REQUEST

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
        await self.app(scope, receive, _InvalidRequestFix(send))


class _InvalidRequestFix:
    """Answers a body that is JSON but not JSON-RPC with -32600 Invalid Request.

    The SDK answers it with -32602 and a pydantic dump; only 400 responses are touched, so the
    normal path pays one status check.
    """

    def __init__(self, send: Any) -> None:
        self.send = send
        self.start: dict[str, Any] | None = None

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] == 400:
            self.start = message
            return
        if self.start is not None and message["type"] == "http.response.body":
            body = message.get("body", b"")
            if b'"code":-32602' in body and b"Validation error" in body:
                body = json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {"code": INVALID_REQUEST, "message": "Invalid Request: not a JSON-RPC 2.0 message"},
                    }
                ).encode()
            headers = [(k, v) for k, v in self.start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await self.send({**self.start, "headers": headers})
            self.start = None
            await self.send({**message, "body": body, "more_body": False})
            return
        await self.send(message)
