"""Upstream sessions follow client sessions: a process per client by default, shared on request,
closed when the client's session ends or idles out, restarted with growing back-off."""

from __future__ import annotations

import os
import subprocess
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


def stdio_pids(marker: str) -> set[int]:
    """This test's stdio upstreams: they carry `--port <marker>` (ignored by the stdio transport)."""
    pattern = f"tests.fixtures.upstream --name .* --transport stdio --port {marker}$"
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, timeout=10).stdout
    return {int(p) for p in out.split()}


async def test_a_session_opens_its_own_upstream_session_on_its_first_call_into_that_target(upstream: Any) -> None:
    """The attack was initialize after initialize (no DELETE), each starting a process per stdio target and
    an upstream session per HTTP target; a session that only initializes and lists now costs neither."""
    marker = str(10000 + os.getpid() % 10000)
    targets = stdio_target("one", "--port", marker) + stdio_target("two", "--port", marker)
    async with (
        run_gateway(mcp_yaml(targets + http_target("web", upstream("web", "mcp")))) as gw,
        httpx.AsyncClient(timeout=30) as http,
    ):
        federation = gw.gateway.federations[0][1]
        shared = stdio_pids(marker)
        assert len(shared) == 2  # one per target, for lists and 2026-07-28 clients
        sessions = []
        for _ in range(5):  # bounded
            init = await http.post(gw.url, json=INIT, headers=HEADERS)
            assert init.status_code == 200
            headers = {**HEADERS, "mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
            await http.post(gw.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
            listed = await http.post(gw.url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=headers)
            assert "one_pid" in listed.text and "web_pid" in listed.text
            sessions.append(headers)
        assert stdio_pids(marker) == shared
        assert [state["sessions"] for state in federation.status().values()] == [0, 0, 0]

        call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "one_pid", "arguments": {}}}
        first = await http.post(gw.url, json=call, headers=sessions[0])
        own = int(first.text.split('"result":')[-1].split("}")[0])
        assert own not in shared and stdio_pids(marker) == {*shared, own}  # that target's, for that session only
        again = await http.post(gw.url, json=call, headers=sessions[0])
        assert int(again.text.split('"result":')[-1].split("}")[0]) == own
        assert [state["sessions"] for state in federation.status().values()] == [1, 0, 0]


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
            assert federation.status()["web"]["sessions"] == 0  # lists come from the shared upstream
            await first.call_tool("whoami", {})
            await second.call_tool("whoami", {})
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
