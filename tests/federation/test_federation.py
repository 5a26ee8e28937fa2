"""The federated virtual server end to end: real upstreams (stdio, SSE, streamable HTTP), real gateway."""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.conftest import http_target, mcp_yaml, run_gateway, stdio_target

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "2026-07-28"]


def text(result: Any) -> str:
    return result.content[0].text


@pytest.mark.parametrize("mode", ERAS)
async def test_three_transports_federated_in_both_eras(upstream: Any, mode: str) -> None:
    targets = http_target("web", upstream("web", "mcp")) + http_target("old", upstream("old", "sse"), "sse")
    targets += stdio_target("local")
    async with run_gateway(mcp_yaml(targets)) as gw, Client(gw.url, mode=mode, cache=None) as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
        names = {t.name for t in (await client.list_tools()).tools}
        for target in ("web", "old", "local"):
            assert {f"{target}_echo", f"{target}_whoami", f"{target}_get_time"} <= names
            result = await client.call_tool(f"{target}_whoami", {})
            assert text(result) == target
        assert text(await client.call_tool("old_echo", {"text": "hi"})) == "old: hi"
        assert (await client.call_tool("web_add", {"a": 2, "b": 40})).structured_content == {"result": 42}


@pytest.mark.parametrize("mode", ERAS)
async def test_prompts_resources_templates_and_completions(upstream: Any, mode: str) -> None:
    targets = http_target("web", upstream("web", "mcp")) + stdio_target("local")
    async with run_gateway(mcp_yaml(targets)) as gw, Client(gw.url, mode=mode, cache=None) as client:
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert {"web_greet", "local_greet"} <= prompts
        got = await client.get_prompt("local_greet", {"name": "Ada"})
        assert "Hello, Ada from local" in got.messages[0].content.text

        uris = {r.uri for r in (await client.list_resources()).resources}
        assert {"web+mem://static", "local+mem://static"} <= uris
        read = await client.read_resource("local+mem://static")
        assert read.contents[0].text == "static from local"
        assert read.contents[0].uri == "local+mem://static"

        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert "web+mem://item/{id}" in templates
        item = await client.read_resource("web+mem://item/42")
        assert item.contents[0].text == "item 42 from web"

        from mcp_types import PromptReference, ResourceTemplateReference

        done = await client.complete(
            ResourceTemplateReference(uri="web+mem://item/{id}"), {"name": "id", "value": "ap"}
        )
        assert done.completion.values == ["apple", "apricot"]
        named = await client.complete(PromptReference(name="local_greet"), {"name": "name", "value": "A"})
        assert set(named.completion.values) == {"Ada", "Alan"}


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize("transport", ["mcp", "stdio"])
async def test_progress_and_logging_reach_the_caller(upstream: Any, mode: str, transport: str) -> None:
    target = stdio_target("up") if transport == "stdio" else http_target("up", upstream("up", "mcp"))
    progress: list[tuple[float, float | None, str | None]] = []
    logs: list[Any] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append((p, total, message))

    async def on_log(params: Any) -> None:
        logs.append(params.data)

    async with (
        run_gateway(mcp_yaml(target)) as gw,
        Client(gw.url, mode=mode, cache=None, logging_callback=on_log, log_level="debug") as client,
    ):
        await client.list_tools()  # a known name: HTTP targets take the relay for handshake-era clients
        result = await client.call_tool("progress", {"steps": 3}, progress_callback=on_progress)
        assert text(result) == "done"
        assert [p[0] for p in progress] == [1, 2, 3]
        assert all(p[1] == 3 for p in progress)
        result = await client.call_tool("chatty", {"count": 3})
        assert text(result) == "logged"
        assert [str(d) for d in logs][-3:] == ["log 1", "log 2", "log 3"]


async def test_single_target_conditional_prefix_is_bare(upstream: Any) -> None:
    async with run_gateway(mcp_yaml(stdio_target("solo"))) as gw, Client(gw.url, mode="legacy", cache=None) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert "echo" in names and "solo_echo" not in names
        assert text(await c.call_tool("echo", {"text": "x"})) == "solo: x"
        assert (await c.read_resource("mem://static")).contents[0].text == "static from solo"


async def test_prefix_always_and_separator(upstream: Any) -> None:
    yaml = mcp_yaml(stdio_target("solo"), prefixMode="always", separator='"."')
    async with run_gateway(yaml) as gw, Client(gw.url, mode="legacy", cache=None) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert "solo.echo" in names and "echo" not in names
        assert text(await c.call_tool("solo.get_time", {})).strip() != ""


async def test_prefix_never_reports_collisions_and_keeps_the_first(upstream: Any, caplog: Any) -> None:
    targets = http_target("first", upstream("first", "mcp")) + http_target("second", upstream("second", "mcp"))
    async with run_gateway(mcp_yaml(targets, prefixMode="never")) as gw, Client(gw.url, mode="legacy", cache=None) as c:
        names = [t.name for t in (await c.list_tools()).tools]
        assert names.count("whoami") == 1
        assert text(await c.call_tool("whoami", {})) == "first"
    assert any("collides" in r.getMessage() and "'whoami'" in r.getMessage() for r in caplog.records)


async def test_underscores_in_target_and_tool_names_route_exactly(upstream: Any) -> None:
    # "my_srv" + "_" + "get_time" could be split three ways; the catalog never splits.
    targets = http_target("my_srv", upstream("my_srv", "mcp")) + http_target("my", upstream("my", "mcp"))
    async with run_gateway(mcp_yaml(targets)) as gw, Client(gw.url, mode="legacy", cache=None) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"my_srv_whoami", "my_whoami", "my_srv_get_time"} <= names
        assert text(await c.call_tool("my_srv_whoami", {})) == "my_srv"
        assert text(await c.call_tool("my_whoami", {})) == "my"


