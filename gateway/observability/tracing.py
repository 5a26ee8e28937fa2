"""OpenTelemetry traces: a SERVER span per downstream HTTP request, a CLIENT span per upstream MCP call
and per request proxied to a plain HTTP backend or an A2A agent.

The tracer provider is the process's (`Runtime` builds it from `config.tracing`, or a test hands one
in); it is never installed as OpenTelemetry's global, so nothing else in the process starts exporting.
Spans are only made when tracing is on: otherwise the hooks return before touching OpenTelemetry.

Trace context travels in the current OpenTelemetry context: the upstream span is made current around
the call, and the outgoing request picks it up (an HTTP `traceparent` header: protocols/mcp/upstream.py
and protocols/a2a/proxy.py; `params._meta.traceparent`, which the MCP SDK's client adds to every request).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import Message, Send

from federation.observer import Message as McpMessage
from gateway.config.models import TracingSettings

_W3C = TraceContextTextMapPropagator()
_CARRIED = (b"traceparent", b"tracestate")


def provider_for(settings: TracingSettings) -> TracerProvider:
    """Spans batched to the OTLP/HTTP endpoint; a caller's sampling decision (its traceparent) is kept."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # only when tracing is on

    provider = TracerProvider(
        resource=Resource.create({"service.name": "agentplex"}),
        sampler=ParentBased(TraceIdRatioBased(settings.randomSampling)),
    )
    exporter = OTLPSpanExporter(endpoint=settings.otlpEndpoint, headers=dict(settings.headers))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def tracer_of(provider: Any) -> trace.Tracer | None:
    return provider.get_tracer("agentplex") if provider is not None else None


def server_span(tracer: trace.Tracer, route: str, scope: Any) -> Span:
    """The span of one downstream HTTP request; a W3C `traceparent` it carries is continued."""
    method = scope["method"]
    carried = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"] if key in _CARRIED}
    return tracer.start_span(
        f"{method} {route}" if route else method,
        context=_W3C.extract(carried) if carried else Context(),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "http.route": route, "url.path": scope["path"]},
    )


def end_server_span(span: Span, status: int, mcp: McpMessage | None) -> None:
    span.set_attribute("http.response.status_code", status)
    if mcp is not None:
        span.set_attributes(_mcp_attributes(mcp.method, mcp.target, mcp.name))
        if mcp.code is not None:
            span.set_attribute("rpc.response.status_code", str(mcp.code))
    if status >= 500:
        span.set_status(StatusCode.ERROR)
    span.end()


@contextlib.contextmanager
def upstream_span(tracer: trace.Tracer, parent: Span | None, method: str, target: str, name: str) -> Iterator[None]:
    """A CLIENT span, current while the upstream request is sent (so its trace context goes along)."""
    span = tracer.start_span(
        f"{method} {name}" if name else method,
        context=trace.set_span_in_context(parent) if parent is not None else None,
        kind=SpanKind.CLIENT,
        attributes=_mcp_attributes(method, target, name),
    )
    with trace.use_span(span, end_on_exit=True):
        yield


@contextlib.contextmanager
def proxied_span(
    tracer: trace.Tracer, parent: Span | None, method: str, name: str, url: str, attributes: dict[str, str], send: Send
) -> Iterator[Send]:
    """A CLIENT span around one request proxied to `url` (a backend or agent called `name`), current while
    it is sent; yields the `send` to answer through, which puts the answer's status on the span."""
    parts = urlsplit(url)
    span = tracer.start_span(
        f"{method} {name}",
        context=trace.set_span_in_context(parent) if parent is not None else None,
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": method,
            "server.address": parts.hostname or "",
            "server.port": parts.port or (443 if parts.scheme == "https" else 80),
            "url.path": parts.path or "/",  # never the query: it may carry credentials
            **attributes,
        },
    )

    async def answering(message: Message) -> None:
        if message["type"] == "http.response.start":
            span.set_attribute("http.response.status_code", message["status"])
            if message["status"] >= 500:
                span.set_status(StatusCode.ERROR)
        await send(message)

    with trace.use_span(span, end_on_exit=True):
        yield answering


def _mcp_attributes(method: str, target: str, name: str) -> dict[str, str]:
    attributes = {"mcp.method.name": method}
    if target:
        attributes["mcp.target"] = target
    if name and method == "tools/call":
        attributes["gen_ai.tool.name"] = name
    elif name and method == "prompts/get":
        attributes["gen_ai.prompt.name"] = name
    return attributes
