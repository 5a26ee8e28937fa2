"""Client sessions are capped per caller and per route: a flood of `initialize` is refused clearly,
and everyone else (another caller, a session already open) keeps being served."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from protocols.mcp.session_limits import TOO_MANY_SESSIONS
from tests.conftest import HEADERS, INIT, http_target, mcp_yaml, run_gateway, stdio_target

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def client_from(address: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose connections come from `address` (any 127.x.y.z is this machine): another caller."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(transport=transport, timeout=30) as http:
        yield http


async def open_session(http: httpx.AsyncClient, url: str, headers: dict[str, str] = HEADERS) -> httpx.Response:
    return await http.post(url, json=INIT, headers=headers)


def session_headers(init: httpx.Response, headers: dict[str, str] = HEADERS) -> dict[str, str]:
    return {**headers, "mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}


def refused(response: httpx.Response, status: int, key: str) -> bool:
    error = response.json()["error"]
    return (
        response.status_code == status
        and "mcp-session-id" not in response.headers
        and error["code"] == TOO_MANY_SESSIONS
        and key in error["message"]
    )


async def test_a_callers_flood_of_initialize_stops_at_its_cap_and_others_still_get_in(upstream: Any) -> None:
    """The attack: unauthenticated initialize in a loop, never DELETE. By default one address holds 64."""
    async with run_gateway(mcp_yaml(http_target("web", upstream("web", "mcp")))) as gw, client_from("127.0.0.1") as http:
        opened = [await open_session(http, gw.url) for _ in range(64)]  # bounded
        assert all(init.status_code == 200 for init in opened)
        flood = await open_session(http, gw.url)
        assert refused(flood, 429, "maxSessionsPerCaller: 64")
        async with client_from("127.0.0.2") as other:
            assert (await open_session(other, gw.url)).status_code == 200
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "on"}}}
        served = await http.post(gw.url, json=call, headers=session_headers(opened[0]))
        assert "web: on" in served.text  # the caller's open sessions carry on
        assert (await http.delete(gw.url, headers=session_headers(opened[0]))).status_code == 200
        assert (await open_session(http, gw.url)).status_code == 200  # a place was given back


async def test_route_and_caller_caps_count_both_transports_and_free_up_when_sessions_end() -> None:
    yaml = mcp_yaml(stdio_target("solo"), maxSessions="3", maxSessionsPerCaller="2")
    async with run_gateway(yaml) as gw, client_from("127.0.0.1") as http:
        base = f"http://127.0.0.1:{gw.port}"
        async with http.stream("GET", f"{base}/sse", headers={"accept": "text/event-stream"}) as sse:
            assert sse.status_code == 200  # an SSE stream is a session too
            first = await open_session(http, gw.url)
            assert first.status_code == 200
            assert refused(await open_session(http, gw.url), 429, "maxSessionsPerCaller: 2")
            second_sse = await http.get(f"{base}/sse", headers={"accept": "text/event-stream"})
            assert refused(second_sse, 429, "maxSessionsPerCaller: 2")
            async with client_from("127.0.0.2") as other, client_from("127.0.0.3") as third:
                assert (await open_session(other, gw.url)).status_code == 200
                assert refused(await open_session(third, gw.url), 503, "maxSessions: 3")
        with anyio.fail_after(10):  # the stream closed: its place comes back
            while (again := await open_session(http, gw.url)).status_code != 200:  # bounded by fail_after
                await anyio.sleep(0.1)
        assert again.headers["mcp-session-id"]


async def test_callers_are_principals_when_authenticated() -> None:
    policies = "{apiKey: {keys: [{key: sk-a, metadata: {name: a}}, {key: sk-b, metadata: {name: b}}]}}"
    yaml = mcp_yaml(stdio_target("solo"), maxSessionsPerCaller="1", policies=policies)
    key_a = {**HEADERS, "authorization": "Bearer sk-a"}
    key_b = {**HEADERS, "authorization": "Bearer sk-b"}
    async with run_gateway(yaml) as gw, client_from("127.0.0.1") as http:
        assert (await open_session(http, gw.url, key_a)).status_code == 200
        assert refused(await open_session(http, gw.url, key_a), 429, "maxSessionsPerCaller: 1")
        assert (await open_session(http, gw.url, key_b)).status_code == 200  # same address, another principal


async def test_session_limits_are_checked_when_the_config_loads() -> None:
    from gateway.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="maxSessionsPerCaller"):
        parse_config(mcp_yaml(stdio_target("solo"), maxSessionsPerCaller="0"), "<test>")
    config = parse_config(mcp_yaml(stdio_target("solo"), maxSessions="null"), "<test>")
    assert config.mcp is not None and config.mcp.maxSessions is None and config.mcp.maxSessionsPerCaller == 64
    assert config.mcp.sessionIdleTimeout == 300  # an abandoned session (and its processes) lasts 5 minutes, not 30
