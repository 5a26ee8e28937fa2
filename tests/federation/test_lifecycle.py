"""Upstream sessions follow client sessions: a process per client by default, shared on request,
closed when the client's session ends or idles out, restarted with growing back-off."""

from __future__ import annotations

import os
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from protocols.mcp.errors import UpstreamError
from protocols.mcp.upstream import NoEvents, TargetSpec, Upstream
from tests.conftest import HEADERS, INIT, free_port, http_target, mcp_yaml, run_gateway, stdio_target

pytestmark = pytest.mark.anyio


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/status") as status:
            return "zombie" not in status.read()
    except FileNotFoundError:
        return False


async def gone(pid: int, seconds: float = 15) -> bool:
    with anyio.move_on_after(seconds):
        while alive(pid):  # bounded by move_on_after
            await anyio.sleep(0.1)
    return not alive(pid)


async def pid_of(client: Client, tool: str = "pid") -> int:
    return int((await client.call_tool(tool, {})).structured_content["result"])


async def test_each_client_session_gets_its_own_process_which_ends_with_it() -> None:
    async with run_gateway(mcp_yaml(stdio_target("solo"))) as gw:
        async with (
            Client(gw.url, mode="legacy", cache=None) as first,
            Client(gw.url, mode="legacy", cache=None) as second,
        ):
            one, two = await pid_of(first), await pid_of(second)
            assert one != two
            assert await pid_of(first) == one  # the same session keeps its process
            async with Client(gw.url, cache=None) as modern:  # 2026-07-28: no session, the shared process
                shared = await pid_of(modern)
            assert shared not in (one, two)
        assert await gone(one) and await gone(two)  # the client sessions ended (DELETE): so did their processes
        assert alive(shared)


async def test_shared_targets_serve_every_session_from_one_process(upstream: Any) -> None:
    yaml = mcp_yaml(stdio_target("solo") + "\n    sharing: shared")
    async with (
        run_gateway(yaml) as gw,
        Client(gw.url, mode="legacy", cache=None) as first,
        Client(gw.url, mode="legacy", cache=None) as second,
    ):
        assert await pid_of(first) == await pid_of(second)


async def test_http_targets_get_a_session_per_client_that_is_deleted_with_it(upstream: Any) -> None:
    async with run_gateway(mcp_yaml(http_target("web", upstream("web", "mcp")))) as gw:
        federation = gw.gateway.federations[0][1]
        async with (
            Client(gw.url, mode="legacy", cache=None) as first,
            Client(gw.url, mode="legacy", cache=None) as second,
        ):
            await first.list_tools()
            await second.list_tools()
            assert federation.status()["web"]["sessions"] == 2
        with anyio.fail_after(10):
            while federation.status()["web"]["sessions"]:  # bounded by fail_after
                await anyio.sleep(0.1)


async def test_idle_sessions_are_reaped_with_their_processes() -> None:
    yaml = mcp_yaml(stdio_target("solo"), sessionIdleTimeout="1s")
    async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
        init = await http.post(gw.url, json=INIT, headers=HEADERS)
        headers = {**HEADERS, "mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        await http.post(gw.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "pid", "arguments": {}}}
        answer = await http.post(gw.url, json=call, headers=headers)
        pid = int(answer.text.split('"result":')[-1].split("}")[0])
        assert await gone(pid, seconds=20)  # idle for 1 s: session reaped, process ended
        again = await http.post(gw.url, json=call, headers=headers)
        assert again.status_code == 404  # the client re-initializes


async def test_back_off_grows_while_a_target_keeps_failing() -> None:
    spec = TargetSpec(name="gone", transport="mcp", url=f"http://127.0.0.1:{free_port()}/mcp")
    up = Upstream(spec, NoEvents())
    up.first_retry, up.last_retry = 0.05, 0.4
    waits: list[float] = []
    async with up.running():
        for _ in range(6):  # bounded
            with pytest.raises(UpstreamError):
                await up.session()
            waits.append(up.retry_after)
            await anyio.sleep(up.retry_after + 0.02)
    assert waits[:4] == [0.05, 0.1, 0.2, 0.4] and waits[-1] == 0.4
