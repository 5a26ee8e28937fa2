"""localRateLimit: per-caller, per-tool buckets on MCP messages, and whole-request limits with 429."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from gateway.config.policies import RateLimit
from gateway.policies.ratelimit_local import RATE_LIMITED, LocalRateLimit
from tests.conftest import HEADERS, http_target, mcp_yaml, run_gateway, stdio_target
from tests.gateway.test_auth import SIGNER, bearer, call, jwt_policy, rpc, session

pytestmark = pytest.mark.anyio


def test_bucket_fills_in_steps_and_says_how_long_to_wait() -> None:
    limit = LocalRateLimit(RateLimit(maxTokens=2, tokensPerFill=1, fillInterval=10))
    assert limit.take_now("a", 100.0) is None
    assert limit.take_now("a", 100.0) is None
    assert limit.take_now("a", 103.0) == pytest.approx(7.0)  # next token at 110
    assert limit.take_now("b", 103.0) is None  # another bucket
    assert limit.take_now("a", 110.0) is None
    assert limit.take_now("a", 111.0) == pytest.approx(9.0)
    assert limit.take_now("a", 150.0) is None  # refilled to max (2), not more
    assert limit.take_now("a", 150.0) is None
    assert limit.take_now("a", 150.0) is not None


async def test_per_caller_per_tool_limits(upstream: Any) -> None:
    limit = {
        "maxTokens": 2,
        "tokensPerFill": 1,
        "fillInterval": "60s",
        "methods": ["tools/call"],
        "key": 'jwt.sub + "/" + mcp.tool.target + "/" + mcp.tool.name',
    }
    policy = jwt_policy()[:-1] + f", localRateLimit: [{json.dumps(limit)}]}}"
    targets = http_target("web", upstream("web", "mcp")) + stdio_target("local")
    async with run_gateway(mcp_yaml(targets, policies=policy)) as gw, httpx.AsyncClient(timeout=30) as http:
        alice = await session(http, gw.url, bearer(SIGNER.token("alice")))
        bob = await session(http, gw.url, bearer(SIGNER.token("bob")))
        for tool in ("web_echo", "local_echo"):  # the raw relay and the SDK path
            for _ in range(2):
                assert "result" in rpc(await http.post(gw.url, json=call(tool, text="x"), headers=alice))
            limited = rpc(await http.post(gw.url, json=call(tool, text="x"), headers=alice))
            error = limited["error"]
            assert error["code"] == RATE_LIMITED
            assert error["message"].startswith(f"Rate limit exceeded for {tool}; retry after")
            assert 0 < error["data"]["retryAfter"] <= 60
            assert "result" in rpc(await http.post(gw.url, json=call(tool, text="x"), headers=bob))  # bob unaffected
        assert "result" in rpc(await http.post(gw.url, json=call("web_add", a=1, b=2), headers=alice))  # other tool
        for _ in range(5):  # listing is not charged like calling
            listed = rpc(await http.post(gw.url, json={"jsonrpc": "2.0", "id": 9, "method": "tools/list"}, headers=alice))
            assert "result" in listed


async def test_tool_scoped_limit_leaves_other_tools_alone(upstream: Any) -> None:
    policy = '{localRateLimit: [{maxTokens: 1, fillInterval: 1s, tools: ["*_add"]}]}'
    async with run_gateway(mcp_yaml(http_target("web", upstream("web", "mcp")), policies=policy)) as gw, httpx.AsyncClient(timeout=30) as http:
        headers = await session(http, gw.url, HEADERS)
        assert "result" in rpc(await http.post(gw.url, json=call("add", a=1, b=1), headers=headers))
        # tool names are matched as exposed; a single target is unprefixed, so "*_add" does not match "add"
        assert "result" in rpc(await http.post(gw.url, json=call("add", a=1, b=1), headers=headers))
    policy = '{localRateLimit: [{maxTokens: 1, fillInterval: 0.5s, tools: ["add"]}]}'
    async with run_gateway(mcp_yaml(http_target("web", upstream("web", "mcp")), policies=policy)) as gw, httpx.AsyncClient(timeout=30) as http:
        headers = await session(http, gw.url, HEADERS)
        assert "result" in rpc(await http.post(gw.url, json=call("add", a=1, b=1), headers=headers))
        assert "error" in rpc(await http.post(gw.url, json=call("add", a=1, b=1), headers=headers))
        for _ in range(3):
            assert "result" in rpc(await http.post(gw.url, json=call("echo", text="x"), headers=headers))
        await anyio.sleep(0.6)  # one fill later
        assert "result" in rpc(await http.post(gw.url, json=call("add", a=1, b=1), headers=headers))


async def test_request_level_limit_answers_429_with_retry_after(upstream: Any) -> None:
    policy = "{localRateLimit: [{maxTokens: 3, tokensPerFill: 3, fillInterval: 30s, key: 'source.address'}]}"
    async with run_gateway(mcp_yaml(http_target("web", upstream("web", "mcp")), policies=policy)) as gw, httpx.AsyncClient(timeout=30) as http:
        headers = await session(http, gw.url, HEADERS)  # initialize + initialized: two requests
        assert "result" in rpc(await http.post(gw.url, json=call("echo", text="x"), headers=headers))
        refused = await http.post(gw.url, json=call("echo", text="x"), headers=headers)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 30
        assert refused.json()["error"] == "rate_limited"
