"""Server-to-client traffic on an upstream session that many 2026-07-28 clients share.

2026-07-28 clients have no session, so they share one upstream session per target. What that upstream
sends back (log messages, sampling, elicitation, roots requests) must reach the caller it belongs to,
or nobody: never whoever else happens to have a call open.
"""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from federation.spares import Spares
from tests.conftest import http_target, mcp_yaml, run_gateway, stdio_target

pytestmark = pytest.mark.anyio

TRANSPORTS = ["mcp", "stdio", "sse"]


def target(upstream: Any, transport: str, *extra: str) -> str:
    if transport == "stdio":
        return stdio_target("up", *extra)
    return http_target("up", upstream("up", transport, *extra), transport)


def modern(url: str, **callbacks: Any) -> Client:
    return Client(url, mode="2026-07-28", cache=None, **callbacks)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_log_messages_reach_only_their_caller(upstream: Any, transport: str) -> None:
    # A's tool logs three messages slowly while B's unrelated call is open on the same upstream session.
    heard: dict[str, list[str]] = {"a": [], "b": []}

    def collector(who: str) -> Any:
        async def on_log(params: types.LoggingMessageNotificationParams) -> None:
            heard[who].append(str(params.data))

        return on_log

    async with (
        run_gateway(mcp_yaml(target(upstream, transport))) as gw,
        modern(gw.url, logging_callback=collector("a"), log_level="debug") as a,
        modern(gw.url, logging_callback=collector("b"), log_level="debug") as b,
    ):
        results: dict[str, str] = {}

        async def call(who: str, client: Client, name: str, arguments: dict[str, Any]) -> None:
            results[who] = (await client.call_tool(name, arguments)).content[0].text  # type: ignore[union-attr]

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "b", b, "sleep", {"seconds": 1.5})
                await anyio.sleep(0.3)  # B's call is open first
                tg.start_soon(call, "a", a, "chatty", {"count": 3, "pause": 0.3})
            await anyio.sleep(0.2)  # anything sent late would have arrived by now
        assert results == {"a": "logged", "b": "slept 1.5"}
        assert heard == {"a": ["log 1", "log 2", "log 3"], "b": []}


async def test_log_messages_of_no_request_reach_nobody(upstream: Any) -> None:
    # Streamable HTTP: A's call has ended when its target logs on the standalone stream, for no request;
    # B's call is the only one open then, and must not get them. Nor does A (its request is over).
    heard: dict[str, list[str]] = {"a": [], "b": []}

    def collector(who: str) -> Any:
        async def on_log(params: types.LoggingMessageNotificationParams) -> None:
            heard[who].append(str(params.data))

        return on_log

    async with (
        run_gateway(mcp_yaml(target(upstream, "mcp"))) as gw,
        modern(gw.url, logging_callback=collector("a"), log_level="debug") as a,
        modern(gw.url, logging_callback=collector("b"), log_level="debug") as b,
    ):
        with anyio.fail_after(20):
            assert (await a.call_tool("chatty_later", {"count": 3, "delay": 0.3})).content[0].text == "later"
            assert (await b.call_tool("sleep", {"seconds": 1})).content[0].text == "slept 1.0"
    assert heard == {"a": [], "b": []}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_roots_asked_at_start_up_are_answered_by_the_gateway(upstream: Any, transport: str) -> None:
    # The target asks for roots right after `initialized`, for no call: no client is asked (this one
    # supports no roots, and its call must not fail for it); the gateway answers it with no roots.
    asked: list[str] = []

    async def roots(ctx: Any) -> types.ListRootsResult:
        asked.append("roots")
        return types.ListRootsResult(roots=[types.Root(uri="file:///client/only")])

    yaml = mcp_yaml(target(upstream, transport, "--roots-at-start"))
    async with run_gateway(yaml) as gw:
        with anyio.fail_after(20):
            async with modern(gw.url) as plain, modern(gw.url, list_roots_callback=roots) as other:
                assert (await plain.call_tool("whoami", {})).content[0].text == "up"
                assert (await plain.call_tool("startup_roots", {})).content[0].text == "roots: "
                # With a call open on the target's connection, a stdio or SSE target's next call gets a
                # connection of its own: what that one asks as it starts is no call's either.
                async with anyio.create_task_group() as tg:
                    tg.start_soon(other.call_tool, "sleep", {"seconds": 1})
                    await anyio.sleep(0.3)
                    assert (await plain.call_tool("startup_roots", {})).content[0].text == "roots: "
                    assert (await other.call_tool("startup_roots", {})).content[0].text == "roots: "
        assert asked == []


async def test_roots_asked_for_no_request_on_a_shared_http_connection(upstream: Any) -> None:
    # The SDK's `list_roots()` asks on the standalone stream, for no request. On the connection that
    # sessionless clients share that could be anyone's: the gateway answers (no roots), no client is asked.
    # A handshake-era session's own connection is its alone: its open call's client is asked.
    asked: list[str] = []

    async def roots(ctx: Any) -> types.ListRootsResult:
        asked.append("roots")
        return types.ListRootsResult(roots=[types.Root(uri="file:///client/only")])

    async with run_gateway(mcp_yaml(target(upstream, "mcp"))) as gw:
        with anyio.fail_after(20):
            async with modern(gw.url, list_roots_callback=roots) as shared:
                assert (await shared.call_tool("roots_unrelated", {})).content[0].text == "roots: "
            assert asked == []
            async with Client(gw.url, mode="legacy", cache=None, list_roots_callback=roots) as own:
                assert (await own.call_tool("roots_unrelated", {})).content[0].text == "roots: file:///client/only"
            assert asked == ["roots"]


