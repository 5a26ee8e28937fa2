"""What upstreams send back, routed to the client it belongs to: server-to-client requests (sampling,
elicitation, roots), log messages, list changes and resource updates.

A mixin of `Federation` (federation/server.py); `UpstreamPool.caller_for` says which call a message is about.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError

from federation.bridge import ANSWER_WAIT
from federation.calls import RESULT_TYPES, ask_client, is_modern, parked_answer, wire
from federation.catalog import Kind
from federation.lists import fingerprint
from protocols.mcp.list_cache import CHANGED
from protocols.mcp.relay import ModernDownstream
from protocols.mcp.upstream import Upstream

logger = logging.getLogger("agentplex.federation")


_LIST_CHANGED: dict[str, type[Any]] = {
    "notifications/tools/list_changed": types.ToolListChangedNotification,
    "notifications/prompts/list_changed": types.PromptListChangedNotification,
    "notifications/resources/list_changed": types.ResourceListChangedNotification,
}


class EventRouter:
    """`Federation`'s `UpstreamEvents` (see the module's docstring)."""

    async def _ask_downstream(self, upstream: Upstream, request: Any, result_type: Any, what: str) -> Any:
        target = upstream.spec.name
        call = self.pool.caller_for(upstream)
        if isinstance(call, str) and (owner := self.pool.owner(upstream)) is not None:
            return await self._ask_session(owner, request, target, what)
        if isinstance(call, str):
            if request.method == "roots/list":  # asked for no call (at start-up, say): the gateway's own roots
                logger.debug("target %s asked for roots outside any call (%s): answered with none", target, call)
                return types.ListRootsResult(roots=[])
            return types.ErrorData(
                code=types.INVALID_REQUEST,
                message=f"agentplex cannot tell which client target '{target}' is asking for {what}: {call}",
            )
        if call.parked is not None:  # a 2026-07-28 client: ask through InputRequiredResult and its retry
            return await parked_answer(call.parked, request, result_type, what)
        if call.relay is not None:  # a relayed call: down the same POST's stream (2026-07-28: parked)
            if isinstance(call.relay, ModernDownstream):
                answer = await self._ask_modern(call.relay, wire(request))
            else:
                answer = await call.relay.request(wire(request))
            if "error" in answer:
                return types.ErrorData.model_validate(answer["error"])
            return RESULT_TYPES[request.method].model_validate(answer.get("result") or {})
        if call.ctx is None:  # an operator's call (the admin playground): nobody to ask
            return types.ErrorData(
                code=types.INVALID_REQUEST, message=f"target '{target}' asked for {what}, but this call has no client"
            )
        if is_modern(call.ctx):
            return types.ErrorData(
                code=types.INVALID_REQUEST,
                message=f"target '{target}' asked for {what}, but the client's protocol era has no back-channel",
            )
        try:
            return await ask_client(call.ctx, request)
        except MCPError as exc:
            return exc.error

    async def _ask_session(self, connection: Any, request: Any, target: str, what: str) -> Any:
        """A client session's own upstream asks outside any one call (as it starts, or with several of the
        session's calls open): its client is asked on the session's own channel, not tied to a request."""
        message = wire(request)
        try:
            with anyio.fail_after(ANSWER_WAIT):
                result = await connection.outbound.send_raw_request(message["method"], message.get("params"))
            return RESULT_TYPES[request.method].model_validate(result)
        except MCPError as exc:
            return exc.error
        except TimeoutError:
            return types.ErrorData(code=types.INTERNAL_ERROR, message=f"the client did not answer {what} in time")
        except Exception as exc:  # no channel to the client, or an answer of the wrong kind
            logger.info("could not ask the client for %s for target %s: %s", what, target, exc)
            problem = f"target '{target}' asked for {what}, but the client could not be asked"
            return types.ErrorData(code=types.INVALID_REQUEST, message=problem)

    async def on_sampling(self, upstream: Upstream, params: types.CreateMessageRequestParams) -> Any:
        return await self._ask_downstream(
            upstream,
            types.CreateMessageRequest(params=params),
            types.CreateMessageResult | types.CreateMessageResultWithTools,
            "sampling",
        )

    async def on_elicitation(self, upstream: Upstream, params: types.ElicitRequestParams) -> Any:
        return await self._ask_downstream(
            upstream, types.ElicitRequest(params=params), types.ElicitResult, "elicitation"
        )

    async def on_list_roots(self, upstream: Upstream) -> Any:
        return await self._ask_downstream(upstream, types.ListRootsRequest(), types.ListRootsResult, "roots")

    async def on_logging(self, upstream: Upstream, params: types.LoggingMessageNotificationParams) -> None:
        """A log message goes to the call it belongs to (`UpstreamPool.caller_for`); else to the client session that owns
        the upstream, if one does; else to nobody."""
        call = self.pool.caller_for(upstream)
        if isinstance(call, str) and (owner := self.pool.owner(upstream)) is not None:
            # A client session's own upstream: its client's, though not any one request's.
            with contextlib.suppress(Exception):
                message = wire(types.LoggingMessageNotification(params=params))
                await owner.outbound.notify(message["method"], message.get("params"))
            return
        if isinstance(call, str):
            logger.debug("log message from target %s for no call (%s): %s", upstream.spec.name, call, params.data)
            return
        with contextlib.suppress(Exception):
            if call.relay is not None:
                await call.relay.notify(wire(types.LoggingMessageNotification(params=params)))
            elif call.ctx is not None:
                await call.ctx.session.send_log_message(
                    params.level, params.data, params.logger, related_request_id=call.ctx.request_id
                )

    async def on_notification(self, upstream: Upstream, message: Any, *, elsewhere: bool = False) -> None:
        """List changes refresh the catalog (and tell clients if what they see changed); resource
        updates go to the clients subscribed to that resource. A client session's own upstream
        speaks to that client only. Work is done off the upstream's reader. `elsewhere`: another
        replica's connection said it (lists shared through Redis), so there is nobody to tell."""
        target, client = upstream.spec.name, self.pool.owner(upstream)
        # Who sees this upstream: its own client session, or (shared) everyone who uses the shared one,
        # which for a `sharing: session` target is the client sessions that list it there (`pool.listing`).
        if client is not None:
            clients: list[Any] | None = [client]
        elif self._shared_for_all(upstream):
            clients = None
        else:
            clients = [c for c in self.downstreams.clients() if self.pool.lists_shared(target, c)]
        root = getattr(message, "root", message)
        method = str(getattr(root, "method", ""))
        upstream.notified(method)  # its cached lists, if they changed
        if upstream.shared_lists is not None and not elsewhere and method in CHANGED and self._tg is not None:
            self._tg.start_soon(upstream.shared_lists.changed, method)
        if isinstance(root, types.ResourceUpdatedNotification):
            exposed = self.naming.uri(target, str(root.params.uri))
            if self._tg is not None:
                self._tg.start_soon(self.downstreams.resource_updated, exposed, clients, client is None)
            return
        kinds: tuple[Kind, ...] = ()
        if isinstance(root, types.ToolListChangedNotification):
            kinds = ("tool",)
        elif isinstance(root, types.PromptListChangedNotification):
            kinds = ("prompt",)
        elif isinstance(root, types.ResourceListChangedNotification):
            kinds = ("resource", "template")
        for kind in kinds:
            self.lists.forget(kind, target)
            if self._tg is not None:
                self._tg.start_soon(self._list_changed, kind, client, clients)

    async def changed_elsewhere(self, target: str, notification: str) -> None:
        """Another replica's connection to `target` said its lists changed: as if this replica's shared
        connection had said so (its lists, the catalog, the clients who list through it)."""
        kind = _LIST_CHANGED.get(notification)
        if kind is not None and target in self.pool.shared:
            await self.on_notification(self.pool.shared[target], kind(), elsewhere=True)

    def _shared_for_all(self, upstream: Upstream) -> bool:
        return upstream.spec.sharing == "shared" or self.settings.stateless

    async def policy_changed(self) -> None:
        """The guard was replaced (a config reload): every client is told its lists may have changed."""
        for kind in ("tool", "prompt", "resource"):
            await self.downstreams.list_changed(kind, None, True)

    async def _list_changed(self, kind: Kind, client: Any, clients: list[Any] | None) -> None:
        before = fingerprint(self.catalogs[kind])
        try:
            catalog = await self.refresh(kind, client=client)
        except MCPError as exc:
            logger.warning("could not refresh %ss after a list change: %s", kind, exc.message)
            return
        if fingerprint(catalog) != before:
            await self.downstreams.list_changed("resource" if kind == "template" else kind, clients, client is None)
