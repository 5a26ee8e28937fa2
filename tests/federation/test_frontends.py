"""Front ends other than streamable HTTP: legacy HTTP+SSE on every MCP route."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client

from tests.conftest import HEADERS, http_target, mcp_yaml, run_gateway, stdio_target

pytestmark = pytest.mark.anyio


async def sse_session_tools(url: str) -> tuple[str, set[str], str]:
    async with sse_client(url) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        tools = {t.name for t in (await session.list_tools()).tools}
        result = await session.call_tool(sorted(n for n in tools if n.endswith("whoami"))[0], {})
        return init.protocol_version, tools, result.content[0].text


async def test_sse_front_end_beside_streamable_http(upstream: Any) -> None:
    targets = stdio_target("local") + http_target("web", upstream("web", "mcp"))
    async with run_gateway(mcp_yaml(targets)) as gw:
        version, tools, answer = await sse_session_tools(f"http://127.0.0.1:{gw.port}/sse")
        assert version == "2025-11-25"
        assert {"local_echo", "web_echo"} <= tools
        assert answer == "local"


async def test_sse_stream_announces_messages_under_the_route_prefix() -> None:
    yaml = f"""
binds:
- port: 0
  listeners:
  - routes:
    - matches: [{{ path: {{ pathPrefix: /team }} }}]
      backends:
      - mcp:
          targets:{stdio_target("solo").replace(chr(10) + "  ", chr(10) + "          ")}
"""
    async with run_gateway(yaml) as gw:
        base = f"http://127.0.0.1:{gw.port}"
        async with httpx.AsyncClient(timeout=30) as http, http.stream("GET", f"{base}/team/sse") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    assert line.startswith("data: /team/messages/?session_id=")
                    break
        _, tools, answer = await sse_session_tools(f"{base}/team/sse")
        assert "echo" in tools and answer == "solo"


async def test_sse_front_end_checks_host() -> None:
    async with run_gateway(mcp_yaml(stdio_target("solo"))) as gw, httpx.AsyncClient(timeout=30) as http:
        response = await http.get(f"http://127.0.0.1:{gw.port}/sse", headers={**HEADERS, "host": "evil.example"})
        assert response.status_code == 421


async def test_list_changes_reach_every_sse_client() -> None:
    yaml = mcp_yaml(stdio_target("up") + "\n    sharing: shared")
    got = {"first": anyio.Event(), "second": anyio.Event()}

    def handler(name: str) -> Any:
        async def on_message(message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                got[name].set()

        return on_message

    async with run_gateway(yaml) as gw:
        url = f"http://127.0.0.1:{gw.port}/sse"
        async with (
            sse_client(url) as (r1, w1),
            ClientSession(r1, w1, message_handler=handler("first")) as first,
            sse_client(url) as (r2, w2),
            ClientSession(r2, w2, message_handler=handler("second")) as second,
        ):
            await first.initialize()
            await second.initialize()
            await first.list_tools()
            await second.list_tools()
            await first.call_tool("grow", {"name": "extra"})
            with anyio.fail_after(10):
                await got["first"].wait()
                await got["second"].wait()
