"""Per HTTP request: time it, count it, log it, trace it. The message layer adds what it learns to the request's
`Exchange` (in `scope["state"]`), so the access line can say which MCP method, tool or agent it was."""

from __future__ import annotations

import contextlib
import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from federation.observer import NOTHING
from federation.observer import Message as McpMessage
from gateway.observability import access_log, tracing
from gateway.observability.metrics import Metrics
from gateway.policies.http import RESPONSE_VARS, header

EXCHANGE = "agentplex.exchange"


@dataclass(slots=True)
class LlmCall:
    """What an AI route learnt of one model call, named as OpenTelemetry's gen_ai conventions name it."""

    provider: str  # gen_ai.provider.name: openai | anthropic
    model: str  # the config's model entry (bounded: a metric label)
    request_model: str  # gen_ai.request.model: what the caller asked for
    response_model: str = ""  # gen_ai.response.model: what the provider says answered
    input_tokens: int | None = None
    output_tokens: int | None = None
    first_token: float | None = None  # seconds from sending the request to the first streamed token

    def attributes(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.request_model,
        }
        if self.response_model:
            out["gen_ai.response.model"] = self.response_model
        if self.input_tokens is not None:
            out["gen_ai.usage.input_tokens"] = self.input_tokens
        if self.output_tokens is not None:
            out["gen_ai.usage.output_tokens"] = self.output_tokens
        return out


@dataclass(slots=True)
class Exchange:
    route: str
    status: int = 0
    session: str = ""  # Mcp-Session-Id (of the request, or the one an initialize answer assigned)
    mcp: McpMessage | None = None
    a2a: tuple[str, str, str] | None = None  # agent, method, outcome
    llm: LlmCall | None = None  # an AI route's model call
    span: Any = None  # the request's trace span, when tracing is on


def _response_vars(start: Message) -> dict[str, Any]:
    """CEL's `response`: the answer's status and headers (names lower case; repeated ones joined by commas)."""
    headers: dict[str, str] = {}
    for key, value in start.get("headers", ()):
        name, text = key.decode("latin-1").lower(), value.decode("latin-1")
        headers[name] = f"{headers[name]},{text}" if name in headers else text
    return {"code": start["status"], "headers": headers}


def exchange_of(scope: Any) -> Exchange | None:
    state = scope.get("state") if isinstance(scope, dict) else None
    return state.get(EXCHANGE) if isinstance(state, dict) else None


def access_rules(config: Any) -> access_log.AccessRules | None:
    """The config's `frontendPolicies.accessLog` (or its alias `logging`), ready to apply; None without."""
    policy = config.frontendPolicies.access_log if config.frontendPolicies is not None else None
    if policy is None or not (policy.filter or policy.add or policy.remove):
        return None
    return access_log.AccessRules(policy.filter, dict(policy.add), list(policy.remove))


