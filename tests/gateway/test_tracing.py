"""OpenTelemetry traces of a running gateway, exported in-process (gateway/observability/tracing.py)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.config import ConfigError, parse_config
from gateway.config.models import TracingSettings
from gateway.config.redact import redacted_config
from gateway.observability.exchange import McpObserver
from gateway.observability.tracing import provider_for
from gateway.runtime import Runtime
from tests.conftest import HEADERS, http_route_yaml, http_target, started, stdio_target
from tests.fixtures.a2a_agent import echo_agent, serve
from tests.gateway.test_auth import call, rpc, session
from tests.gateway.test_http_backend import backend_app

pytestmark = pytest.mark.anyio

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@contextlib.asynccontextmanager
async def runtime_of(text: str, provider: TracerProvider | None) -> AsyncIterator[int]:
    async with started(Runtime(parse_config(text, "<test>"), tracer_provider=provider)) as runtime:
        yield next(iter(runtime.sockets.values())).bind.bound_port


@contextlib.asynccontextmanager
async def running(targets: str, provider: TracerProvider | None, tracing: str = "null") -> AsyncIterator[str]:
    text = f"config: {{statsAddr: null, adminAddr: null, tracing: {tracing}}}\nmcp:\n  port: 0\n  targets:{targets}\n"
    async with runtime_of(text, provider) as port:
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def seen(result: dict[str, Any]) -> dict[str, str]:
    """What the upstream's `tracecontext` tool saw: its _meta.traceparent and traceparent header."""
    return json.loads(result["result"]["content"][0]["text"])


def traceparent(span: ReadableSpan) -> str:
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def the_call(exporter: InMemorySpanExporter, tool: str) -> tuple[ReadableSpan, ReadableSpan]:
    """The server span of the tools/call of `tool`, and its one upstream span."""
    finished = exporter.get_finished_spans()
    server = [s for s in finished if s.kind == SpanKind.SERVER and s.attributes.get("gen_ai.tool.name") == tool]
    assert len(server) == 1, [(s.name, dict(s.attributes or {})) for s in finished]
    client = [
        s for s in finished if s.kind == SpanKind.CLIENT and s.parent and s.parent.span_id == server[0].context.span_id
    ]
    assert len(client) == 1, [(s.name, dict(s.attributes or {})) for s in finished]
    return server[0], client[0]


async def test_tools_calls_to_http_and_stdio_upstreams_carry_the_trace(upstream: Any, spans: Any) -> None:
    provider, exporter = spans
    targets = stdio_target("local") + http_target("web", upstream("web", "mcp"))
    async with running(targets, provider) as url, httpx.AsyncClient(timeout=30) as http:
        headers = await session(http, url, HEADERS)
        # A first call into each target opens the session's own upstream (the SDK path); the next is relayed.
        for opening in ("web_echo", "local_echo"):
            assert "result" in rpc(await http.post(url, json=call(opening, text="hi"), headers=headers))
        web = seen(rpc(await http.post(url, json=call("web_tracecontext"), headers=headers)))  # the raw relay
        local = seen(rpc(await http.post(url, json=call("local_tracecontext"), headers=headers)))  # relay, stdio

    server, client = the_call(exporter, "web_tracecontext")
    assert server.name == "POST mcp"
    assert {k: server.attributes[k] for k in ("http.request.method", "http.route", "http.response.status_code")} == {
        "http.request.method": "POST",
        "http.route": "mcp",
        "http.response.status_code": 200,
    }
    assert server.attributes["mcp.method.name"] == "tools/call" and server.attributes["mcp.target"] == "web"
    assert server.parent is None  # nobody called with a traceparent: a new trace
    assert client.name == "tools/call web_tracecontext"
    assert dict(client.attributes or {}) == {
        "mcp.method.name": "tools/call",
        "mcp.target": "web",
        "gen_ai.tool.name": "web_tracecontext",
    }
    assert client.context.trace_id == server.context.trace_id
    assert web["header"] == traceparent(client)  # the HTTP upstream's request was made inside the upstream span
    assert web["meta"] == traceparent(client)  # and in _meta, as the SDK path's client puts it on every transport

    server, client = the_call(exporter, "local_tracecontext")
    assert client.kind == SpanKind.CLIENT and client.attributes["mcp.target"] == "local"
    assert local == {"meta": traceparent(client), "header": ""}  # stdio: in params._meta


