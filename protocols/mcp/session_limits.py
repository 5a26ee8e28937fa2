"""How many client sessions one MCP route holds, in all and per caller, checked before a session opens.

A session is not free: the SDK's session state, and for each `sharing: session` target it calls
into, an upstream session of its own (a process, for stdio). A caller is the principal authentication
found (`scope["user"]`, what the SDK binds a session to), else the client's address.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context

# Implementation-defined JSON-RPC server error range (-32000..-32099), beside UPSTREAM_UNAVAILABLE.
TOO_MANY_SESSIONS = -32004


class TooManySessions(Exception):
    """A new session was refused: 429 when the caller holds too many, 503 when the route does."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    async def respond(self, send: Any) -> None:
        error = {"code": TOO_MANY_SESSIONS, "message": self.message}
        body = json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class SessionLimits:
    """The sessions of one route's transports (streamable HTTP and SSE share one), by caller.

    `None` is no limit. A session counts from the moment it is admitted (so concurrent openings
    cannot overshoot) until its transport forgets it.
    """

    def __init__(self, total: int | None = None, per_caller: int | None = None) -> None:
        self.total = total
        self.per_caller = per_caller
        self._held: Counter[Hashable] = Counter()

    def __len__(self) -> int:
        return self._held.total()

    def take(self, caller: Hashable) -> None:
        """Count one more session for `caller`, or raise TooManySessions."""
        if self.per_caller is not None and self._held[caller] >= self.per_caller:
            raise TooManySessions(
                429,
                f"too many sessions: this caller already holds {self._held[caller]} on this route"
                f" (maxSessionsPerCaller: {self.per_caller}); end one (HTTP DELETE) or wait for an idle one to expire",
            )
        if self.total is not None and len(self) >= self.total:
            raise TooManySessions(
                503,
                f"too many sessions: this route holds {len(self)} (maxSessions: {self.total}); try again later",
            )
        self._held[caller] += 1

    def release(self, caller: Hashable) -> None:
        self._held[caller] -= 1
        if self._held[caller] <= 0:
            del self._held[caller]


def caller_of(scope: Any) -> Hashable:
    """Whom a request's sessions count against: its principal, else its client address."""
    user = scope.get("user")
    if isinstance(user, AuthenticatedUser):
        return ("principal", *authorization_context(user).values())
    client = scope.get("client")
    return ("address", client[0] if client else None)
