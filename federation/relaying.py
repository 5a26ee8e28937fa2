"""The raw relay's side of the virtual server: `tools/call` as JSON-RPC dicts, without the SDK's
per-message work (protocols/mcp/relay.py), answering as the SDK path answers (tests/federation/test_differential.py).

A mixin of `Federation` (federation/server.py): the relay shares its policy checks, connection placement,
observation and catalogs; only the way the message travels differs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types import methods
from mcp_types.version import LATEST_HANDSHAKE_VERSION, LATEST_MODERN_VERSION

from federation.bridge import ANSWER_WAIT, sealed
from federation.calls import ASKED, OBSERVED, RESERVED_META, checked_answer, dump, is_modern_version, parked_answer
from federation.guard import Access
from federation.observer import Message as Observed
from federation.pool import Call
from protocols.mcp.errors import UpstreamError
from protocols.mcp.relay import Downstream, Message, ModernDownstream, relay_id
from protocols.mcp.upstream import Upstream

logger = logging.getLogger("agentplex.federation")

_RELAYED_REQUESTS = frozenset({"sampling/createMessage", "elicitation/create", "roots/list"})



def _version_of(scope: Any) -> str:
    """The protocol version a handshake-era HTTP request says it speaks."""
    for key, value in scope["headers"] if isinstance(scope, dict) else ():
        if key == b"mcp-protocol-version":
            return value.decode("latin-1")
    return LATEST_HANDSHAKE_VERSION


def _in_era(response: Message, version: str) -> Message:
    """A 2026-07-28 target's result in a handshake-era client's version, as the SDK serializes a handler's:
    the fields of that version's schema only (no `resultType`)."""
    result = response.get("result")
    if not isinstance(result, dict):
        return response
    try:
        return {**response, "result": methods.serialize_server_result("tools/call", version, result)}
    except (KeyError, ValueError):  # an unknown version, or pydantic's ValidationError
        logger.exception("target's tools/call result is not valid at %s", version)
        error = {"code": types.INTERNAL_ERROR, "message": "Handler returned an invalid result"}
        return {"jsonrpc": "2.0", "id": response.get("id"), "error": error}


