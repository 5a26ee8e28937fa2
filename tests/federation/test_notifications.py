"""Changes travel to the clients: list_changed and resources/updated, in both downstream eras."""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client

from tests.conftest import http_server, http_target, mcp_yaml, run_gateway, stdio_target

pytestmark = pytest.mark.anyio


def targets(upstream: Any, transport: str) -> str:
    first = stdio_target("up") if transport == "stdio" else http_target("up", upstream("up", "mcp"))
    return first + stdio_target("other")


@pytest.mark.parametrize("transport", ["mcp", "stdio"])
async def test_tool_list_changes_reach_handshake_clients(upstream: Any, transport: str) -> None:
    seen: list[Any] = []
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            seen.append(message)
            changed.set()

    async with (
        run_gateway(mcp_yaml(targets(upstream, transport))) as gw,
        Client(gw.url, mode="legacy", cache=None, message_handler=on_message) as client,
    ):
        init_caps = client.session.server_capabilities
        assert init_caps is not None and init_caps.tools is not None and init_caps.tools.list_changed is True
        await client.list_tools()
        assert (await client.call_tool("up_grow", {"name": "fresh"})).content[0].text == "added fresh"
        with anyio.fail_after(10):
            await changed.wait()
        names = {t.name for t in (await client.list_tools()).tools}
        assert "up_fresh" in names
        assert (await client.call_tool("up_fresh", {"text": "x"})).content[0].text == "up fresh: x"


async def test_changes_sent_on_a_relayed_calls_own_stream_reach_the_client(upstream: Any) -> None:
    """The session's second call into an HTTP target takes the raw relay; a list_changed or resources/updated
    the target sends on that call's stream is handled as on the SDK path (catalog refreshed, client told)."""
    changed = anyio.Event()
    updated: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()
        elif isinstance(message, types.ResourceUpdatedNotification):
            updated.append(str(message.params.uri))

    async with (
        run_gateway(mcp_yaml(targets(upstream, "mcp"))) as gw,
        Client(gw.url, mode="legacy", cache=None, message_handler=on_message) as client,
    ):
        await client.list_tools()
        # the first call opens the session's upstream (SDK path); the next takes the raw relay
        assert (await client.call_tool("up_echo", {"text": "warm"})).content[0].text == "up: warm"
        assert (await client.call_tool("up_grow_here", {"name": "near"})).content[0].text == "added near"
        with anyio.fail_after(10):
            await changed.wait()
        assert "up_near" in {t.name for t in (await client.list_tools()).tools}
        assert (await client.call_tool("up_near", {"text": "x"})).content[0].text == "up near: x"

        await client.session.subscribe_resource("up+mem://static")
        await client.call_tool("up_touch_here", {"uri": "mem://static"})
        with anyio.fail_after(10):
            while not updated:  # bounded by fail_after
                await anyio.sleep(0.05)
        assert updated == ["up+mem://static"]


async def test_a_handshake_client_listing_through_the_shared_upstream_hears_of_its_changes(upstream: Any) -> None:
    """Until it calls a target, a session lists it through the shared upstream, so that one's changes are its too."""
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with (
        run_gateway(mcp_yaml(targets(upstream, "stdio"))) as gw,
        Client(gw.url, mode="legacy", cache=None, message_handler=on_message) as legacy,
        Client(gw.url, cache=None) as modern,  # 2026-07-28: served by the shared upstreams
    ):
        assert "up_shared" not in {t.name for t in (await legacy.list_tools()).tools}
        await modern.call_tool("up_grow", {"name": "shared"})
        with anyio.fail_after(10):
            await changed.wait()
        assert "up_shared" in {t.name for t in (await legacy.list_tools()).tools}


