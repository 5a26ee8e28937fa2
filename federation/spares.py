"""Spare connections to a target that sessionless callers share, each lent to one call at a time.

2026-07-28 clients have no session, so their calls go through one upstream session per target. A
streamable-HTTP target says which request each message it sends belongs to (the message rides that
request's response stream), but a stdio or SSE target cannot: everything comes back on one pipe or
event stream. With two calls open on such a connection, a sampling request or a log message could be
either's. So while a call is open on the shared connection of a stdio or SSE target (`sharing: session`,
handshake era), another one is served on a spare connection of its own (another process for stdio),
and what comes back on each connection belongs to its one call.

Spares are kept for reuse a while (`idle_seconds`), at most `limit` per target at once; past that a call
shares the target's connection, where anything the target asks that cannot be attributed is refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from protocols.mcp.upstream import Upstream

logger = logging.getLogger("agentplex.federation")

# Transports whose messages say nothing of the request they belong to.
UNRELATED_TRANSPORTS = frozenset({"stdio", "sse"})


class Spares:
    """Per target: idle spare connections, and how many are lent. Runs in the federation's task group."""

    limit = 8  # spares of one target lent at once
    idle_seconds = 60.0  # an idle spare is closed after this long

    def __init__(self, make: Callable[[Upstream], Upstream]) -> None:
        self._make = make  # a new connection to the shared upstream's target, attached to `tg`
        self.tg: anyio.abc.TaskGroup | None = None
        self._idle: dict[str, list[tuple[Upstream, float]]] = {}
        self._lent: dict[str, int] = {}
        self._open: dict[Upstream, None] = {}  # every spare not closed yet
        self._ended_restarts: dict[str, int] = {}

    @staticmethod
    def wanted(shared: Upstream) -> bool:
        """Whether a call on `shared` needs a connection of its own when another call is open on it."""
        spec = shared.spec
        version = shared.protocol_version
        handshake = version in HANDSHAKE_PROTOCOL_VERSIONS if version is not None else spec.era == "handshake"
        return spec.transport in UNRELATED_TRANSPORTS and spec.sharing == "session" and handshake

    def lend(self, shared: Upstream) -> Upstream | None:
        """An idle spare of `shared`'s target, or a new one (connected on first use); None at the limit."""
        if self.tg is None:
            return None
        name = shared.spec.name
        idle = self._idle.get(name, [])
        spare: Upstream | None = None
        while idle and spare is None:
            candidate, _ = idle.pop()
            if candidate.connected:
                spare = candidate
            else:
                self._retire(candidate)
        if spare is None:
            if self._lent.get(name, 0) >= self.limit:
                return None
            spare = self._make(shared).attach(self.tg)
            self._open[spare] = None
        self._lent[name] = self._lent.get(name, 0) + 1
        return spare

    def give_back(self, spare: Upstream) -> None:
        name = spare.spec.name
        self._lent[name] = max(0, self._lent.get(name, 0) - 1)
        if self.tg is None or not spare.connected:
            self._retire(spare)
            return
        stamp = time.monotonic()
        self._idle.setdefault(name, []).append((spare, stamp))
        self.tg.start_soon(self._expire, spare, stamp)

    async def _expire(self, spare: Upstream, stamp: float) -> None:
        await anyio.sleep(self.idle_seconds)
        idle = self._idle.get(spare.spec.name, [])
        if (spare, stamp) in idle:  # idle ever since
            idle.remove((spare, stamp))
            self._retire(spare)

    def _retire(self, spare: Upstream) -> None:
        if self._open.pop(spare, "gone") is not None:
            return
        name = spare.spec.name
        self._ended_restarts[name] = self._ended_restarts.get(name, 0) + spare.restarts
        if self.tg is not None:
            self.tg.start_soon(spare.close)

    def restarts(self) -> dict[str, int]:
        """Reconnections of spares per target (their first connections are no restarts)."""
        counts = dict(self._ended_restarts)
        for spare in self._open:
            counts[spare.spec.name] = counts.get(spare.spec.name, 0) + spare.restarts
        return counts

    def count(self, target: str) -> int:
        """Spares of `target` open now, lent or idle."""
        return sum(1 for spare in self._open if spare.spec.name == target)

    async def close(self) -> None:
        """Close every spare (the federation is stopping)."""
        spares, self._open, self._idle = list(self._open), {}, {}
        self.tg = None
        for spare in spares:
            await spare.close()
