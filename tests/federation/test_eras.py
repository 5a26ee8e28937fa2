"""Server-to-client requests across protocol eras: every upstream era x every client era.

Handshake-era upstreams ask mid-call (`sample`, `ask`); 2026-07-28 upstreams ask through
InputRequiredResult (`sample_any_era`, `ask_any_era` use the SDK's Resolve). The gateway bridges both
ways: it parks a handshake-era call for a 2026-07-28 client, and answers a 2026-07-28 upstream's
InputRequiredResult by asking a handshake-era client directly.
"""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.conftest import http_target, mcp_yaml, run_gateway, stdio_target

pytestmark = pytest.mark.anyio

CLIENT_ERAS = {"handshake": "legacy", "modern": "2026-07-28"}


async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    asked = params.messages[0].content.text
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=f"sampled {asked}"), model="test"
    )


async def elicitation(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    if isinstance(params, types.ElicitRequestURLParams):  # URL mode: the user went to the page
        return types.ElicitResult(action="accept" if params.url.startswith("https://") else "decline")
    return types.ElicitResult(action="accept", content={"answer": "forty-two"})


async def roots(ctx: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])


def client(url: str, era: str) -> Client:
    return Client(
        url,
        mode=CLIENT_ERAS[era],
        cache=None,
        sampling_callback=sampling,
        elicitation_callback=elicitation,
        list_roots_callback=roots,
    )


def target(upstream: Any, transport: str, era: str) -> str:
    yaml = stdio_target("up") if transport == "stdio" else http_target("up", upstream("up", "mcp"))
    return yaml + f"\n    era: {era}"


@pytest.mark.parametrize("client_era", list(CLIENT_ERAS))
@pytest.mark.parametrize("transport", ["mcp", "stdio"])
async def test_handshake_upstream_asks_any_client(upstream: Any, transport: str, client_era: str) -> None:
    async with run_gateway(mcp_yaml(target(upstream, transport, "handshake"))) as gw, client(gw.url, client_era) as c:
        assert "sampled a poem" in (await c.call_tool("sample", {"prompt": "a poem"})).content[0].text
        assert "forty-two" in (await c.call_tool("ask", {"question": "what?"})).content[0].text
        assert (await c.call_tool("roots", {})).content[0].text == "roots: file:///work/project"
        assert (await c.call_tool("visit", {"url": "https://example.test/login"})).content[0].text == "visit: accept"
        assert (await c.call_tool("whoami", {})).content[0].text == "up"  # plain calls still plain


@pytest.mark.parametrize("client_era", list(CLIENT_ERAS))
@pytest.mark.parametrize("transport", ["mcp", "stdio"])
async def test_modern_upstream_asks_any_client(upstream: Any, transport: str, client_era: str) -> None:
    async with run_gateway(mcp_yaml(target(upstream, transport, "modern"))) as gw, client(gw.url, client_era) as c:
        asked = await c.call_tool("ask_any_era", {"question": "what?"})
        assert asked.content[0].text == "answered: forty-two"
        sampled = await c.call_tool("sample_any_era", {"prompt": "a haiku"})
        assert sampled.content[0].text == "sampled: sampled a haiku"
        listed = await c.call_tool("roots_any_era", {})
        assert listed.content[0].text == "roots: file:///work/project"


async def test_a_forged_request_state_is_refused(upstream: Any) -> None:
    async with run_gateway(mcp_yaml(stdio_target("up"))) as gw, Client(gw.url, cache=None) as client:
        with pytest.raises(MCPError) as refused:
            await client.session.call_tool("whoami", {}, request_state="agentplex-park-nope")
        assert (refused.value.error.code, refused.value.error.message) == (-32602, "Invalid or expired requestState")
        assert (await client.call_tool("whoami", {})).content[0].text == "up"


async def test_an_ambiguous_request_fails_clearly(upstream: Any) -> None:
    # One shared stdio process, two clients with calls in flight: stdio carries no request relation,
    # so a sampling request cannot be matched to either caller and is refused with a clear error.
    yaml = mcp_yaml(stdio_target("up") + "\n    sharing: shared")
    async with (
        run_gateway(yaml) as gw,
        Client(gw.url, mode="legacy", cache=None, sampling_callback=sampling) as busy,
        Client(gw.url, mode="legacy", cache=None, sampling_callback=sampling) as asker,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(busy.call_tool, "sleep", {"seconds": 2})
            await anyio.sleep(0.5)
            with pytest.raises(MCPError) as err:
                await asker.call_tool("sample", {"prompt": "x"})
        assert "cannot tell which client target 'up' is asking for sampling" in err.value.message
        alone = await asker.call_tool("sample", {"prompt": "y"})  # unambiguous again
        assert "sampled y" in alone.content[0].text


@pytest.mark.parametrize("client_era", list(CLIENT_ERAS))
@pytest.mark.parametrize("transport", ["mcp", "stdio"])
async def test_modern_upstream_logs_reach_any_client(upstream: Any, transport: str, client_era: str) -> None:
    """A 2026-07-28 upstream logs only for requests that opt in: the gateway opts in for its caller."""
    logs: list[tuple[str, Any, str | None]] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append((params.level, params.data, params.logger))

    # A 2026-07-28 client opts in per request itself (log_level); a handshake-era one gets every level.
    opt_in = {"log_level": "debug"} if client_era == "modern" else {}
    async with (
        run_gateway(mcp_yaml(target(upstream, transport, "modern"))) as gw,
        Client(gw.url, mode=CLIENT_ERAS[client_era], cache=None, logging_callback=on_log, **opt_in) as c,
    ):
        assert (await c.call_tool("chatty", {"count": 3})).content[0].text == "logged"
        assert logs == [("info", f"log {i}", "up") for i in (1, 2, 3)]
        if client_era == "handshake":  # the level a handshake-era client sets is its opt-in
            await c.session.set_logging_level("warning")
            assert (await c.call_tool("chatty", {"count": 3})).content[0].text == "logged"
            assert len(logs) == 3
