"""CEL rules see the names the targets use, as in the reference: `mcp.tool.name == "add"` with
`mcp.tool.target == "web"`, never `"web_add"`; the name clients see is `mcp.tool.exposedName`."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import http_target, mcp_yaml, run_gateway, stdio_target
from tests.gateway.test_auth import HEADERS, call, rpc, session

pytestmark = pytest.mark.anyio


def _policies(*rules: Any) -> str:
    return json.dumps({"mcpAuthorization": {"rules": list(rules)}})


async def _listed(http: httpx.AsyncClient, url: str, headers: dict[str, str], method: str, key: str) -> set[str]:
    answer = rpc(await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method}, headers=headers))
    field = "uriTemplate" if key == "resourceTemplates" else ("uri" if key == "resources" else "name")
    return {item[field] for item in answer["result"][key]}


async def test_reference_rules_over_two_targets(upstream: Any) -> None:
    """A reference config's allow and deny rules keep their meaning when two targets are federated."""
    targets = http_target("web", upstream("web", "mcp")) + stdio_target("local")
    policies = _policies(
        {"deny": 'mcp.tool.name == "add" && mcp.tool.target == "local"'},
        {"deny": 'mcp.tool.exposedName == "web_whoami"'},
        'mcp.tool.name == "add" || mcp.tool.name == "whoami"',
        'mcp.prompt.name == "greet" && mcp.prompt.target == "web"',
        'mcp.resource.uri == "mem://static" && mcp.resource.exposedUri.startsWith("local+")',
        # a template is listed under its template, read under the URI asked for
        'mcp.resource.target == "web" && (mcp.resource.name == "mem://item/{id}" || mcp.resource.uri == "mem://item/7")',
    )
    async with run_gateway(mcp_yaml(targets, policies=policies)) as gw, httpx.AsyncClient(timeout=30) as http:
        caller = await session(http, gw.url, HEADERS)
        assert await _listed(http, gw.url, caller, "tools/list", "tools") == {"web_add", "local_whoami"}
        assert await _listed(http, gw.url, caller, "prompts/list", "prompts") == {"web_greet"}
        assert await _listed(http, gw.url, caller, "resources/list", "resources") == {"local+mem://static"}
        templates = await _listed(http, gw.url, caller, "resources/templates/list", "resourceTemplates")
        assert templates == {"web+mem://item/{id}"}

        added = rpc(await http.post(gw.url, json=call("web_add", a=2, b=3), headers=caller))
        assert added["result"]["content"][0]["text"] == "5"
        for denied in ("local_add", "web_whoami", "web_echo"):  # a deny, an exposedName deny, no allow
            refused = rpc(await http.post(gw.url, json=call(denied, a=1, b=1), headers=caller))
            assert refused["error"]["message"] == f"Unknown tool: {denied}", refused
        read = {"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": "web+mem://item/7"}}
        assert "item 7 from web" in (await http.post(gw.url, json=read, headers=caller)).text
        read["params"]["uri"] = "web+mem://item/8"
        assert "Resource not found: web+mem://item/8" in (await http.post(gw.url, json=read, headers=caller)).text


async def test_rate_limit_keys_read_the_target_names(upstream: Any) -> None:
    """A key over `mcp.tool.name` groups a tool's calls across targets, as the reference's descriptors do."""
    limit = {"maxTokens": 1, "tokensPerFill": 1, "fillInterval": "60s", "methods": ["tools/call"], "key": "mcp.tool.name"}
    targets = http_target("web", upstream("web", "mcp")) + stdio_target("local")
    async with (
        run_gateway(mcp_yaml(targets, policies=json.dumps({"localRateLimit": [limit]}))) as gw,
        httpx.AsyncClient(timeout=30) as http,
    ):
        caller = await session(http, gw.url, HEADERS)
        assert "result" in rpc(await http.post(gw.url, json=call("web_echo", text="x"), headers=caller))
        limited = rpc(await http.post(gw.url, json=call("local_echo", text="x"), headers=caller))
        assert limited["error"]["code"] == -32029, limited  # one bucket: "echo"
        assert "result" in rpc(await http.post(gw.url, json=call("local_add", a=1, b=2), headers=caller))
