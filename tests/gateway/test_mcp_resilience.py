"""`timeout` and `retry` on MCP routes: they bound and protect each message to a target, never the session.

A timed-out call gets a JSON-RPC error naming its target and the session goes on; `retry` reopens a
target's connection but never sends a message twice (a tools/call may have done its work).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError

from protocols.mcp import upstream as upstream_module
from tests.conftest import PY, ROOT, http_target, mcp_yaml, run_gateway, sdk_session, stdio_target

pytestmark = pytest.mark.anyio




async def text(session: ClientSession, tool: str, arguments: dict[str, Any] | None = None) -> str:
    result = await session.call_tool(tool, arguments or {})
    return str(result.content[0].text)  # type: ignore[union-attr]


async def until_cancelled(session: ClientSession, tool: str) -> None:
    with anyio.fail_after(10):  # the upstream hears of the cancellation a moment after the error
        while await text(session, tool) != "1":
            await anyio.sleep(0.05)


async def test_a_slow_call_times_out_at_the_tighter_timeout_and_the_session_lives() -> None:
    """SDK path (stdio target): requestTimeout 1 s is tighter than backendRequestTimeout 30 s."""
    policies = "{ timeout: { requestTimeout: 1s, backendRequestTimeout: 30s } }"
    async with run_gateway(mcp_yaml(stdio_target("slow"), policies=policies)) as gw, sdk_session(gw.url) as s:
        with anyio.fail_after(10), pytest.raises(MCPError) as err:
            await s.call_tool("sleep", {"seconds": 5})
        assert "target 'slow'" in err.value.message and "timed out after 1s" in err.value.message
        assert await text(s, "whoami") == "slow"
        await until_cancelled(s, "cancellations")


async def test_the_request_timeout_bounds_a_relayed_call_too(upstream: Any) -> None:
    """Relay path (handshake-era client, streamable-HTTP target) with only requestTimeout set."""
    yaml = mcp_yaml(http_target("web", upstream("web", "mcp")), policies="{ timeout: { requestTimeout: 1s } }")
    async with run_gateway(yaml) as gw, sdk_session(gw.url) as s:
        await s.list_tools()  # the catalog is known: calls take the relay from now on
        with anyio.fail_after(10), pytest.raises(MCPError) as err:
            await s.call_tool("sleep", {"seconds": 5})
        assert "target 'web'" in err.value.message and "timed out after 1s" in err.value.message
        assert await text(s, "whoami") == "web"
        await until_cancelled(s, "cancellations")


async def test_a_failing_tools_call_runs_exactly_once_whatever_the_retry_policy(upstream: Any) -> None:
    targets = stdio_target("local") + http_target("web", upstream("web", "mcp"))
    policies = "{ retry: { attempts: 5, backoff: 10ms, codes: [500, 502, 503, 504] } }"
    async with run_gateway(mcp_yaml(targets, policies=policies)) as gw, sdk_session(gw.url) as s:
        await s.list_tools()
        for target in ("local", "web"):
            failed = await s.call_tool(f"{target}_bump", {})
            assert failed.is_error and "counted, then failed" in failed.content[0].text  # type: ignore[union-attr]
            assert await text(s, f"{target}_bumps") == "1"


FLAKY = """
import os, sys
marker = sys.argv[1]
with open(marker, "a") as f:
    f.write("spawned\\n")
if open(marker).read().count("spawned") == 1:
    sys.exit(1)  # the first start fails
os.execv(sys.executable, [sys.executable, "-m", "tests.fixtures.upstream", "--name", "flaky", "--transport", "stdio"])
"""


async def test_retry_reopens_a_target_whose_first_start_failed(tmp_path: Path) -> None:
    script, marker = tmp_path / "flaky.py", tmp_path / "spawns"
    script.write_text(FLAKY)
    target = f"""
  - name: flaky
    stdio: {{ cmd: "{PY}", args: ["{script}", "{marker}"], cwd: "{ROOT}" }}"""
    policies = "{ retry: { attempts: 3, backoff: 50ms, codes: [503] } }"
    async with run_gateway(mcp_yaml(target, policies=policies)) as gw:
        federation = gw.gateway.federations[0][1]
        assert federation.status()["flaky"]["connected"]  # on the second try, before the gateway served
        assert marker.read_text().count("spawned") == 2
        async with sdk_session(gw.url) as s:
            assert await text(s, "whoami") == "flaky"


async def test_a_silent_sse_target_keeps_its_session(upstream: Any, monkeypatch: Any, caplog: Any) -> None:
    """An SSE target's event stream may stay silent for as long as it likes (this one sends no keep-alive
    comments): the SDK's `sse_read_timeout` (300 s, 1 s here) does not end the session, so a call after
    the silence succeeds at once, on the same upstream session, with nothing logged at ERROR."""
    monkeypatch.setattr(upstream_module, "sse_client", functools.partial(sse_client, sse_read_timeout=1.0))
    url = upstream("quiet", "sse", "--sse-ping", "0")
    sessions = url.removesuffix("/sse") + "/sse-sessions"  # how many SSE sessions the target has served
    async with (
        run_gateway(mcp_yaml(http_target("quiet", url, "sse"))) as gw,
        sdk_session(gw.url) as s,
        httpx2.AsyncClient(timeout=10) as http,
    ):
        assert await text(s, "whoami") == "quiet"
        opened = (await http.get(sessions)).text
        await anyio.sleep(3)  # three read timeouts' worth of silence
        assert await text(s, "whoami") == "quiet"
        assert (await http.get(sessions)).text == opened
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