async def test_an_incoming_traceparent_is_continued_on_the_sdk_path(upstream: Any, spans: Any) -> None:
    provider, exporter = spans
    caller = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    # A 2026-07-28 client is served by the SDK (not the relay), to an HTTP upstream.
    async with (
        running(http_target("web", upstream("web", "mcp")), provider) as url,
        httpx2.AsyncClient(headers=caller, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http)) as modern,
    ):
        result = await modern.call_tool("tracecontext", {})
    server, client = the_call(exporter, "tracecontext")
    assert f"{server.context.trace_id:032x}" == CALLER_TRACE
    assert server.parent is not None and f"{server.parent.span_id:016x}" == CALLER_SPAN
    got = json.loads(result.content[0].text)
    assert got["header"] == traceparent(client)
    assert got["meta"] == traceparent(client)  # the SDK client puts it in _meta on every transport


async def test_with_tracing_off_upstreams_see_no_trace_context(upstream: Any, spans: Any) -> None:
    _, exporter = spans
    targets = stdio_target("local") + http_target("web", upstream("web", "mcp"))
    async with running(targets, None) as url, httpx.AsyncClient(timeout=30) as http:
        headers = await session(http, url, HEADERS)
        assert seen(rpc(await http.post(url, json=call("web_tracecontext"), headers=headers))) == {
            "meta": "",
            "header": "",
        }
        assert seen(rpc(await http.post(url, json=call("local_tracecontext"), headers=headers))) == {
            "meta": "",
            "header": "",
        }
    assert exporter.get_finished_spans() == ()


def test_with_tracing_off_the_upstream_hook_makes_no_span() -> None:
    observer = McpObserver("mcp", None, None)
    assert observer.upstream(None, "tools/call", "web", "web_echo") is observer.upstream(None, "ping", "", "")


def test_tracing_config_is_checked_at_its_key_path_and_its_headers_redacted() -> None:
    def problems(tracing: str) -> str:
        with pytest.raises(ConfigError) as caught:
            parse_config(
                f"config: {{tracing: {tracing}}}\nmcp: {{port: 0, targets: [{{name: a, mcp: {{host: http://x}}}}]}}"
            )
        return str(caught.value)

    assert "config.tracing.otlpEndpoint: missing required key" in problems("{randomSampling: 0.5}")
    assert "config.tracing.otlpEndpoint: invalid URL" in problems("{otlpEndpoint: 'collector:4318'}")
    assert "config.tracing.randomSampling: must be at most 1" in problems(
        "{otlpEndpoint: 'http://c:4318', randomSampling: 2}"
    )
    config = parse_config(
        "config: {tracing: {otlpEndpoint: 'http://c:4318/v1/traces', headers: {x-api-key: s3cret, x-team: blue}}}\n"
        "mcp: {port: 0, targets: [{name: a, mcp: {host: http://x}}]}"
    )
    assert config.config.tracing is not None and config.config.tracing.randomSampling == 1.0
    shown = redacted_config(config)["config"]["tracing"]["headers"]
    assert shown == {"x-api-key": "<redacted>", "x-team": "<redacted>"}  # header values are shown by allow-list


