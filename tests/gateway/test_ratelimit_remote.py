"""remoteRateLimit: token buckets in a real `redis-server`, shared by gateway replicas.

Everything is real and on 127.0.0.1: redis-server (tests/redis_server.py), the upstream MCP server
(tests/fixtures/upstream.py as a subprocess) and the gateways, in this event loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio as aioredis

from gateway.app import Gateway
from gateway.config import parse_config
from gateway.config.errors import ConfigError
from gateway.config.policies import RemoteRateLimit
from gateway.policies import HttpRateLimitStep
from gateway.policies.ratelimit_local import RATE_LIMITED, LocalRateLimit
from gateway.policies.ratelimit_remote import RATE_LIMITER_UNAVAILABLE, RemoteLimit, remote_limits
from tests.conftest import (
    HEADERS,
    INIT,
    PY,
    ROOT,
    RunningGateway,
    free_port,
    http_target,
    run_gateway,
    stop,
    wait_for_port,
)
from tests.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.anyio

PER_TOOL = "{maxTokens: 2, tokensPerFill: 1, fillInterval: 60s, methods: [tools/call], key: 'mcp.tool.name'}"


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def config(target: str, redis_url: str, limits: str, *, prefix: str, failure: str = "failOpen") -> str:
    """A short-shape gateway on port 0 with one remoteRateLimit policy (short Redis timeout)."""
    return f"""
mcp:
  port: 0
  policies:
    remoteRateLimit:
      redis: {{ url: "{redis_url}", timeout: 0.2s }}
      failureMode: {failure}
      prefix: "{prefix}"
      limits: [{limits}]
  targets:{target}
