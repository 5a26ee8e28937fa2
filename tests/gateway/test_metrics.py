"""Prometheus metrics at the stats address of a running gateway process (gateway/observability)."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_config, parse_config
from gateway.runtime import Runtime
from tests.a2a.harness import NO_STORE, V1, message
from tests.a2a.harness import rpc as a2a_rpc
from tests.conftest import HEADERS, http_target, started, stdio_target
from tests.fixtures.a2a_agent import echo_agent, serve
from tests.gateway.test_auth import call, rpc, session

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@contextlib.asynccontextmanager
async def running(text: str) -> AsyncIterator[Runtime]:
    async with started(Runtime(parse_config(text, "<test>"))) as runtime:
        yield runtime


def gateway_url(runtime: Runtime, path: str = "/mcp") -> str:
    return f"http://127.0.0.1:{next(iter(runtime.sockets.values())).bind.bound_port}{path}"


async def scrape(http: httpx.AsyncClient, runtime: Runtime) -> Samples:
    response = await http.get(f"http://127.0.0.1:{runtime.stats_port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def mcp_config(targets: str, policies: str = "{}") -> str:
    return f"config: {{statsAddr: '127.0.0.1:0'}}\nmcp:\n  port: 0\n  policies: {policies}\n  targets:{targets}\n"


POLICIES = (
    "{mcpAuthorization: {rules: ['!(mcp.tool.target == \"local\" && mcp.tool.name == \"add\")']},"
    " localRateLimit: [{maxTokens: 2, tokensPerFill: 1, fillInterval: 60s, tools: [local_whoami]}]}"
)


async def test_mcp_messages_requests_upstreams_and_limits_are_counted(upstream: Any) -> None:
    targets = stdio_target("local") + http_target("web", upstream("web", "mcp"))
    async with running(mcp_config(targets, POLICIES)) as runtime, httpx.AsyncClient(timeout=30) as http:
        url = gateway_url(runtime)
        headers = await session(http, url, HEADERS)
        assert "result" in rpc(await http.post(url, json=call("local_echo", text="hi"), headers=headers))  # SDK path
        assert "result" in rpc(await http.post(url, json=call("web_echo", text="hi"), headers=headers))  # raw relay
        assert "error" in rpc(await http.post(url, json=call("local_add", a=1, b=2), headers=headers))  # denied
        for _ in range(2):
            assert "result" in rpc(await http.post(url, json=call("local_whoami"), headers=headers))
        assert rpc(await http.post(url, json=call("local_whoami"), headers=headers))["error"]["code"] == -32029
        # A result with isError (here: arguments the tool refuses) counts as an error, on both paths.
        assert rpc(await http.post(url, json=call("local_echo"), headers=headers))["result"]["isError"] is True
        assert rpc(await http.post(url, json=call("web_echo"), headers=headers))["result"]["isError"] is True
        free_text = "made-up-" + "x" * 50
        assert "error" in rpc(await http.post(url, json=call(free_text), headers=headers))  # unknown: no label
        samples = await scrape(http, runtime)

    route = {"route": "mcp"}
    calls = {**route, "method": "tools/call"}
    assert value(samples, "agentplex_mcp_messages_total", **calls, target="local", name="local_echo", outcome="ok") == 1
    assert value(samples, "agentplex_mcp_messages_total", **calls, target="web", name="web_echo", outcome="ok") == 1
    for target in ("local", "web"):
        name = f"{target}_echo"
        assert value(samples, "agentplex_mcp_messages_total", **calls, target=target, name=name, outcome="error") == 1
    assert (
        value(samples, "agentplex_mcp_messages_total", **calls, target="local", name="local_add", outcome="denied") == 1
    )
    assert (
        value(samples, "agentplex_mcp_messages_total", **calls, target="local", name="local_whoami", outcome="ok") == 2
    )
    limited = value(
        samples, "agentplex_mcp_messages_total", **calls, target="local", name="local_whoami", outcome="rate_limited"
    )
    assert limited == 1
    assert value(samples, "agentplex_mcp_messages_total", **calls, target="", name="", outcome="error") == 1
    assert not any(free_text in str(labels) for _, labels in samples)
    assert value(
        samples, "agentplex_mcp_messages_total", **route, method="initialize", target="", name="", outcome="ok"
    )
    histogram = value(samples, "agentplex_mcp_message_duration_seconds_count", **calls, target="local")
    assert histogram == 6  # echo x2, add, whoami x3
    assert value(samples, "agentplex_ratelimit_decisions_total", **route, decision="allowed") == 2
    assert value(samples, "agentplex_ratelimit_decisions_total", **route, decision="limited") == 1
    posts = value(samples, "agentplex_requests_total", **route, method="POST", status="200")
    assert posts >= 8  # initialize and the calls (notifications/initialized is a 202)
    assert value(samples, "agentplex_requests_total", **route, method="POST", status="202") == 1
    assert value(samples, "agentplex_request_duration_seconds_count", **route) >= 9
    for target in ("local", "web"):
        assert value(samples, "agentplex_upstream_up", **route, target=target) == 1
    assert value(samples, "agentplex_upstream_sessions", **route, target="local") == 1  # the session's own process
    assert ("agentplex_stdio_restarts_total", frozenset({**route, "target": "local"}.items())) in samples
    assert ("agentplex_stdio_restarts_total", frozenset({**route, "target": "web"}.items())) not in samples


async def test_a_crashed_stdio_target_counts_a_restart() -> None:
    targets = stdio_target("fragile") + "\n    sharing: shared"  # one target: its tools are not prefixed
    async with running(mcp_config(targets)) as runtime, httpx.AsyncClient(timeout=30) as http:
        url = gateway_url(runtime)
        headers = await session(http, url, HEADERS)
        assert "error" in rpc(await http.post(url, json=call("crash"), headers=headers))
        with anyio.fail_after(20):
            while "result" not in rpc(await http.post(url, json=call("whoami"), headers=headers)):
                await anyio.sleep(0.3)
        samples = await scrape(http, runtime)
    assert value(samples, "agentplex_stdio_restarts_total", route="mcp", target="fragile") == 1
    assert value(
        samples, "agentplex_mcp_messages_total", route="mcp", method="tools/call", target="fragile",
        name="crash", outcome="error",
    ) == 1  # fmt: skip


async def test_a2a_calls_are_counted_per_agent_and_method() -> None:
    async with serve(lambda base: echo_agent(base, "Echo")) as echo:
        text = (
            "config: {statsAddr: '127.0.0.1:0'}\na2a:\n  port: 0\n  path: /a2a\n"
            f"  {NO_STORE}\n  agents:\n  - {{name: echo, url: '{echo.url}'}}\n"
            "  policies: {mcpAuthorization: {rules: ['a2a.method != \"ListTasks\"']}}\n"
        )
        async with running(text) as runtime, httpx.AsyncClient(timeout=30) as http:
            url = gateway_url(runtime, "/a2a/echo/")
            sent = await http.post(url, json=a2a_rpc("SendMessage", {"message": message("hi")}), headers=V1)
            assert sent.status_code == 200 and "result" in sent.json()
            refused = await http.post(url, json=a2a_rpc("ListTasks", {}), headers=V1)
            assert "error" in refused.json()
            samples = await scrape(http, runtime)
    labels = {"route": "a2a", "agent": "echo"}
    assert value(samples, "agentplex_a2a_calls_total", **labels, method="SendMessage", outcome="ok") == 1
    assert value(samples, "agentplex_a2a_calls_total", **labels, method="ListTasks", outcome="denied") == 1


async def test_stats_address_in_use_is_a_warning_and_null_turns_it_off(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        text = f"config: {{statsAddr: '127.0.0.1:{port}'}}\nbinds:\n- port: 0\n  listeners:\n  - routes:\n"
        text += "    - {policies: {directResponse: {body: hello}}}\n"
        with caplog.at_level(logging.WARNING, logger="agentplex"):
            async with running(text) as runtime, httpx.AsyncClient(timeout=30) as http:
                assert runtime.stats_port is None
                assert (await http.get(gateway_url(runtime, "/"))).text == "hello"
        assert any(f"127.0.0.1:{port}" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    off = text.replace(f"'127.0.0.1:{port}'", "null")
    async with running(off) as runtime:
        assert runtime.stats_port is None and runtime.metrics is None


async def test_only_metrics_is_served_at_the_stats_address() -> None:
    text = "config: {statsAddr: '127.0.0.1:0'}\nbinds:\n- port: 0\n  listeners:\n  - routes:\n"
    text += "    - {policies: {directResponse: {body: hello}}}\n"
    async with running(text) as runtime, httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(f"http://127.0.0.1:{runtime.stats_port}/")).status_code == 404
        await http.get(gateway_url(runtime, "/anything"))
        samples = await scrape(http, runtime)
    assert value(samples, "agentplex_requests_total", route="listener0/route0", method="GET", status="200") == 1


async def test_counters_carry_on_across_a_reload(tmp_path: Any) -> None:
    text = "config: {statsAddr: '127.0.0.1:0'}\nbinds:\n- port: 0\n  listeners:\n  - routes:\n"
    text += "    - {name: hello, policies: {directResponse: {body: BODY}}}\n"
    path = tmp_path / "gw.yaml"
    path.write_text(text.replace("BODY", "one"))
    runtime = Runtime(load_config(path), lambda: load_config(path), poll=0.1)
    async with anyio.create_task_group() as tg, httpx.AsyncClient(timeout=30) as http:
        await tg.start(runtime.run)
        try:
            assert (await http.get(gateway_url(runtime, "/"))).text == "one"
            path.write_text(text.replace("BODY", "two"))
            with anyio.fail_after(15):
                while runtime.generation < 2:
                    await anyio.sleep(0.05)
            assert (await http.get(gateway_url(runtime, "/"))).text == "two"
            samples = await scrape(http, runtime)
        finally:
            runtime.stop()
    assert value(samples, "agentplex_requests_total", route="hello", method="GET", status="200") == 2
