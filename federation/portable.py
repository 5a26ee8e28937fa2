"""Federation's side of portable sessions (protocols/mcp/portable.py): which upstream sessions travel in a client
session's sealed id, opened with the session, and taken up again by a replica that resumes it.

Streamable-HTTP targets of `sharing: session` travel: their sessions are opened eagerly when the client session
opens (its id is handed out at initialize, so whatever it names must exist by then) and left open when the client
session ends here (another replica may carry on with them; the target's own idle expiry ends them). stdio and
legacy SSE connections cannot travel: a resumed session opens its own, as on first use.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp.server import ServerRequestContext
from mcp.shared.exceptions import MCPError

from federation.calls import scope_of
from federation.pool import UpstreamPool
from protocols import internals
from protocols.mcp.portable import SESSION_HANDOFF
from protocols.mcp.upstream import ResumedSession, Upstream

logger = logging.getLogger("agentplex.federation")


@dataclass(eq=False)
class Handoff:
    """The upstream sessions a client session takes over as it opens."""

    upstreams: dict[str, Upstream] = field(default_factory=dict)
    taken: bool = False


class PortableUpstreams:
    """The `SessionCarrier` of one federation's targets."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        specs = sorted(
            (s.name, s.transport, s.url or s.command, s.sharing) for s in (u.spec for u in pool.shared.values())
        )
        self._fingerprint = hashlib.sha256(json.dumps(specs).encode()).hexdigest()[:32]

    def fingerprint(self) -> str:
        return self._fingerprint

    def _travels(self, target: str) -> bool:
        spec = self.pool.shared[target].spec
        return spec.transport == "mcp" and spec.sharing == "session" and spec.era != "modern"

    async def opening(self, scope: Any) -> Handoff:
        """Open the session's upstream sessions now (concurrently); a target that is down (its shared
        connection is) or fails opens later, on use, and does not travel."""
        handoff = Handoff()
        for target, shared in self.pool.shared.items():
            if self._travels(target) and self.pool.tg is not None and shared.connected:
                upstream = handoff.upstreams[target] = self.pool.fresh(target)
                upstream.caller = scope
                upstream.keep_remote_session = True
        async with anyio.create_task_group() as tg:
            for upstream in handoff.upstreams.values():
                tg.start_soon(_connect_quietly, upstream)
        return handoff

    def sealed(self, handoff: Handoff) -> list[Any]:
        """[target, upstream session id, endpoint URL, protocol version] of each upstream session opened."""
        return [
            [target, up.session_id, up.spec.url, up.protocol_version]
            for target, up in handoff.upstreams.items()
            if up.session_id is not None and up.protocol_version is not None
        ]

    async def resuming(self, sealed: list[Any], scope: Any) -> Handoff | None:
        """The upstream sessions a sealed id names, to take up on first use; None if one of them names a target
        that is not there (or at another URL) any more."""
        handoff = Handoff()
        for entry in sealed:
            if not (isinstance(entry, list) and len(entry) == 4 and all(isinstance(x, str) for x in entry)):
                return None
            target, session_id, url, version = entry
            if target not in self.pool.shared or not self._travels(target) or self.pool.shared[target].spec.url != url:
                return None
            try:  # the target's initialize result, as this replica's own connection to it got it
                session = await self.pool.shared[target].session()
            except MCPError as exc:
                logger.info("resuming a session: target %s unavailable (%s); it gets a new session", target, exc)
                continue
            result = session.initialize_result
            if result is None:
                continue
            upstream = handoff.upstreams[target] = self.pool.fresh(target)
            upstream.caller = scope
            upstream.resume(ResumedSession(session_id, result.model_copy(update={"protocol_version": version})))
        return handoff

    async def dropped(self, handoff: Handoff) -> None:
        if handoff.taken:
            return
        for upstream in handoff.upstreams.values():
            await upstream.close()

    def take(self, ctx: ServerRequestContext[Any]) -> None:
        """At initialize: the client session takes over the upstreams its opening request carried."""
        scope = scope_of(ctx)
        handoff = scope.get(SESSION_HANDOFF) if isinstance(scope, dict) else None
        connection = internals.connection_of(ctx.session)
        if not isinstance(handoff, Handoff) or handoff.taken or connection is None:
            return
        handoff.taken = True
        self.pool.adopt(connection, handoff.upstreams)


async def _connect_quietly(upstream: Upstream) -> None:
    try:
        await upstream.session()
    except MCPError as exc:
        logger.info("target %s: no session opened with the client's (%s); it opens on use", upstream.spec.name, exc)