"""


@contextlib.asynccontextmanager
async def gateway(text: str) -> AsyncIterator[RunningGateway]:
    """run_gateway, then its Redis connections closed (the gateway has no shutdown hook for policies)."""
    async with run_gateway(text) as gw:
        running = gw.gateway
        yield gw
    limits = [limit for _, federation in running.federations for limit in getattr(federation.guard, "limits", [])]
    limits += [
        step.limit
        for bind in running.binds
        for route in bind.routes
        for step in getattr(route.endpoint, "steps", [])
        if isinstance(step, HttpRateLimitStep)
    ]
    for store in {id(limit.store): limit.store for limit in limits if isinstance(limit, RemoteLimit)}.values():
        await store.aclose()


class Session:
    """A raw streamable-HTTP MCP session (handshake era) on one gateway."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url
        self.headers = dict(HEADERS)
        self.next_id = 100

    async def open(self) -> Session:
        init = await self.http.post(self.url, json=INIT, headers=HEADERS)
        assert init.status_code == 200, init.text
        self.headers = {
            **HEADERS,
            "mcp-session-id": init.headers["mcp-session-id"],
            "mcp-protocol-version": "2025-11-25",
        }
        note = await self.http.post(
            self.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self.headers
        )
        assert note.status_code == 202, note.text
        return self

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One JSON-RPC request; its response message (from a JSON body or an SSE stream)."""
        self.next_id += 1
        body = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}}
        response = await self.http.post(self.url, json=body, headers=self.headers)
        assert response.status_code == 200, (response.status_code, response.text)
        return _message(response, self.next_id)

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        return await self.request("tools/call", {"name": tool, "arguments": arguments})

    async def tool_names(self) -> set[str]:
        listed = await self.request("tools/list")
        return {tool["name"] for tool in listed["result"]["tools"]}


def _message(response: httpx.Response, request_id: int) -> dict[str, Any]:
    if response.headers["content-type"].startswith("application/json"):
        return response.json()
    for line in response.text.splitlines():
        if line.startswith("data:") and line[5:].strip():
            message = json.loads(line[5:])
            if message.get("id") == request_id:
                return message
    raise AssertionError(f"no response to request {request_id} in {response.text!r}")


def text_of(message: dict[str, Any]) -> str:
    assert "result" in message, message
    assert not message["result"].get("isError"), message
    return message["result"]["content"][0]["text"]


def error_of(message: dict[str, Any]) -> dict[str, Any]:
    assert "error" in message, message
    return message["error"]


def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


# -- the Lua token bucket --------------------------------------------------------------------------


async def test_the_redis_bucket_fills_like_the_local_one(redis: RedisServer) -> None:
    limit = {"maxTokens": 3, "tokensPerFill": 2, "fillInterval": 0.4}
    cfg = RemoteRateLimit.model_validate({"redis": {"url": redis.url, "timeout": 1}, "limits": [limit]})
    (remote,) = remote_limits(cfg, "<test>")
    local = LocalRateLimit(cfg.limits[0])
    try:
        t0 = time.monotonic()
        remote_waits = [await remote.take("k") for _ in range(5)]
        local_waits = [local.take_now("k", t0) for _ in range(5)]
        assert [w is None for w in remote_waits] == [w is None for w in local_waits] == [True] * 3 + [False] * 2
        assert all(0.3 < w <= 0.4 for w in remote_waits[3:] if w is not None), remote_waits
        await anyio.sleep(0.45)  # one fill (2 tokens), not two
        assert [await remote.take("k") for _ in range(2)] == [None, None]
        wait = await remote.take("k")
        assert wait is not None and 0 < wait < 0.4
        assert await remote.take("other") is None  # buckets are per key

        client = aioredis.Redis.from_url(redis.url)
        try:
            keys = sorted(await client.keys(f"{cfg.prefix}:0:*"))
            assert [k.decode().rsplit(":", 1)[1] for k in keys] == ["k", "other"]
            ttls = [await client.pttl(k) for k in keys]
            assert all(0 < ttl <= 800 for ttl in ttls), ttls  # gone once the bucket would be full again
            await anyio.sleep(0.9)
            assert await client.keys(f"{cfg.prefix}:0:*") == []
        finally:
            await client.aclose()
    finally:
        await remote.store.aclose()  # type: ignore[attr-defined]


async def test_a_bad_redis_url_is_a_config_error() -> None:
    text = config(http_target("web", "http://127.0.0.1:1/mcp"), "http://127.0.0.1:6379", PER_TOOL, prefix="x")
    with pytest.raises(ConfigError) as caught:
        Gateway(parse_config(text, "x.yaml"))
    assert str(caught.value).startswith("x.yaml: mcp.policies.remoteRateLimit.redis.url: Redis URL must specify")


# -- through the gateway ---------------------------------------------------------------------------


async def test_per_tool_limit_refuses_the_third_call_of_a_tool(
    redis: RedisServer, upstream: Callable[..., str]
) -> None:
    name = prefix()
    text = config(http_target("web", upstream("web")), redis.url, PER_TOOL, prefix=name)
    async with gateway(text) as gw, httpx.AsyncClient(timeout=30) as http:
        session = await Session(http, gw.url).open()
        for _ in range(3):
            assert {"echo", "add"} <= await session.tool_names()  # tools/list is not charged
        assert text_of(await session.call("echo", text="one")) == "web: one"
        assert text_of(await session.call("echo", text="two")) == "web: two"
        error = error_of(await session.call("echo", text="three"))
        assert error["code"] == RATE_LIMITED
        assert error["message"].startswith("Rate limit exceeded for echo; retry after")
        assert 55 < error["data"]["retryAfter"] <= 60
        assert text_of(await session.call("add", a=2, b=3)) == "5"  # another tool, another bucket
        assert {"echo", "add"} <= await session.tool_names()

    client = aioredis.Redis.from_url(redis.url)
    try:
        keys = sorted(k.decode() for k in await client.keys(f"{name}:*"))
        assert [k.split(":")[1] for k in keys] == ["0", "0"] and [k.split(":")[3] for k in keys] == ["add", "echo"]
        ttls = [await client.ttl(k) for k in keys]
        assert all(0 < ttl <= 120 for ttl in ttls), ttls
    finally:
        await client.aclose()


@contextlib.contextmanager
def gateway_process(text: str, tmp_path: Path) -> Iterator[str]:
    """The same config served by a separate `agentplex run` process (a second replica); yields its URL."""
    port = free_port()
    path = tmp_path / "replica.yaml"
    path.write_text(text.replace("port: 0", f"port: {port}", 1))
    proc = subprocess.Popen([PY, "-m", "gateway.cli", "run", "-f", str(path)], cwd=ROOT)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(proc)


async def test_two_gateways_share_one_budget(redis: RedisServer, upstream: Callable[..., str], tmp_path: Path) -> None:
    """Two replicas, one in this process and one in its own: Redis holds the only budget."""
    text = config(http_target("web", upstream("web")), redis.url, PER_TOOL, prefix=prefix())
    with gateway_process(text, tmp_path) as url_b:
        await _share_one_budget(text, url_b)


async def _share_one_budget(text: str, url_b: str) -> None:
    async with gateway(text) as gw_a, httpx.AsyncClient(timeout=30) as http:
        a = await Session(http, gw_a.url).open()
        b = await Session(http, url_b).open()
        assert text_of(await a.call("echo", text="a1")) == "web: a1"
        assert text_of(await a.call("echo", text="a2")) == "web: a2"
        refused = error_of(await b.call("echo", text="b1"))  # B never saw a call: the budget is shared
        assert refused["code"] == RATE_LIMITED and refused["data"]["retryAfter"] > 55
        assert error_of(await a.call("echo", text="a3"))["code"] == RATE_LIMITED
        assert text_of(await b.call("add", a=1, b=1)) == "2"
        assert text_of(await a.call("add", a=1, b=2)) == "3"
        assert error_of(await a.call("add", a=1, b=3))["code"] == RATE_LIMITED  # B's call counted for A


async def test_redis_going_away_fails_open_or_closed(
    redis: RedisServer, upstream: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agentplex.ratelimit")
    target = http_target("web", upstream("web"))
    echo_only = "{maxTokens: 1, fillInterval: 60s, tools: [echo], key: 'mcp.tool.name'}"
    open_text = config(target, redis.url, echo_only, prefix=prefix(), failure="failOpen")
    closed_text = config(target, redis.url, echo_only, prefix=prefix(), failure="failClosed")
    async with (
        gateway(open_text) as gw_open,
        gateway(closed_text) as gw_closed,
        httpx.AsyncClient(timeout=30) as http,
    ):
        fail_open = await Session(http, gw_open.url).open()
        fail_closed = await Session(http, gw_closed.url).open()
        for session in (fail_open, fail_closed):  # the limit is in force while Redis answers
            assert text_of(await session.call("echo", text="first")) == "web: first"
            assert error_of(await session.call("echo", text="second"))["code"] == RATE_LIMITED

        redis.stop()  # connections refused
        for i in range(3):
            assert text_of(await fail_open.call("echo", text=f"open {i}")) == f"web: open {i}"
            refused = error_of(await fail_closed.call("echo", text=f"closed {i}"))
            assert refused["code"] == RATE_LIMITER_UNAVAILABLE
            assert refused["message"].startswith("Rate limiter unavailable")
        for session in (fail_open, fail_closed):  # other traffic is served
            assert text_of(await session.call("add", a=20, b=22)) == "42"
            assert {"echo", "add"} <= await session.tool_names()
            assert text_of(await (await Session(http, session.url).open()).call("add", a=1, b=1)) == "2"
        warnings = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(warnings) == 2, warnings  # one per policy, not one per request
        assert any("failOpen" in w for w in warnings) and any("failClosed" in w for w in warnings)

        redis.start()  # back, empty: fresh buckets
        for session in (fail_open, fail_closed):
            assert text_of(await session.call("echo", text="back")) == "web: back"
            assert error_of(await session.call("echo", text="again"))["code"] == RATE_LIMITED
        assert sum("answers again" in r.getMessage() for r in caplog.records) == 2

        redis.pause()  # connected but silent: the 0.2 s timeout decides
        try:
            started = time.monotonic()
            assert text_of(await fail_open.call("echo", text="slow")) == "web: slow"
            assert error_of(await fail_closed.call("echo", text="slow"))["code"] == RATE_LIMITER_UNAVAILABLE
            assert time.monotonic() - started < 3
            assert text_of(await fail_closed.call("add", a=1, b=2)) == "3"
        finally:
            redis.resume()
        assert error_of(await fail_closed.call("echo", text="resumed"))["code"] == RATE_LIMITED


async def test_a_limit_without_mcp_answers_429_or_503(redis: RedisServer, upstream: Callable[..., str]) -> None:
    target = http_target("web", upstream("web"))
    per_request = "{maxTokens: 3, fillInterval: 60s, key: 'source.address'}"
    closed_text = config(target, redis.url, per_request, prefix=prefix(), failure="failClosed")
    open_text = config(target, redis.url, per_request, prefix=prefix(), failure="failOpen")
    async with (
        gateway(closed_text) as gw_closed,
        gateway(open_text) as gw_open,
        httpx.AsyncClient(timeout=30) as http,
    ):
        session = await Session(http, gw_closed.url).open()  # two requests: initialize, initialized
        assert {"echo", "add"} <= await session.tool_names()  # the third
        refused = await http.post(
            gw_closed.url, json={"jsonrpc": "2.0", "id": 9, "method": "tools/list"}, headers=session.headers
        )
        assert refused.status_code == 429
        assert 55 <= int(refused.headers["retry-after"]) <= 60
        assert refused.json()["error"] == "rate_limited"
        assert (await http.post(gw_closed.url, json=INIT, headers=HEADERS)).status_code == 429  # per caller

        redis.stop()
        unavailable = await http.post(gw_closed.url, json=INIT, headers=HEADERS)
        assert unavailable.status_code == 503
        assert unavailable.json()["error"] == "rate_limiter_unavailable"
        assert unavailable.json()["error_description"].startswith("Rate limiter unavailable")
        session = await Session(http, gw_open.url).open()
        for _ in range(4):  # more than maxTokens: nothing is counted while Redis is away
            assert text_of(await session.call("echo", text="hi")) == "web: hi"