class Observability:
    """What one config records into: the process's metrics (None: no stats address), its log format and
    its tracer (None: tracing is off)."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        log_format: str = "text",
        tracer: Any = None,
        rules: access_log.AccessRules | None = None,
    ) -> None:
        self.metrics = metrics
        self.json = log_format == "json"
        self.tracer = tracer
        self.rules = rules  # frontendPolicies.accessLog

    async def serve(self, route: str, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        metrics, log, tracer = self.metrics, access_log.logger.isEnabledFor(logging.INFO), self.tracer
        if metrics is None and not log and tracer is None:
            await app(scope, receive, send)
            return
        state = scope.get("state")
        if not isinstance(state, dict):
            state = scope["state"] = {}
        exchange = state[EXCHANGE] = Exchange(route)
        rules_read_response = log and self.rules is not None and self.rules.reads_response
        if tracer is not None:
            exchange.span = tracing.server_span(tracer, route, scope)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                if rules_read_response:
                    state[RESPONSE_VARS] = _response_vars(message)
                if log:
                    for key, value in message.get("headers", ()):
                        if key.lower() == b"mcp-session-id":
                            exchange.session = value.decode("latin-1")
            await send(message)

        start = time.perf_counter()
        try:
            await app(scope, receive, sending)
        except BaseException:
            if exchange.status == 0:
                exchange.status = 500
            raise
        finally:
            seconds = time.perf_counter() - start
            if exchange.span is not None:
                if exchange.llm is not None:
                    exchange.span.set_attributes(exchange.llm.attributes())
                tracing.end_server_span(exchange.span, exchange.status, exchange.mcp)
            if metrics is not None:
                metrics.request(route, scope["method"], exchange.status, seconds)
            if log:
                fields = self._fields(scope, exchange, seconds)
                if self.rules is not None:
                    if rules_read_response and RESPONSE_VARS not in state:
                        state[RESPONSE_VARS] = {"code": exchange.status, "headers": {}}
                    fields = self.rules.apply(scope, exchange.mcp, fields)
                if fields is not None:
                    access_log.write(fields, self.json)

    def _fields(self, scope: Scope, exchange: Exchange, seconds: float) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "route": exchange.route,
            "method": scope["method"],
            "path": scope["path"],
            "status": exchange.status,
            "duration_ms": round(seconds * 1000, 3),
            "caller": access_log.caller(scope),
        }
        session = exchange.session or header(scope, "mcp-session-id")
        mcp = exchange.mcp
        if mcp is not None:
            fields.update({"mcp.method": mcp.method, "mcp.target": mcp.target, "mcp.name": mcp.name})
            fields["mcp.outcome"] = mcp.outcome
            if mcp.code is not None:
                fields["mcp.error_code"] = mcp.code
        if session:
            fields["mcp.session"] = session
        if exchange.a2a is not None:
            fields["a2a.agent"], fields["a2a.method"], fields["a2a.outcome"] = exchange.a2a
        if exchange.llm is not None:
            fields.update(exchange.llm.attributes())
            del fields["gen_ai.operation.name"]
            if exchange.llm.first_token is not None:
                fields["gen_ai.time_to_first_token_ms"] = round(exchange.llm.first_token * 1000, 3)
        return fields

    def proxied(
        self, scope: Scope, name: str, url: str, send: Send, attributes: dict[str, str] | None = None
    ) -> AbstractContextManager[Send]:
        """Around one request to a plain HTTP backend or an A2A agent: with tracing on, a CLIENT span (the
        request's trace context goes with it), and the `send` to answer through; otherwise `send` as it is."""
        if self.tracer is None:
            return contextlib.nullcontext(send)
        exchange = exchange_of(scope)
        parent = exchange.span if exchange is not None else None
        return tracing.proxied_span(self.tracer, parent, scope["method"], name, url, attributes or {}, send)

    def federation_observer(self, route: str) -> McpObserver:
        return McpObserver(route, self.metrics, self.tracer)

    def a2a_call(self, route: str, scope: Scope, agent: str, method: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.a2a_call(route, agent, method, outcome)
        exchange = exchange_of(scope)
        if exchange is not None:
            exchange.a2a = (agent, method, outcome)

    def llm_call(self, route: str, scope: Scope, call: LlmCall) -> None:
        """An AI route's model call: on the request's access line and span, and in the metrics."""
        if self.metrics is not None:
            self.metrics.llm_call(route, call)
        exchange = exchange_of(scope)
        if exchange is not None:
            exchange.llm = call

    def limit_observer(self, route: str) -> Any:
        """What a route's rate limits call with each decision (None: nobody counts them)."""
        metrics = self.metrics
        if metrics is None:
            return None
        return lambda allowed: metrics.ratelimit_decision(route, allowed)


class McpObserver:
    """Federation's observer for one MCP route: the message's counters, its access-log fields, and a
    span per upstream call (a child of the request's)."""

    def __init__(self, route: str, metrics: Metrics | None, tracer: Any = None) -> None:
        self.route = route
        self.metrics = metrics
        self.tracer = tracer

    def message(self, request: Any, message: McpMessage) -> None:
        if self.metrics is not None:
            self.metrics.message(self.route, message)
        exchange = exchange_of(request)
        if exchange is not None:
            exchange.mcp = message

    def upstream(self, request: Any, method: str, target: str, name: str) -> AbstractContextManager[None]:
        if self.tracer is None:
            return NOTHING
        exchange = exchange_of(request)
        parent = exchange.span if exchange is not None else None
        return tracing.upstream_span(self.tracer, parent, method, target, name)

