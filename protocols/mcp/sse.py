"""Legacy HTTP+SSE front end: `GET .../sse` opens the stream, `POST .../messages/?session_id=` feeds it."""

from __future__ import annotations

import contextlib
from typing import Any
from uuid import UUID

from mcp.server import Server
from mcp.server.sse import SseServerTransport
from mcp.server.transport_security import TransportSecuritySettings

from protocols import internals
from protocols.mcp.session_limits import SessionLimits, TooManySessions, caller_of
from protocols.mcp.streamable_http import SessionTable

MESSAGES = "/messages/"


class SseEndpoint:
    """The SSE transport of one MCP route; its message path sits beside the stream's path.

    A stream opened at `<prefix>/sse` announces `<prefix>/messages/?session_id=...`, so the pair
    works under any route prefix without configuration.
    """

    def __init__(
        self,
        server: Server[Any],
        *,
        security: TransportSecuritySettings | None = None,
        limits: SessionLimits | None = None,
    ) -> None:
        self.server = server
        self.limits = limits if limits is not None else SessionLimits()
        self.transport = SseServerTransport(MESSAGES, security_settings=security)
        internals.set_sse_streams(self.transport, SessionTable())  # the SDK's open streams, now with start times

    @staticmethod
    def handles(scope: Any) -> bool:
        path: str = scope["path"]
        method = scope.get("method")
        return (method == "GET" and path.endswith("/sse")) or (method == "POST" and _is_messages(path))

    def has_session(self, session_hex: str) -> bool:
        try:
            return UUID(hex=session_hex) in internals.sse_streams(self.transport)  # the SDK's open streams
        except ValueError:
            return False

    def session_count(self) -> int:
        return len(internals.sse_streams(self.transport))

    def sessions(self) -> list[dict[str, Any]]:
        """The open streams (for the admin API): id, who opened it, and how long ago."""
        table: SessionTable = internals.sse_streams(self.transport)  # type: ignore[assignment]
        return table.describe("sse", internals.sse_owners(self.transport), lambda sid: sid.hex)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["method"] == "POST":
            await self.transport.handle_post_message(scope, receive, send)
            return
        prefix = scope["path"][: -len("/sse")]
        scope = {**scope, "root_path": scope.get("root_path", "") + prefix}
        caller = caller_of(scope)
        try:
            self.limits.take(caller)  # the stream is the session
        except TooManySessions as refused:
            await refused.respond(send)
            return
        # connect_sse sends the whole response itself: nothing may be sent after it returns.
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self.limits.release, caller)
            try:
                read, write = await stack.enter_async_context(self.transport.connect_sse(scope, receive, send))
            except ValueError:  # refused (Host/Origin check); the SDK already answered 4xx
                return
            await self.server.run(read, write, self.server.create_initialization_options())


def _is_messages(path: str) -> bool:
    return path.endswith(MESSAGES) or path.endswith(MESSAGES[:-1])
