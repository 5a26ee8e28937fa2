"""The connected clients the gateway tells about changes: list changes and resource updates, in each era.

Handshake-era clients are reached through their connection's standalone channel; 2026-07-28 clients
listen with `subscriptions/listen`, served by the SDK's `ListenHandler` from the bus kept here.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Literal

from mcp.server import ServerRequestContext
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ToolsListChanged,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from protocols import internals

logger = logging.getLogger("agentplex.federation")

ListKind = Literal["tool", "prompt", "resource"]
_LIST_CHANGED = {
    "tool": ("notifications/tools/list_changed", ToolsListChanged),
    "prompt": ("notifications/prompts/list_changed", PromptsListChanged),
    "resource": ("notifications/resources/list_changed", ResourcesListChanged),
}


class Downstreams:
    """Who is connected, and who subscribed to which (exposed) resource URI."""

    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        self._connections: dict[str | int, Any] = {}  # by Mcp-Session-Id (SSE and stdio: by identity)
        self._subscribers: dict[str, set[Any]] = {}
        self._watchers: dict[str, int] = {}  # 2026-07-28 listeners per resource URI

    def seen(self, ctx: ServerRequestContext[Any]) -> None:
        """Remember a handshake-era connection until it ends (modern clients listen instead)."""
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return
        connection = internals.connection_of(ctx.session)  # the connection's stable identity (sdk-notes §7.2)
        if connection is None or self._connections.get(_key(connection)) is connection:
            return
        self._connections[_key(connection)] = connection
        connection.exit_stack.callback(self._forget, connection)

    def connection(self, session_id: str) -> Any:
        return self._connections.get(session_id)

    def clients(self) -> list[Any]:
        """The handshake-era connections."""
        return list(self._connections.values())

    def subscribe(self, ctx: ServerRequestContext[Any], uri: str) -> None:
        connection = internals.connection_of(ctx.session)
        if connection is not None:
            self._subscribers.setdefault(uri, set()).add(connection)

    def unsubscribe(self, ctx: ServerRequestContext[Any], uri: str) -> bool:
        """Forget a subscription; True when it was this client's and nobody else (subscriber or listener)
        still wants that URI, so a client cannot end the upstream subscription others depend on."""
        connection = internals.connection_of(ctx.session)
        if connection not in self._subscribers.get(uri, ()):
            return False
        self._drop(uri, connection)
        return not self.wanted(uri) and uri not in self._watchers

    def watch(self, uri: str) -> bool:
        """A listener watches `uri`; True when it is the first (subscribe upstream)."""
        self._watchers[uri] = self._watchers.get(uri, 0) + 1
        return self._watchers[uri] == 1 and not self.wanted(uri)

    def unwatch(self, uri: str) -> bool:
        """A listener stopped; True when nobody (listener or subscriber) wants `uri` any more."""
        left = self._watchers.get(uri, 1) - 1
        if left:
            self._watchers[uri] = left
        else:
            self._watchers.pop(uri, None)
        return not left and not self.wanted(uri)

    def wanted(self, uri: str) -> bool:
        return bool(self._subscribers.get(uri))

    async def list_changed(self, kind: ListKind, clients: list[Any] | None, listeners: bool) -> None:
        """Tell handshake-era `clients` (None: all of them) and, if `listeners`, the 2026-07-28 ones."""
        method, event = _LIST_CHANGED[kind]
        for connection in list(self._connections.values()) if clients is None else clients:
            await _notify(connection, method, None)
        if listeners:
            await self.bus.publish(event())

    async def resource_updated(self, uri: str, clients: list[Any] | None, listeners: bool) -> None:
        for connection in list(self._subscribers.get(uri, ())):
            if clients is None or connection in clients:
                await _notify(connection, "notifications/resources/updated", {"uri": uri})
        if listeners:
            await self.bus.publish(ResourceUpdated(uri=uri))

    def _forget(self, connection: Any) -> None:
        if self._connections.get(_key(connection)) is connection:
            del self._connections[_key(connection)]
        for uri in [u for u, subscribers in self._subscribers.items() if connection in subscribers]:
            self._drop(uri, connection)

    def _drop(self, uri: str, connection: Any) -> None:
        subscribers = self._subscribers.get(uri, set())
        subscribers.discard(connection)
        if not subscribers:
            self._subscribers.pop(uri, None)


def _key(connection: Any) -> str | int:
    return connection.session_id or id(connection)


async def _notify(connection: Any, method: str, params: dict[str, Any] | None) -> None:
    """Best effort: a client that went away must not stop the others from hearing."""
    with contextlib.suppress(Exception):
        await connection.outbound.notify(method, params)
