"""Which upstream connection serves a request, and which downstream call is behind what it sends back.

Each target has one shared connection. A handshake-era client session gets a connection of its own
to a `sharing: session` target when it first calls into it (a process of its own for stdio), closed
when the session ends; until then its lists come from the shared one (`listing`). A call on a shared
stdio or SSE connection that already has one open gets a spare (federation/spares.py). While a call
runs, the connection's callbacks find it here (`on_behalf`, `caller_for`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.server import ServerRequestContext
from mcp.shared.exceptions import MCPError

from federation.bridge import Parked
from federation.spares import UNRELATED_TRANSPORTS, Spares
from protocols.mcp.relay import Downstream
from protocols.mcp.upstream import RELAY_CALLER, TargetSpec, Upstream, UpstreamEvents

logger = logging.getLogger("agentplex.federation")

SPARE_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})


@dataclass(eq=False)
class Call:
    """A downstream request being served upstream: through the SDK (`ctx`), parked for a 2026-07-28
    client whose upstream asks mid-call (`parked`, federation/bridge.py), or on the raw relay (`relay`)."""

    ctx: ServerRequestContext[Any] | None
    parked: Parked | None = None
    relay: Downstream | None = None


# The call an upstream request is being made for; read back in upstream callbacks.
_CALLER: contextvars.ContextVar[Call | None] = contextvars.ContextVar("caller", default=None)


class UpstreamPool:
    """The connections to every target: shared, per client session, and spares."""

    def __init__(self, targets: Sequence[TargetSpec], events: UpstreamEvents) -> None:
        self.events = events
        self.shared: dict[str, Upstream] = {spec.name: Upstream(spec, events) for spec in targets}
        self._sessions: dict[Any, dict[str, Upstream]] = {}  # client connection -> its own upstreams
        self._owners: dict[Upstream, Any] = {}  # and back
        self._untouched: set[Upstream] = set()  # adopted before their session's first use: it lists from shared
        self.levels: dict[Any, Any] = {}  # client connection -> the log level it set (for upstreams opened later)
        self.shared_level: Any = None  # the log level last set on the shared upstreams (spares get it too)
        self._ended_restarts: dict[str, int] = {}  # restarts of client sessions' upstreams that have closed
        self._inflight: dict[Upstream, list[Call]] = {}  # calls sent on each connection, not answered yet
        self._placed: dict[Upstream, int] = {}  # calls given each connection (some may be connecting it)
        self._spares = Spares(self._spare)
        self.tg: anyio.abc.TaskGroup | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[UpstreamPool]:
        """Open every shared connection (concurrently; failures are logged and retried on use); on the way
        out close every client session's connections and the spares."""
        async with contextlib.AsyncExitStack() as stack:
            for upstream in self.shared.values():
                await stack.enter_async_context(upstream.running())
            async with anyio.create_task_group() as tg:
                for upstream in self.shared.values():
                    tg.start_soon(_connect_quietly, upstream)
            async with anyio.create_task_group() as self.tg:
                self._spares.tg = self.tg
                try:
                    yield self
                finally:
                    for connection in list(self._sessions):
                        await self.session_ended(connection)
                    await self._spares.close()
                    self.tg.cancel_scope.cancel()
                    self.tg = None

    # -- which connection ------------------------------------------------------------------

    def of(self, target: str, connection: Any) -> Upstream:
        """A client connection's own upstream of `target` (opened on first use), or the shared one."""
        shared = self.shared[target]
        if connection is None or shared.spec.sharing == "shared" or self.tg is None:
            return shared
        own = self._sessions.get(connection)
        if own is None:
            own = self._sessions[connection] = {}
            connection.exit_stack.push_async_callback(self.session_ended, connection)
        upstream = own.get(target)
        if upstream is None:
            upstream = own[target] = Upstream(shared.spec, self.events).attach(self.tg)
            self._owners[upstream] = connection
            upstream.log_level = self.levels.get(connection)  # in force before its first request
        self._untouched.discard(upstream)
        return upstream

    def fresh(self, target: str) -> Upstream:
        """A new connection to `target` owned by nobody yet (a session's, once `adopt`ed)."""
        assert self.tg is not None
        return Upstream(self.shared[target].spec, self.events).attach(self.tg)

    def adopt(self, connection: Any, upstreams: dict[str, Upstream]) -> None:
        """A client session's own upstreams, opened before it was (portable sessions: federation/portable.py)."""
        own = self._sessions.get(connection)
        if own is None:
            own = self._sessions[connection] = {}
            connection.exit_stack.push_async_callback(self.session_ended, connection)
        for target, upstream in upstreams.items():
            own[target] = upstream
            self._owners[upstream] = connection
            self._untouched.add(upstream)  # lists still come from the shared one until the session uses it

    def listing(self, target: str, connection: Any) -> Upstream:
        """Where a client session's lists of `target` come from: its own upstream once it has one, else the
        shared one, which lists what a fresh session of the same server would. A target sent credentials
        (backendAuth) lists through the session's own, as what it lists may depend on whose they are."""
        return self.shared[target] if self.lists_shared(target, connection) else self.of(target, connection)

    def lists_shared(self, target: str, connection: Any) -> bool:
        own = self._sessions.get(connection, {})
        mine = own.get(target)
        return connection is None or (
            self.shared[target].spec.auth is None and (mine is None or mine in self._untouched)
        )

    def owner(self, upstream: Upstream) -> Any:
        """The client connection a session's own upstream belongs to (None for a shared one or a spare)."""
        return self._owners.get(upstream)

    def _spare(self, shared: Upstream) -> Upstream:
        """Another connection to a shared upstream's target, told the shared log level."""
        assert self.tg is not None
        spare = Upstream(shared.spec, self.events).attach(self.tg)
        spare.log_level = self.shared_level  # in force before its first request
        return spare

    async def session_ended(self, connection: Any) -> None:
        """A client session is over (closed, deleted or idle too long): so are its upstream sessions."""
        for upstream in self._sessions.pop(connection, {}).values():
            self._owners.pop(upstream, None)
            self._untouched.discard(upstream)
            await upstream.close()
            name = upstream.spec.name
            self._ended_restarts[name] = self._ended_restarts.get(name, 0) + upstream.restarts

    def remember_level(self, connection: Any, level: Any) -> None:
        """The log level a client session set, for its upstreams opened later (forgotten when it ends)."""
        if connection not in self.levels:
            connection.exit_stack.callback(self.levels.pop, connection, None)
        self.levels[connection] = level

    # -- what operators see ----------------------------------------------------------------

    def status(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "connected": up.connected,
                "protocolVersion": up.protocol_version,
                "lastError": up.last_error,
                "sessions": sum(1 for ups in self._sessions.values() if name in ups),
                "spares": self._spares.count(name),
            }
            for name, up in self.shared.items()
        }

    def restarts(self) -> dict[str, int]:
        """Reconnections per target so far (for stdio: processes started again), every client session's included."""
        counts = dict(self._ended_restarts)
        for name, restarts in self._spares.restarts().items():
            counts[name] = counts.get(name, 0) + restarts
        for ups in [self.shared, *self._sessions.values()]:
            for name, up in ups.items():
                counts[name] = counts.get(name, 0) + up.restarts
        return counts

    # -- calls on a connection -------------------------------------------------------------

    @contextlib.contextmanager
    def placement(self, upstream: Upstream, method: str) -> Iterator[Upstream]:
        """The connection a request goes on: `upstream`, or for a call (which may log or ask the client
        something) a spare of its own when `upstream` is a shared connection whose messages cannot be told
        apart (stdio, SSE) and another call is open on it. Subscriptions always stay on `upstream`."""
        spare = None
        if (
            method in SPARE_METHODS
            and self._placed.get(upstream)
            and upstream is self.shared.get(upstream.spec.name)
            and Spares.wanted(upstream)
        ):
            spare = self._spares.lend(upstream)
        chosen = spare or upstream
        self._placed[chosen] = self._placed.get(chosen, 0) + 1
        try:
            yield chosen
        finally:
            self._placed[chosen] -= 1
            if not self._placed[chosen]:
                del self._placed[chosen]
            if spare is not None:
                self._spares.give_back(spare)

    @contextlib.contextmanager
    def on_behalf(self, upstream: Upstream, current: Call, request: Any) -> Iterator[None]:
        """While an upstream call runs: its callbacks find `current` (the in-flight list and _CALLER),
        and backendAuth sends the credentials of `request`'s caller (RELAY_CALLER)."""
        inflight = self._inflight.setdefault(upstream, [])
        inflight.append(current)
        token, who = _CALLER.set(current), RELAY_CALLER.set(request)
        try:
            yield
        finally:
            RELAY_CALLER.reset(who)
            _CALLER.reset(token)
            inflight.remove(current)
            if not inflight:
                del self._inflight[upstream]

    def caller_for(self, upstream: Upstream) -> Call | str:
        """The downstream call behind a message an upstream sent, or why none can be told.

        Streamable HTTP says it exactly: a message on a request's own response stream reaches us in the
        context of the call that sent the request (the SDK carries context variables that far); one on the
        standalone stream belongs to no call, unless the connection is a client session's own, where its
        one open call is taken (the SDK's `list_roots()` asks there). stdio and SSE say nothing of requests:
        a message is taken as the one open call's, and with several open it cannot be told (spares keep
        sessionless callers' calls one per connection, federation/spares.py). What a connection sends as
        it starts, before any call was sent on it, is no call's.
        """
        inflight = self._inflight.get(upstream, [])
        current = _CALLER.get()
        if current is not None and any(c is current for c in inflight):
            return current
        transport = upstream.spec.transport
        if transport == "mcp" and upstream not in self._owners:
            return "it was sent outside any request's response stream (shared connection), so it belongs to no call"
        if len(inflight) == 1:
            return inflight[0]
        if not inflight:
            return "no call is open on that connection"
        what = f"its {transport} connection" if transport in UNRELATED_TRANSPORTS else "that connection"
        if upstream not in self._owners:
            what += " (shared: `sharing: shared`, or every spare in use)"
        return f"{len(inflight)} calls are open on {what}, whose messages do not say which request they belong to"


async def set_level(upstream: Upstream, level: Any) -> None:
    """logging/setLevel on a connection whose target logs (a down one is skipped)."""
    upstream.log_level = level  # and for its next connection, should it reconnect
    with contextlib.suppress(MCPError):
        session = await upstream.session()
        if session.server_capabilities and session.server_capabilities.logging is not None:
            await upstream.request("logging/setLevel", lambda s: s.set_logging_level(level))


async def _connect_quietly(upstream: Upstream) -> None:
    try:
        await upstream.session()
    except MCPError as exc:
        logger.error("%s", exc.message)