async def _sampling_pairs(url: str, rounds: int) -> None:
    """Two clients sampling at once through one target, `rounds` times: each is asked only its own prompt
    and each call gets its own client's answer."""
    asked: dict[str, list[str]] = {"a": [], "b": []}

    def sampler(who: str) -> Any:
        async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
            prompt = params.messages[0].content.text  # type: ignore[union-attr]
            asked[who].append(prompt)
            await anyio.sleep(0.2)  # both questions are open at once
            text = f"{who} answers {prompt}"
            return types.CreateMessageResult(
                role="assistant", content=types.TextContent(type="text", text=text), model="t"
            )

        return sampling

    async with modern(url, sampling_callback=sampler("a")) as a, modern(url, sampling_callback=sampler("b")) as b:
        for n in range(rounds):
            results: dict[str, str] = {}

            async def call(who: str, client: Client, n: int = n, results: dict[str, str] = results) -> None:
                result = await client.call_tool("sample", {"prompt": f"{who}{n}"})
                results[who] = result.content[0].text  # type: ignore[union-attr]

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "a", a)
                tg.start_soon(call, "b", b)
            assert results == {"a": f"a answers a{n}", "b": f"b answers b{n}"}
    assert asked == {"a": [f"a{n}" for n in range(rounds)], "b": [f"b{n}" for n in range(rounds)]}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_concurrent_sampling_reaches_each_own_client(upstream: Any, transport: str) -> None:
    async with run_gateway(mcp_yaml(target(upstream, transport))) as gw:
        with anyio.fail_after(60):
            await _sampling_pairs(gw.url, rounds=10)


async def test_sampling_on_a_shared_stdio_process_is_refused_when_ambiguous(upstream: Any) -> None:
    # `sharing: shared`: one process for everyone, as configured. stdio carries no request relation, so
    # with two calls open a sampling request cannot be matched to either: refused, saying why.
    async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="s"), model="t")

    yaml = mcp_yaml(stdio_target("up") + "\n    sharing: shared")
    async with run_gateway(yaml) as gw, modern(gw.url) as busy, modern(gw.url, sampling_callback=sampling) as asker:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(busy.call_tool, "sleep", {"seconds": 2})
                await anyio.sleep(0.5)
                with pytest.raises(MCPError) as err:
                    await asker.call_tool("sample", {"prompt": "x"})
        message = err.value.message
        assert "cannot tell which client target 'up' is asking for sampling" in message
        assert "stdio" in message and "2 calls" in message


async def test_spares_are_reused_bounded_and_closed_when_idle(monkeypatch: Any) -> None:
    monkeypatch.setattr(Spares, "limit", 1)
    monkeypatch.setattr(Spares, "idle_seconds", 1.0)
    async with run_gateway(mcp_yaml(stdio_target("up"))) as gw, modern(gw.url) as client:
        federation = gw.gateway.federations[0][1]

        async def pid() -> int:
            return (await client.call_tool("pid", {})).structured_content["result"]  # type: ignore[index]

        with anyio.fail_after(30):
            shared = await pid()
            assert federation.status()["up"]["spares"] == 0
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "sleep", {"seconds": 1.5})  # on the shared process
                await anyio.sleep(0.3)
                spare = await pid()  # another call open: a process of its own
                assert spare != shared
                assert await pid() == spare  # given back, and lent again
                tg.start_soon(client.call_tool, "sleep", {"seconds": 1})  # holds the one spare allowed
                await anyio.sleep(0.3)
                assert federation.status()["up"]["spares"] == 1
                assert await pid() == shared  # past the limit: shares the target's connection
            while federation.status()["up"]["spares"]:  # idle for a second: closed
                await anyio.sleep(0.1)
            assert await pid() == shared
            assert federation.restarts().get("up", 0) == 0  # a spare's start is no restart


def legacy(url: str, **callbacks: Any) -> Client:
    return Client(url, mode="legacy", cache=None, **callbacks)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_session_own_upstream_asks_its_client_outside_any_call(upstream: Any, transport: str) -> None:
    # A handshake-era session's own upstream is opened by its first call; what it asks as it starts is
    # the session's client's to answer (on the session's channel), though no call's.
    async def roots(ctx: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///client/only")])

    async with run_gateway(mcp_yaml(target(upstream, transport, "--roots-at-start"))) as gw:
        with anyio.fail_after(20):
            async with legacy(gw.url, list_roots_callback=roots) as own:
                text = (await own.call_tool("startup_roots", {})).content[0].text  # type: ignore[union-attr]
    assert text == "roots: file:///client/only"


async def test_a_session_with_calls_open_on_its_own_stdio_upstream_gets_its_traffic(upstream: Any) -> None:
    # Two calls of one handshake-era session on its own stdio process: which call a message is about
    # cannot be told, but whose it is can: the session's. Both samplings are answered, the logs arrive.
    heard: list[str] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        heard.append(str(params.data))

    async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        prompt = params.messages[0].content.text  # type: ignore[union-attr]
        await anyio.sleep(0.2)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=f"got {prompt}"), model="t"
        )

    results: list[str] = []
    async with (
        run_gateway(mcp_yaml(stdio_target("up"))) as gw,
        legacy(gw.url, sampling_callback=sampling, logging_callback=on_log, log_level="debug") as own,
    ):

        async def call(name: str, arguments: dict[str, Any]) -> None:
            results.append((await own.call_tool(name, arguments)).content[0].text)  # type: ignore[union-attr]

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "sample", {"prompt": "one"})
                tg.start_soon(call, "sample", {"prompt": "two"})
                tg.start_soon(call, "chatty", {"count": 3, "pause": 0.1})
            await anyio.sleep(0.2)
    assert sorted(results) == ["got one", "got two", "logged"]
    assert heard == ["log 1", "log 2", "log 3"]