class Relaying:
    """`Federation`'s relay handlers (see the module's docstring)."""

    async def relay_tool_call(self, request: Message, downstream: Downstream) -> Message | None:
        """A handshake-era tools/call over the raw relay (protocols/mcp/relay.py).

        Returns the JSON-RPC response for the downstream, or None (before anything was sent) when
        the call is not plain enough, so the SDK path serves it with the same result.
        """
        entry = self.catalogs["tool"].get(request["params"].get("name"))
        if entry is None:
            return None  # unknown here: the SDK path refreshes the catalog and answers precisely
        upstream = self._upstream_for_session(entry.target, downstream.session_id)
        if upstream is None or not (upstream.can_relay or upstream.can_relay_modern):
            return None
        return await self._observed_relay(request, downstream, entry, upstream)

    def plan_modern_call(self, request: Message) -> Callable[[ModernDownstream], Awaitable[None]] | None:
        """A 2026-07-28 tools/call over the raw relay, into a streamable-HTTP target of either era or a
        handshake-era stdio target: how to run it, or None when the SDK path must serve it (the same
        result, by the differential suite).

        The SDK path bridges eras by parking the upstream call (federation/bridge.py); so does this one,
        the moment the target asks the client something: the question goes down as this POST's answer.
        """
        entry = self.catalogs["tool"].get(request["params"]["name"])
        if entry is None:
            return None
        upstream = self.pool.of(entry.target, None)
        if not upstream.can_relay and not upstream.can_relay_modern:
            return None

        async def run(downstream: ModernDownstream) -> None:
            response: Message | None = None
            with downstream.call:
                response = await self._observed_relay(request, downstream, entry, upstream)
            parked = downstream.parked
            if parked is None:
                if response is not None:
                    result = response.get("result")
                    if isinstance(result, dict) and result.get("resultType") == "input_required":
                        # a 2026-07-28 target's question, passed through: its state sealed as the SDK path seals it
                        result = await sealed(self._boundary, "tools/call", request["params"], downstream.scope, result)
                        response = {**response, "result": result}
                    await downstream.finish(self._modern_response(response))
                return
            try:  # the client's retry collects what the call came to
                if response is not None:
                    error = response.get("error")
                    if error is not None:
                        await parked.finish(error=MCPError(error["code"], error["message"], error.get("data")))
                    else:
                        await parked.finish({"resultType": "complete", **response["result"]})  # as typed results dump
            finally:
                await self._parked.release(parked)

        return run

    def _modern_response(self, response: Message) -> Message:
        """A relayed call's response as the SDK writes a 2026-07-28 result: its schema's fields, a result
        type, the server's info (runner.py `_serialize`)."""
        result = response.get("result")
        if result is None:
            return response
        try:
            typed = {"resultType": "complete", **result}  # as a typed result dumps
            shaped = methods.serialize_server_result("tools/call", LATEST_MODERN_VERSION, typed)
        except ValueError:  # pydantic's ValidationError
            logger.exception("target's tools/call result is not valid at %s", LATEST_MODERN_VERSION)
            error = {"code": types.INTERNAL_ERROR, "message": "Handler returned an invalid result"}
            return {"jsonrpc": "2.0", "id": response["id"], "error": error}
        meta = shaped.get("_meta")
        if meta is None:
            shaped["_meta"] = {types.SERVER_INFO_META_KEY: self._server_info}
        elif isinstance(meta, dict) and meta.get(types.SERVER_INFO_META_KEY) is None:
            shaped["_meta"] = {**meta, types.SERVER_INFO_META_KEY: self._server_info}
        return {**response, "result": shaped}

    async def _observed_relay(
        self, request: Message, downstream: Downstream | ModernDownstream, entry: Any, upstream: Upstream
    ) -> Message:
        """`_relay`, observed as the SDK path's middleware observes a call."""
        observed = Observed("tools/call")
        token = OBSERVED.set(observed)
        start = time.perf_counter()
        try:
            response = await self._relay(request, downstream, entry, upstream)
        finally:
            OBSERVED.reset(token)
        error = response.get("error")
        if error is not None:
            observed.failed(error.get("code", types.INTERNAL_ERROR))
        elif isinstance(result := response.get("result"), dict) and result.get("isError") is True:
            observed.tool_failed()
        observed.seconds = time.perf_counter() - start
        self._observe(downstream.scope, observed)
        return response

    async def _relay(
        self, request: Message, downstream: Downstream | ModernDownstream, entry: Any, upstream: Upstream
    ) -> Message:
        params = request["params"]
        reply: Message = {"jsonrpc": "2.0", "id": request["id"]}
        access = Access("tools/call", "tool", entry.item.name, entry.target, entry.original)
        try:
            await self._check(downstream.scope, access)
        except MCPError as exc:
            return {**reply, "error": exc.error.model_dump(mode="json", exclude_none=True)}
        rid = relay_id()
        out = {**params, "name": entry.original}
        meta = params.get("_meta")
        if isinstance(downstream, ModernDownstream) and isinstance(meta, dict):
            # The 2026-07-28 envelope is the client's to the gateway (a handshake-era session refuses it; a
            # 2026-07-28 one gets the gateway's own, `Upstream.relay`), but for its log-level opt-in.
            kept = (types.LOG_LEVEL_META_KEY,) if is_modern_version(upstream.protocol_version) else ()
            meta = {k: v for k, v in meta.items() if not k.startswith(RESERVED_META) or k in kept}
            out.pop("_meta")
            if meta:
                out["_meta"] = meta
        elif isinstance(downstream, Downstream) and is_modern_version(upstream.protocol_version):
            # A 2026-07-28 target logs only for requests that opt in: at the level the client's session set.
            level = self.pool.levels.get(self.downstreams.connection(downstream.session_id), "debug")
            meta = {**(meta if isinstance(meta, dict) else {}), types.LOG_LEVEL_META_KEY: level}
            out["_meta"] = meta
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        if token is not None:
            out["_meta"] = {**meta, "progressToken": rid}

        async def on_message(message: Message) -> Message | None:
            method = message.get("method")
            if "id" in message and method is not None:  # a server-to-client request
                if method not in _RELAYED_REQUESTS:
                    return {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "Method not found"}}
                if isinstance(downstream, ModernDownstream):
                    return await self._ask_modern(downstream, message)
                return await downstream.request(message)
            p = message.get("params") or {}
            if method != "notifications/progress":
                await self._relayed_notification(placing[0], message)
            elif token is not None and p.get("progressToken") == rid:
                await downstream.notify({**message, "params": {**p, "progressToken": token}})
            return None

        placing = [upstream]  # the connection the call went on (a spare, perhaps): what it sends is about it
        current = Call(None, relay=downstream)  # for what the upstream sends outside this call's own stream
        if upstream is not self.upstreams[entry.target]:
            upstream.caller = downstream.scope
        try:
            with (
                self.pool.placement(upstream, "tools/call") as placed,
                self.observer.upstream(downstream.scope, "tools/call", entry.target, entry.item.name),
            ):
                if placed is not upstream:  # a spare (stdio): what it sends as it starts is no call's
                    placing[0] = placed
                    await placed.session()
                    if not placed.can_relay:
                        raise UpstreamError(entry.target, "a spare connection could not take the call")
                with self.pool.on_behalf(placed, current, downstream.scope):
                    response = await placed.relay(
                        {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": out}, on_message
                    )
                    if isinstance(downstream, Downstream) and is_modern_version(placed.protocol_version):
                        response = await self._resolve_input(downstream, placed, out, response, on_message)
                        response = _in_era(response, _version_of(downstream.scope))
        except MCPError as exc:
            return {**reply, "error": exc.error.model_dump(mode="json", exclude_none=True)}
        if "error" in response:
            error = dict(response["error"])
            error["message"] = f"{error.get('message')} (from target '{entry.target}')"
            return {**reply, "error": error}
        result = response.get("result")
        if self.naming.prefixed and isinstance(result, dict) and isinstance(result.get("content"), list):
            result = {**result, "content": [self._expose_wire_block(entry.target, b) for b in result["content"]]}
        return {**reply, "result": result}

    async def _resolve_input(
        self, downstream: Downstream, upstream: Upstream, out: Message, response: Message, on_message: Any
    ) -> Message:
        """A 2026-07-28 target's InputRequiredResult for a handshake-era client, resolved as the SDK path
        resolves it (`_interactive`): each question asked down the POST's stream, the call retried with the
        answers and the target's state, for at most 10 rounds."""
        target = upstream.spec.name
        for _ in range(10):
            result = response.get("result")
            if not isinstance(result, dict) or result.get("resultType") != "input_required":
                return response
            answers: dict[str, Any] = {}
            for key, asked in (result.get("inputRequests") or {}).items():
                answer = await downstream.request({"jsonrpc": "2.0", "id": None, **asked})
                error = answer.get("error")
                if isinstance(error, dict):
                    message = f"{error.get('message')} (from target '{target}')"
                    raise MCPError(error.get("code", types.INTERNAL_ERROR), message, error.get("data"))
                answers[key] = answer.get("result")
            params = {**out, "inputResponses": answers, "requestState": result.get("requestState")}
            response = await upstream.relay({"jsonrpc": "2.0", "id": relay_id(), "method": "tools/call", "params": params}, on_message)
        if (result := response.get("result")) is not None and result.get("resultType") == "input_required":
            message = f"target '{target}' kept asking for input after 10 rounds (from target '{target}')"
            raise MCPError(types.INTERNAL_ERROR, message)
        return response

    async def _ask_modern(self, downstream: ModernDownstream, message: Message) -> Message:
        """A target's question during a relayed 2026-07-28 call, asked as the SDK path asks it: parked. The
        first one goes down as this POST's answer (an InputRequiredResult); later ones to the client's retries."""
        kind, result_type, what = ASKED[message["method"]]
        reply: Message = {"jsonrpc": "2.0", "id": message.get("id")}
        try:
            request = kind.model_validate({"method": message["method"], "params": message.get("params")})
        except ValueError:
            return {**reply, "error": {"code": types.INVALID_PARAMS, "message": f"malformed {what} request"}}
        if downstream.parked is not None:
            answer = await parked_answer(downstream.parked, request, result_type, what)
        else:
            parked = self._parked.adopt(downstream.call)
            downstream.call.deadline = anyio.current_time() + ANSWER_WAIT * 4  # as a parked call's
            key = parked.question()
            asked = types.InputRequiredResult(input_requests={key: request}, request_state=parked.id)
            params = downstream.request["params"]
            result = await sealed(self._boundary, "tools/call", params, downstream.scope, dump(asked))
            await downstream.detach(self._modern_response({**reply, "id": downstream.request["id"], "result": result}), parked)
            answer = checked_answer(await parked.answer_to(key), result_type, what)
        if isinstance(answer, types.ErrorData):
            return {**reply, "error": dump(answer)}
        return {**reply, "result": dump(answer)}

    async def _relayed_notification(self, upstream: Upstream, message: Message) -> None:
        """A notification on a relayed call's stream, handled as the SDK path hands it to us: logging to
        the caller, list changes and resource updates to the catalogs and clients; the unknown dropped."""
        method = str(message.get("method"))
        version = upstream.protocol_version or LATEST_HANDSHAKE_VERSION  # the relay runs on handshake-era sessions
        try:
            notification = methods.parse_server_notification(method, version, message.get("params"))
        except (KeyError, ValueError, RuntimeError):  # pydantic's ValidationError is a ValueError
            logger.debug("target %s: dropped %r sent during a relayed call", upstream.spec.name, method)
            return
        if isinstance(notification, types.LoggingMessageNotification):
            await self.on_logging(upstream, notification.params)
        await self.on_notification(upstream, notification)

    def _expose_wire_block(self, target: str, block: Any) -> Any:
        """`_expose_block` for the relay's JSON content blocks."""
        if not isinstance(block, dict):
            return block
        if block.get("type") == "resource_link" and isinstance(block.get("uri"), str):
            return {**block, "uri": self.naming.uri(target, block["uri"])}
        inner = block.get("resource")
        if block.get("type") == "resource" and isinstance(inner, dict) and isinstance(inner.get("uri"), str):
            return {**block, "resource": {**inner, "uri": self.naming.uri(target, inner["uri"])}}
        return block