async def test_tool_list_changes_reach_modern_listeners(upstream: Any) -> None:
    async with run_gateway(mcp_yaml(targets(upstream, "mcp"))) as gw, Client(gw.url, cache=None) as client:
        assert client.protocol_version == "2026-07-28"
        await client.list_tools()
        async with client.listen(tools_list_changed=True) as subscription:
            await client.call_tool("up_grow", {"name": "later"})
            with anyio.fail_after(10):
                async for event in subscription:
                    assert type(event).__name__ == "ToolsListChanged"
                    break
        assert "up_later" in {t.name for t in (await client.list_tools()).tools}


@pytest.mark.parametrize("transport", ["mcp", "stdio"])
async def test_resource_updates_reach_subscribers_only(upstream: Any, transport: str) -> None:
    updates: dict[str, list[str]] = {"sub": [], "bystander": []}

    def collector(name: str) -> Any:
        async def on_message(message: Any) -> None:
            if isinstance(message, types.ResourceUpdatedNotification):
                updates[name].append(str(message.params.uri))

        return on_message

    async with (
        run_gateway(mcp_yaml(targets(upstream, transport))) as gw,
        Client(gw.url, mode="legacy", cache=None, message_handler=collector("sub")) as sub,
        Client(gw.url, mode="legacy", cache=None, message_handler=collector("bystander")) as bystander,
    ):
        await sub.session.subscribe_resource("up+mem://static")
        await bystander.list_tools()
        await sub.call_tool("up_touch", {"uri": "mem://static"})
        with anyio.fail_after(10):
            while not updates["sub"]:  # bounded by fail_after
                await anyio.sleep(0.05)
        assert updates["sub"] == ["up+mem://static"]
        await anyio.sleep(0.3)
        assert updates["bystander"] == []


@pytest.mark.parametrize("transport", ["mcp", "stdio"])
async def test_list_changes_of_a_modern_upstream_reach_clients(upstream: Any, transport: str) -> None:
    seen = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            seen.set()

    first = stdio_target("up") if transport == "stdio" else http_target("up", upstream("up", "mcp"))
    yaml = mcp_yaml(first + "\n    era: modern" + stdio_target("other"))
    async with (
        run_gateway(yaml) as gw,
        Client(gw.url, mode="legacy", cache=None, message_handler=on_message) as client,
    ):
        await client.list_tools()
        await client.call_tool("up_grow", {"name": "newer"})
        with anyio.fail_after(10):
            await seen.wait()
        assert "up_newer" in {t.name for t in (await client.list_tools()).tools}


@pytest.mark.parametrize("transport", ["mcp", "stdio"])
async def test_resource_updates_reach_modern_listeners(upstream: Any, transport: str) -> None:
    async with (
        run_gateway(mcp_yaml(targets(upstream, transport))) as gw,
        Client(gw.url, cache=None) as client,
        client.listen(resource_subscriptions=["up+mem://static"]) as subscription,
    ):
        await client.call_tool("up_touch", {"uri": "mem://other"})  # not watched: no event
        await client.call_tool("up_touch", {"uri": "mem://static"})
        with anyio.fail_after(10):
            async for event in subscription:
                assert type(event).__name__ == "ResourceUpdated"
                assert event.uri == "up+mem://static"
                break


async def test_an_unsubscribe_cannot_end_what_others_listen_to() -> None:
    """A client that never subscribed, unsubscribing a resource a 2026-07-28 client listens to on the same
    (shared) upstream session, changes nothing upstream."""
    with http_server("tests.fixtures.recording_upstream") as url:
        async with (
            run_gateway(mcp_yaml(http_target("rec", url) + "\n    sharing: shared")) as gw,
            Client(gw.url, cache=None) as listener,
            Client(gw.url, mode="legacy", cache=None) as other,
        ):
            with anyio.fail_after(30):
                async with listener.listen(resource_subscriptions=["mem://open"]) as subscription:
                    await other.session.unsubscribe_resource("mem://open")
                    received = (await other.call_tool("received", {})).content[0].text
                    assert received == "resources/subscribe mem://open"
                    await listener.call_tool("touch", {"uri": "mem://open"})
                    async for event in subscription:
                        assert event.uri == "mem://open"
                        break
