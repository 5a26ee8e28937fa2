"""The raw tools/call relay (handshake-era client, streamable-HTTP target): same answers as the SDK path."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.conftest import HEADERS, INIT, http_target, mcp_yaml, run_gateway, stdio_target

pytestmark = pytest.mark.anyio


async def open_session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    init = await http.post(url, json=INIT, headers=HEADERS)
    assert init.status_code == 200, init.text
    headers = {**HEADERS, "mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    return headers


def call(request_id: Any, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments or {}}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def test_plain_call_is_relayed_as_json_with_the_callers_id(upstream: Any) -> None:
    targets = http_target("web", upstream("web", "mcp")) + stdio_target("local")
    async with run_gateway(mcp_yaml(targets)) as gw, httpx.AsyncClient(timeout=30) as http:
        headers = await open_session(http, gw.url)
        await http.post(gw.url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=headers)
        first = await http.post(gw.url, json=call("first", "web_echo", {"text": "hi"}), headers=headers)
        assert first.headers["content-type"].startswith("text/event-stream")  # opens the session's own upstream
        relayed = await http.post(gw.url, json=call("abc", "web_echo", {"text": "hi"}), headers=headers)
        assert relayed.headers["content-type"].startswith("application/json")  # the relay, not the SDK's SSE
        body = relayed.json()
        assert body["id"] == "abc" and body["result"]["content"][0]["text"] == "web: hi"
        assert relayed.headers["mcp-session-id"] == headers["mcp-session-id"]
        via_sdk = await http.post(gw.url, json=call(7, "local_echo", {"text": "hi"}), headers=headers)
        assert via_sdk.headers["content-type"].startswith("text/event-stream")  # stdio targets take the SDK path
        assert '"local: hi"' in via_sdk.text


async def test_relay_keeps_the_sdk_checks(upstream: Any) -> None:
    async with (
        run_gateway(mcp_yaml(http_target("web", upstream("web", "mcp")))) as gw,
        httpx.AsyncClient(timeout=30) as http,
    ):
        headers = await open_session(http, gw.url)
        evil = await http.post(gw.url, json=call(1, "echo", {"text": "x"}), headers={**headers, "host": "evil.example"})
        assert evil.status_code == 421
        stale = await http.post(gw.url, json=call(2, "echo"), headers={**headers, "mcp-session-id": "nope"})
        assert stale.status_code == 404
        unknown = await http.post(gw.url, json=call(3, "missing"), headers=headers)
        assert "Unknown tool: missing" in unknown.text and "-32602" in unknown.text
        wrong_accept = await http.post(gw.url, json=call(4, "echo"), headers={**headers, "accept": "text/html"})
        assert wrong_accept.status_code == 406


@pytest.mark.parametrize("transport", ["mcp", "stdio"])
async def test_sampling_and_elicitation_reach_the_caller(upstream: Any, transport: str) -> None:
    target = stdio_target("up") if transport == "stdio" else http_target("up", upstream("up", "mcp"))

    async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked = params.messages[0].content.text
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=f"sampled {asked}"), model="test"
        )

    async def elicitation(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"answer": "forty-two"})

    async with (
        run_gateway(mcp_yaml(target)) as gw,
        Client(gw.url, mode="legacy", cache=None, sampling_callback=sampling, elicitation_callback=elicitation) as c,
    ):
        sampled = await c.call_tool("sample", {"prompt": "a poem"})
        assert "sampled a poem" in sampled.content[0].text
        answered = await c.call_tool("ask", {"question": "what?"})
        assert "forty-two" in answered.content[0].text


async def test_relay_timeout_names_the_target_and_the_session_lives(upstream: Any) -> None:
    yaml = mcp_yaml(http_target("slow", upstream("slow", "mcp")), policies="{ timeout: { backendRequestTimeout: 1s } }")
    async with run_gateway(yaml) as gw, Client(gw.url, mode="legacy", cache=None) as c:
        with anyio.fail_after(20), pytest.raises(MCPError) as err:
            await c.session.call_tool("sleep", {"seconds": 5})
        assert "target 'slow'" in err.value.message and "timed out after 1s" in err.value.message
        assert (await c.call_tool("whoami", {})).content[0].text == "slow"


async def test_concurrent_relayed_calls_each_get_their_own_answer(upstream: Any) -> None:
    async with run_gateway(mcp_yaml(http_target("web", upstream("web", "mcp")))) as gw:
        results: dict[int, str] = {}

        async def session(n: int) -> None:
            async with Client(gw.url, mode="legacy", cache=None) as c:
                for i in range(10):
                    result = await c.call_tool("echo", {"text": f"{n}-{i}"})
                    assert result.content[0].text == f"web: {n}-{i}"
                results[n] = "ok"

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for n in range(8):
                    tg.start_soon(session, n)
        assert len(results) == 8


async def test_server_to_client_requests_during_one_call_reach_the_caller_together(upstream: Any) -> None:
    """Each sampling request is relayed as it comes, not after the caller answered the one before."""
    count, arrived, everyone = 3, [], anyio.Event()

    async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        arrived.append(params)
        if len(arrived) == count:
            everyone.set()
        with anyio.fail_after(5):
            await everyone.wait()  # answered only once all are in: one-at-a-time relaying never gets here
        text = f"s{params.messages[0].content.text}"
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text=text), model="t")

    async with (
        run_gateway(mcp_yaml(http_target("up", upstream("up", "mcp")))) as gw,
        Client(gw.url, mode="legacy", cache=None, sampling_callback=sampling) as c,
    ):
        await c.list_tools()  # a listed tool: the call takes the raw relay
        with anyio.fail_after(20):
            result = await c.call_tool("sample_many", {"count": count})
        assert result.content[0].text == "sp0 sp1 sp2"
