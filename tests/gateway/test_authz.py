"""mcpAuthorization: denied tools, prompts and resources vanish from lists and answer like unknown names."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

from tests.conftest import HEADERS, ROOT, http_server, http_target, mcp_yaml, run_gateway, stdio_target
from tests.gateway.test_auth import SIGNER, bearer, call, jwt_policy, rpc, session

pytestmark = pytest.mark.anyio


def request(method: str, request_id: int = 1, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


async def names(http: httpx.AsyncClient, url: str, headers: dict[str, str], method: str, field: str) -> set[str]:
    result = rpc(await http.post(url, json=request(method), headers=headers))["result"]
    key = {"resources": "uri", "resourceTemplates": "uriTemplate"}.get(field, "name")
    return {item[key] for item in result[field]}


async def test_rules_filter_every_list_and_hidden_items_are_unknown(upstream: Any) -> None:
    rules = [
        'jwt.sub == "admin"',
        'mcp.tool.name == "echo" && mcp.tool.target in ["web", "local"]',
        'mcp.tool.target == "web" && mcp.tool.original == "add"',
        'mcp.prompt.target == "local" && mcp.prompt.name == "greet"',
        'has(mcp.resource.uri) && mcp.resource.target == "web"',
        {"deny": 'mcp.tool.exposedName == "web_echo" && jwt.sub == "mallory"'},
    ]
    policy = jwt_policy()[:-1] + f", mcpAuthorization: {{rules: {json.dumps(rules)}}}}}"
    targets = http_target("web", upstream("web", "mcp")) + stdio_target("local")
    async with run_gateway(mcp_yaml(targets, policies=policy)) as gw, httpx.AsyncClient(timeout=30) as http:
        admin = await session(http, gw.url, bearer(SIGNER.token("admin")))
        alice = await session(http, gw.url, bearer(SIGNER.token("alice")))
        mallory = await session(http, gw.url, bearer(SIGNER.token("mallory")))
        every_tool = await names(http, gw.url, admin, "tools/list", "tools")
        assert {"web_echo", "web_add", "local_echo", "local_add", "web_whoami"} <= every_tool
        assert await names(http, gw.url, alice, "tools/list", "tools") == {"web_echo", "local_echo", "web_add"}
        assert await names(http, gw.url, mallory, "tools/list", "tools") == {"local_echo", "web_add"}
        assert await names(http, gw.url, alice, "prompts/list", "prompts") == {"local_greet"}
        assert await names(http, gw.url, alice, "resources/list", "resources") == {"web+mem://static"}
        assert await names(http, gw.url, alice, "resources/templates/list", "resourceTemplates") == {
            "web+mem://item/{id}"
        }

        # A hidden tool answers exactly like a tool that does not exist, on the relay and the SDK path.
        for hidden, missing in (("web_whoami", "web_nosuch"), ("local_add", "local_nosuch")):
            denied = rpc(await http.post(gw.url, json=call(hidden), headers=alice))
            unknown = rpc(await http.post(gw.url, json=call(missing), headers=alice))
            assert denied["error"] == {**unknown["error"], "message": unknown["error"]["message"].replace(missing, hidden)}
            assert denied["error"]["code"] == -32602 and denied["error"]["message"] == f"Unknown tool: {hidden}"
        denied = rpc(await http.post(gw.url, json=call("web_echo", text="x"), headers=mallory))
        assert denied["error"]["message"] == "Unknown tool: web_echo"
        assert "web: ok" in json.dumps(rpc(await http.post(gw.url, json=call("web_echo", text="ok"), headers=alice)))

        hidden_prompt = rpc(await http.post(gw.url, json=request("prompts/get", name="web_greet"), headers=alice))
        missing_prompt = rpc(await http.post(gw.url, json=request("prompts/get", name="web_nope"), headers=alice))
        assert hidden_prompt["error"]["code"] == missing_prompt["error"]["code"]
        assert hidden_prompt["error"]["message"] == "Unknown prompt: web_greet"
        hidden_read = rpc(await http.post(gw.url, json=request("resources/read", uri="local+mem://static"), headers=alice))
        assert hidden_read["error"] == {"code": -32002, "message": "Resource not found: local+mem://static"}
        read = rpc(await http.post(gw.url, json=request("resources/read", uri="web+mem://item/7"), headers=alice))
        assert "result" in read


async def test_require_and_deny_apply_at_every_level(upstream: Any) -> None:
    """A listener-level require and a route-level allow: both must pass (a deny anywhere wins)."""
    url = upstream("web", "mcp")
    policy = jwt_policy()[1:-1]
    yaml = f"""