def test_random_sampling_applies_to_new_traces_and_callers_decisions_are_kept() -> None:
    provider = provider_for(TracingSettings(otlpEndpoint="http://127.0.0.1:9/v1/traces", randomSampling=0.0))
    try:
        tracer = provider.get_tracer("test")
        assert not tracer.start_span("new").is_recording()
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        sampled = TraceContextTextMapPropagator().extract({"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
        assert tracer.start_span("continued", context=sampled).is_recording()
    finally:
        provider.shutdown()


async def test_config_tracing_exports_over_otlp_http_by_the_time_the_gateway_has_stopped(upstream: Any) -> None:
    received: list[tuple[str, dict[str, str], bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
    try:
        tracing = f"{{otlpEndpoint: '{endpoint}', headers: {{x-api-key: k1}}}}"
        async with running(stdio_target("local"), None, tracing) as url, httpx.AsyncClient(timeout=30) as http:
            headers = await session(http, url, HEADERS)
            assert "result" in rpc(await http.post(url, json=call("tracecontext"), headers=headers))
    finally:
        collector.shutdown()
    assert received, "nothing was exported"
    path, sent, _ = received[0]
    assert path == "/v1/traces" and sent["x-api-key"] == "k1" and sent["content-type"] == "application/x-protobuf"
    exported = b"".join(b for _, _, b in received)
    assert b"tools/call tracecontext" in exported and b"agentplex" in exported


async def client_span_under(exporter: InMemorySpanExporter, server_name: str) -> tuple[ReadableSpan, ReadableSpan]:
    """The server span named `server_name` and its one client span (the server span ends just after the answer)."""
    for _ in range(100):
        finished = exporter.get_finished_spans()
        if any(s.kind == SpanKind.SERVER and s.name == server_name for s in finished):
            break
        await anyio.sleep(0.05)
    (server,) = [s for s in finished if s.kind == SpanKind.SERVER and s.name == server_name]
    (client,) = [s for s in finished if s.kind == SpanKind.CLIENT and s.parent and s.parent.span_id == server.context.span_id]
    return server, client


async def test_requests_to_http_backends_and_agents_get_a_client_span_and_carry_it(spans: Any) -> None:
    provider, exporter = spans
    caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    async with serve(lambda base: backend_app(base, anyio.Event())) as backend:  # type: ignore[arg-type]
        config = "config: {statsAddr: null, adminAddr: null}\n" + http_route_yaml(backend.url.removeprefix("http://"))
        async with runtime_of(config, provider) as port, httpx.AsyncClient(timeout=20) as http:
            got = (await http.get(f"http://127.0.0.1:{port}/api/items?token=secret", headers={"traceparent": caller})).json()
            server, client = await client_span_under(exporter, "GET api")
            assert server.context.trace_id == int(CALLER_TRACE, 16)  # the caller's trace, continued
            assert got["headers"]["traceparent"] == traceparent(client)  # the backend sees the gateway's hop
            assert client.name == "GET api"
            attributes = dict(client.attributes or {})
            assert attributes["http.response.status_code"] == 200 and attributes["url.path"] == "/api/items"
            assert attributes["server.address"] == "127.0.0.1" and "secret" not in str(attributes)

    # A2A, on the `a2a:` block's own bind: a JSON-RPC SendMessage to the agent.
    async with serve(lambda base: echo_agent(base, "Echo")) as agent:
        config = "config: {statsAddr: null, adminAddr: null}\n"
        config += f"a2a:\n  port: 0\n  registry: {{sqlite: null, healthInterval: 0}}\n  agents: [{{name: echo, url: '{agent.url}'}}]\n"
        async with runtime_of(config, provider) as port, httpx.AsyncClient(timeout=20) as http:
            exporter.clear()
            message = {"role": "ROLE_USER", "messageId": "m1", "parts": [{"text": "hi"}]}
            sent = await http.post(
                f"http://127.0.0.1:{port}/a2a/echo",
                json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}},
                headers={"a2a-version": "1.0"},
            )
            assert sent.status_code == 200, sent.text
            _, client = await client_span_under(exporter, "POST a2a")
            assert (client.attributes or {})["a2a.agent"] == "echo"
            assert (client.attributes or {})["a2a.method"] == "SendMessage"
            seen_by_agent = [headers for method, path, headers in agent.app.seen if method == "POST"]
            assert seen_by_agent[-1]["traceparent"] == traceparent(client)


async def test_with_tracing_off_a_callers_trace_context_reaches_the_backend_untouched() -> None:
    caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    async with serve(lambda base: backend_app(base, anyio.Event())) as backend:  # type: ignore[arg-type]
        config = "config: {statsAddr: null, adminAddr: null}\n" + http_route_yaml(backend.url.removeprefix("http://"))
        async with runtime_of(config, None) as port, httpx.AsyncClient(timeout=20) as http:
            got = (await http.get(f"http://127.0.0.1:{port}/api/x", headers={"traceparent": caller})).json()
            assert got["headers"]["traceparent"] == caller
