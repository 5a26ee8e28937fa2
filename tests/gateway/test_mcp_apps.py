"""MCP Apps (`io.modelcontextprotocol/ui`) through the gateway, as the reference federates them: a tool's UI
is a `ui://` resource; with several targets its URI carries the target in the authority
(`ui://<target>+<rest>`), in the tool's `_meta` (both forms) and for resources/read; a caller who may not
read the UI does not see the tool's `_meta` pointing at it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from federation.catalog import Naming
from tests.conftest import http_target, mcp_yaml, run_gateway, sdk_session, stdio_target
from tests.npm_cache import node22, npm_package

pytestmark = pytest.mark.anyio

UI = "ui://weather/dashboard.html"




def test_ui_uris_carry_the_target_in_their_authority() -> None:
    naming = Naming(("a", "b"))
    assert naming.uri("a", UI) == "ui://a+weather/dashboard.html"
    assert naming.uri("a", "UI://weather+x/y?q=1#f") == "ui://a+weather+x/y?q=1#f"
    assert naming.uri("a", "mem://static") == "a+mem://static"
    assert naming.split_uri("ui://a+weather/dashboard.html") == ("a", UI)
    assert naming.split_uri("ui://a+weather+x/y?q=1#f") == ("a", "ui://weather+x/y?q=1#f")
    for unknown in ("ui://weather/dashboard.html", "ui://+weather/x", "ui://c+weather/x", "ui://host/a+b"):
        assert naming.split_uri(unknown) is None, unknown
    assert Naming(("a",)).uri("a", UI) == UI  # one target: nothing is prefixed


async def test_an_apps_ui_is_found_and_read_through_a_prefixed_tool(upstream: Any) -> None:
    targets = http_target("weather", upstream("weather", "mcp", "--app")) + stdio_target("other")
    async with run_gateway(mcp_yaml(targets)) as gw, sdk_session(gw.url) as session:
        tool = next(t for t in (await session.list_tools()).tools if t.name == "weather_dashboard")
        exposed = "ui://weather+weather/dashboard.html"
        assert tool.meta == {"ui": {"resourceUri": exposed}, "ui/resourceUri": exposed}
        read = await session.read_resource(tool.meta["ui"]["resourceUri"])
        assert read.contents[0].text == "<html><body>weather</body></html>"
        assert str(read.contents[0].uri) == exposed and read.contents[0].mime_type == "text/html;profile=mcp-app"
        listed = {str(r.uri) for r in (await session.list_resources()).resources}
        assert exposed in listed
        assert (await session.call_tool("weather_dashboard", {})).content[0].text == "sunny"


async def test_a_ui_the_caller_may_not_read_is_not_advertised(upstream: Any) -> None:
    targets = http_target("weather", upstream("weather", "mcp", "--app")) + stdio_target("other")
    rules = [{"deny": 'has(mcp.resource) && mcp.resource.uri.startsWith("ui://")'}, "true"]
    policies = json.dumps({"mcpAuthorization": {"rules": rules}})
    async with run_gateway(mcp_yaml(targets, policies=policies)) as gw, sdk_session(gw.url) as session:
        tool = next(t for t in (await session.list_tools()).tools if t.name == "weather_dashboard")
        assert tool.meta is None  # both forms stripped: a host would show a UI it cannot load
        with pytest.raises(MCPError):
            await session.read_resource("ui://weather+weather/dashboard.html")
        assert (await session.call_tool("weather_dashboard", {})).content[0].text == "sunny"


async def test_the_mcp_apps_example_server_from_npm_through_a_prefixed_gateway() -> None:
    """npm's @modelcontextprotocol/server-basic-vanillajs (the ext-apps example) behind two-target federation."""
    node = node22()
    server = npm_package(
        "mcp-apps",
        "@modelcontextprotocol/server-basic-vanillajs@2.0.3",
        "@modelcontextprotocol/server-basic-vanillajs/dist/index.js",
        "an MCP App server nobody here wrote",
    )
    app = f"""
  - name: apps
    stdio: {{ cmd: "{node}", args: ["{server}", "--stdio"] }}"""
    async with run_gateway(mcp_yaml(app + stdio_target("other"))) as gw, sdk_session(gw.url) as session:
        tool = next(t for t in (await session.list_tools()).tools if t.name == "apps_get-time")
        exposed = "ui://apps+get-time/mcp-app.html"
        assert tool.meta == {"ui": {"resourceUri": exposed}, "ui/resourceUri": exposed}
        read = await session.read_resource(exposed)
        assert str(read.contents[0].uri) == exposed and "<html" in read.contents[0].text.lower()
        assert read.contents[0].mime_type == "text/html;profile=mcp-app"
        assert exposed in {str(r.uri) for r in (await session.list_resources()).resources}
        assert "time" in (await session.call_tool("apps_get-time", {})).structured_content