async def test_unknown_tool_is_a_clear_protocol_error(upstream: Any) -> None:
    async with run_gateway(mcp_yaml(stdio_target("solo"))) as gw, Client(gw.url, mode="legacy", cache=None) as c:
        with pytest.raises(MCPError) as err:
            await c.session.call_tool("nope", {})
        assert err.value.code == -32602
        assert "Unknown tool: nope" in err.value.message
        assert text(await c.call_tool("echo", {"text": "still here"})) == "solo: still here"


async def test_tool_errors_pass_through(upstream: Any) -> None:
    async with run_gateway(mcp_yaml(stdio_target("solo"))) as gw, Client(gw.url, mode="legacy", cache=None) as c:
        result = await c.call_tool("fail", {})
        assert result.is_error is True


async def test_modern_tool_calls_do_not_fan_out_a_tools_list(upstream: Any) -> None:
    targets = stdio_target("a") + http_target("b", upstream("b", "mcp"))
    async with run_gateway(mcp_yaml(targets)) as gw, Client(gw.url, cache=None) as client:
        assert client.protocol_version == "2026-07-28"
        await client.list_tools()
        federation = gw.gateway.federations[0][1]
        refreshes: list[str] = []
        original = federation.refresh

        async def counting(kind: Any) -> Any:
            refreshes.append(kind)
            return await original(kind)

        federation.refresh = counting  # type: ignore[method-assign]
        for i in range(3):
            assert text(await client.call_tool("a_echo", {"text": str(i)})) == f"a: {i}"
            assert text(await client.call_tool("b_echo", {"text": str(i)})) == f"b: {i}"
        assert refreshes == []


@pytest.mark.parametrize("mode", ERAS)
async def test_paged_upstream_lists_completely_with_a_merged_cursor(upstream: Any, mode: str) -> None:
    targets = stdio_target("paged", "--extra-tools", "300", "--page-size", "50") + stdio_target("small")
    async with run_gateway(mcp_yaml(targets)) as gw, Client(gw.url, mode=mode, cache=None) as client:
        names: list[str] = []
        cursor = None
        for _ in range(20):  # bounded: 330 tools in pages of 200
            result = await client.session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
            names += [t.name for t in result.tools]
            cursor = result.next_cursor
            if cursor is None:
                break
        assert len(names) == len(set(names))
        assert {f"paged_t{i:03d}" for i in range(300)} <= set(names)
        assert {"paged_echo", "small_echo"} <= set(names)
        assert (await client.call_tool("paged_t299", {})).is_error is False
        with pytest.raises(MCPError) as err:
            await client.session.list_tools(params=types.PaginatedRequestParams(cursor="200.000000000000"))
        assert "list again" in err.value.message


@pytest.mark.parametrize("mode", ERAS)
async def test_a_paginated_walk_lists_each_target_once(upstream: Any, mode: str) -> None:
    # 1,000 tools in upstream pages of 100, served by the gateway in pages of 200: six client pages that
    # once cost six walks of the target (66 upstream pages) now cost one.
    # One shared process counts every page: a session's lists and its calls would otherwise reach two.
    targets = stdio_target("many", "--extra-tools", "1000", "--page-size", "100") + "\n    sharing: shared"
    targets += stdio_target("small")
    async with run_gateway(mcp_yaml(targets)) as gw, Client(gw.url, mode=mode, cache=None) as client:
        names: list[str] = []
        cursor = None
        for _ in range(20):  # bounded: about 1,020 tools in pages of 200
            result = await client.session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
            names += [t.name for t in result.tools]
            cursor = result.next_cursor
            if cursor is None:
                break
        assert cursor is None and len(names) == len(set(names)) > 1000
        served = (await client.call_tool("many_tools_list_calls", {})).structured_content["result"]
        assert served == -(-sum(name.startswith("many_") for name in names) // 100)  # one walk: 11 pages


@pytest.mark.parametrize("transport", ["mcp", "stdio"])
async def test_cancellation_reaches_the_target_that_owns_the_call(upstream: Any, transport: str) -> None:
    target = stdio_target("up") if transport == "stdio" else http_target("up", upstream("up", "mcp"))
    async with (
        run_gateway(mcp_yaml(target + stdio_target("other"))) as gw,
        Client(gw.url, mode="legacy", cache=None) as c,
    ):
        await c.list_tools()
        await c.call_tool("up_echo", {"text": "warm"})  # the session's own upstream is up before the timed call
        with anyio.move_on_after(1):  # abandoning the call makes the SDK client send notifications/cancelled
            await c.session.call_tool("up_sleep", {"seconds": 30})
        with anyio.fail_after(10):
            while (await c.call_tool("up_cancellations", {})).structured_content["result"] != 1:
                await anyio.sleep(0.1)  # bounded by fail_after
        assert (await c.call_tool("other_cancellations", {})).structured_content["result"] == 0
        assert text(await c.call_tool("up_echo", {"text": "after"})) == "up: after"


@pytest.mark.parametrize("mode", ERAS)
async def test_resource_links_in_results_point_through_the_gateway(upstream: Any, mode: str) -> None:
    targets = http_target("web", upstream("web", "mcp")) + stdio_target("local")
    async with run_gateway(mcp_yaml(targets)) as gw, Client(gw.url, mode=mode, cache=None) as client:
        await client.list_tools()  # handshake-era calls to "web" then take the relay
        for target in ("web", "local"):
            link, embedded = (await client.call_tool(f"{target}_link", {})).content
            assert link.uri == f"{target}+mem://static"
            assert embedded.resource.uri == f"{target}+mem://static"
            followed = await client.read_resource(link.uri)
            assert followed.contents[0].text == f"static from {target}"