binds:
- port: 0
  listeners:
  - name: main
    policies: {{ {policy}, mcpAuthorization: {{ rules: [{{require: 'jwt.tier == "gold"'}}] }} }}
    routes:
    - name: tools
      matches: [{{path: {{exact: /mcp}}}}]
      policies: {{ mcpAuthorization: {{ rules: [{{deny: 'mcp.tool.name == "add"'}}] }} }}
      backends:
      - mcp: {{ targets: [{{name: web, mcp: {{host: "{url}"}}}}] }}
"""
    async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
        gold = await session(http, gw.url, bearer(SIGNER.token("ann", tier="gold")))
        plain = await session(http, gw.url, bearer(SIGNER.token("bob")))
        gold_tools = await names(http, gw.url, gold, "tools/list", "tools")
        assert "echo" in gold_tools and "add" not in gold_tools
        assert await names(http, gw.url, plain, "tools/list", "tools") == set()


async def test_rules_work_over_sse_and_for_2026_clients(upstream: Any) -> None:
    from mcp import Client
    from mcp.client.sse import sse_client

    policy = "{mcpAuthorization: {rules: ['mcp.tool.name == \"echo\"']}}"
    async with run_gateway(mcp_yaml(http_target("web", upstream("web", "mcp")), policies=policy)) as gw:
        async with Client(gw.url) as modern:  # 2026-07-28, sessionless
            assert [t.name for t in (await modern.list_tools()).tools] == ["echo"]
            with pytest.raises(BaseException) as caught:
                await modern.call_tool("add", {"a": 1, "b": 2})
            assert "Unknown tool: add" in repr(caught.value) or "Unknown tool: add" in str(
                getattr(caught.value, "exceptions", [caught.value])[0]
            )
        base = gw.url.rsplit("/", 1)[0]
        async with sse_client(f"{base}/sse") as (read, write), ClientSession(read, write) as legacy:
            await legacy.initialize()
            assert [t.name for t in (await legacy.list_tools()).tools] == ["echo"]
            with pytest.raises(MCPError, match="Unknown tool: add"):
                await legacy.call_tool("add", {"a": 1, "b": 2})


async def test_rules_on_the_stdio_front_end(tmp_path: Path) -> None:
    """No HTTP request on stdio: rules over mcp.* work, and caller rules simply do not match."""
    config = tmp_path / "gw.yaml"
    rules = ["mcp.tool.original == 'echo'", "jwt.sub == 'admin'"]
    config.write_text(
        f"mcp:\n  port: 0\n  policies: {{mcpAuthorization: {{rules: {json.dumps(rules)}}}}}\n"
        f"  targets:{stdio_target('one')}{stdio_target('two')}\n"
    )
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "gateway.cli", "stdio", "-f", str(config)], cwd=str(ROOT)
    )
    with anyio.fail_after(60):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
            await client.initialize()
            assert sorted(t.name for t in (await client.list_tools()).tools) == ["one_echo", "two_echo"]
            with pytest.raises(MCPError, match="Unknown tool: one_add"):
                await client.call_tool("one_add", {"a": 1, "b": 2})
            shown = await client.call_tool("two_echo", {"text": "hi"})
            assert "two: hi" in str(shown.content)


async def test_unauthenticated_requests_never_reach_rules(upstream: Any) -> None:
    policy = jwt_policy()[:-1] + ", mcpAuthorization: {rules: ['true']}}"
    async with run_gateway(mcp_yaml(http_target("web", upstream("web", "mcp")), policies=policy)) as gw, httpx.AsyncClient(timeout=30) as http:
        response = await http.post(gw.url, json=request("tools/list"), headers=HEADERS)
        assert response.status_code == 401


async def test_rules_apply_to_every_method() -> None:
    """`deny: mcp.method == ...` (or a `require` that fails) refuses logging/setLevel, ping, prompts/list and
    resources/unsubscribe like methods the gateway does not serve, and they never reach the target; allow
    rules over items do not gate methods."""
    rules = [
        {"deny": 'mcp.method == "logging/setLevel"'},
        {"deny": 'mcp.method == "ping"'},
        {"deny": 'mcp.method == "resources/unsubscribe"'},
        {"require": 'mcp.method != "prompts/list"'},
        'mcp.tool.name == "received"',
        "has(mcp.resource)",
    ]
    with http_server("tests.fixtures.recording_upstream") as url:
        yaml = mcp_yaml(http_target("rec", url), policies=f"{{mcpAuthorization: {{rules: {json.dumps(rules)}}}}}")
        async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
            client = await session(http, gw.url, HEADERS)
            assert await names(http, gw.url, client, "tools/list", "tools") == {"received"}
            unserved = rpc(await http.post(gw.url, json=request("nosuch/method"), headers=client))["error"]
            assert unserved == {"code": -32601, "message": "Method not found", "data": "nosuch/method"}
            for method, params in (("logging/setLevel", {"level": "error"}), ("ping", {}), ("prompts/list", {})):
                refused = rpc(await http.post(gw.url, json=request(method, **params), headers=client))
                assert refused["error"] == {**unserved, "data": method}, method
            subscribed = await http.post(gw.url, json=request("resources/subscribe", uri="mem://open"), headers=client)
            assert rpc(subscribed)["result"] == {}
            refused = rpc(await http.post(gw.url, json=request("resources/unsubscribe", uri="mem://open"), headers=client))
            assert refused["error"] == {"code": -32002, "message": "Resource not found: mem://open"}
            received = rpc(await http.post(gw.url, json=call("received"), headers=client))
            assert received["result"]["content"][0]["text"] == "resources/subscribe mem://open"
            # The client and the gateway are fine: the session still serves.
            assert "result" in rpc(await http.post(gw.url, json=request("resources/list"), headers=client))


async def test_a_listener_is_not_subscribed_to_a_denied_resource() -> None:
    """A 2026-07-28 `subscriptions/listen` naming a denied resource neither subscribes it upstream nor
    hears of it; the resources it may see still work."""
    from mcp import Client

    rules = [{"deny": 'has(mcp.resource) && mcp.resource.uri == "mem://secret"'}]
    with http_server("tests.fixtures.recording_upstream") as url:
        yaml = mcp_yaml(http_target("rec", url), policies=f"{{mcpAuthorization: {{rules: {json.dumps(rules)}}}}}")
        async with run_gateway(yaml) as gw, Client(gw.url, cache=None) as client:
            with anyio.fail_after(30):
                async with client.listen(resource_subscriptions=["mem://secret", "mem://open"]) as subscription:
                    await client.call_tool("touch", {"uri": "mem://secret"})
                    await client.call_tool("touch", {"uri": "mem://open"})
                    async for event in subscription:
                        assert type(event).__name__ == "ResourceUpdated"
                        assert event.uri == "mem://open"  # mem://secret's update, sent first, never arrives
                        break
                    received = (await client.call_tool("received", {})).content[0].text
            assert received == "resources/subscribe mem://open"
