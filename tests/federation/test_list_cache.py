"""Lists come from each target's cache, not from a fan-out per client list: kept until the target says
they changed, its session is replaced or their time is up (its own 2026-07-28 `ttlMs` when it gives one)."""

from __future__ import annotations

import os
import signal

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.conftest import mcp_yaml, run_gateway, stdio_target

pytestmark = pytest.mark.anyio

ERAS = ["legacy", "2026-07-28"]


async def _pages_served(client: Client, target: str) -> int:
    return (await client.call_tool(f"{target}_tools_list_calls", {})).structured_content["result"]


async def _names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


def _walk(names: set[str], target: str, page: int = 10) -> int:
    """Pages in one walk of `target`'s tools/list."""
    return -(-sum(name.startswith(f"{target}_") for name in names) // page)


@pytest.mark.parametrize("mode", ERAS)
async def test_lists_are_kept_until_the_target_says_they_changed(mode: str) -> None:
    # One shared process counts every tools/list page it answers (its ~30 tools in pages of 10).
    targets = stdio_target("counted", "--page-size", "10") + "\n    sharing: shared" + stdio_target("other")
    async with run_gateway(mcp_yaml(targets)) as gw, Client(gw.url, mode=mode, cache=None) as client:
        for _ in range(5):
            names = await _names(client)
            assert "counted_echo" in names
        walk = await _pages_served(client, "counted")
        assert walk == _walk(names, "counted")  # one walk of the target, however many clients lists

        await client.call_tool("counted_grow", {"name": "fresh"})  # adds a tool, says the list changed
        with anyio.fail_after(10):
            while "counted_fresh" not in await _names(client):
                await anyio.sleep(0.05)
        again = await _pages_served(client, "counted")
        assert again >= 2 * walk  # listed anew after the change
        for _ in range(5):
            assert "counted_fresh" in await _names(client)
        assert await _pages_served(client, "counted") == again  # and kept again


@pytest.mark.parametrize(("ttl_ms", "walks"), [(0, 4), (60_000, 1)])
async def test_a_modern_targets_cache_hint_is_honoured(ttl_ms: int, walks: int) -> None:
    """`ttlMs: 0` says a list is stale at once: every client list asks the target again."""
    target = stdio_target("hinted", "--page-size", "10", "--list-ttl-ms", str(ttl_ms))
    target += "\n    sharing: shared\n    era: modern"
    async with run_gateway(mcp_yaml(target + stdio_target("other"))) as gw, Client(gw.url, cache=None) as client:
        for _ in range(4):
            names = await _names(client)
            assert "hinted_echo" in names
        assert await _pages_served(client, "hinted") == _walk(names, "hinted") * walks


async def test_a_restarted_target_is_listed_anew() -> None:
    """A new session may bring other tools: the cache of the old one is dropped."""
    targets = stdio_target("counted", "--page-size", "10") + "\n    sharing: shared" + stdio_target("other")
    async with run_gateway(mcp_yaml(targets)) as gw, Client(gw.url, mode="legacy", cache=None) as client:
        walk = _walk(await _names(client), "counted")
        pid = (await client.call_tool("counted_pid", {})).structured_content["result"]
        os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(15):
            while True:  # until the target is back (a failed call or list in between is expected)
                try:
                    if (await client.call_tool("counted_pid", {})).structured_content["result"] != pid:
                        break
                except MCPError:  # the target is down for now
                    pass
                await anyio.sleep(0.2)
        before = await _pages_served(client, "counted")  # the new process's count (its start-up may list)
        await _names(client)
        await _names(client)
        assert await _pages_served(client, "counted") == before + walk  # listed anew once, then kept
