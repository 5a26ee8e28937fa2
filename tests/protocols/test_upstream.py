"""Upstream connectors on their own: each transport, each era, reconnection."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import anyio
import pytest

from protocols.mcp.errors import UpstreamError
from protocols.mcp.upstream import NoEvents, TargetSpec, Upstream
from tests.conftest import PY, ROOT, free_port, stop, wait_for_port

pytestmark = pytest.mark.anyio


def stdio_spec(name: str, **kw: Any) -> TargetSpec:
    args = ("-m", "tests.fixtures.upstream", "--name", name, "--transport", "stdio")
    return TargetSpec(name=name, transport="stdio", command=PY, args=args, cwd=str(ROOT), **kw)


@pytest.mark.parametrize(
    ("era", "version"), [("handshake", "2025-11-25"), ("modern", "2026-07-28"), ("auto", "2026-07-28")]
)
@pytest.mark.parametrize("transport", ["mcp", "stdio"])
async def test_each_era_over_each_transport(upstream: Any, era: str, version: str, transport: str) -> None:
    if transport == "stdio":
        spec = stdio_spec("e", era=era)
    else:
        spec = TargetSpec(name="e", transport="mcp", url=upstream("e", "mcp"), era=era)
    async with Upstream(spec, NoEvents()).running() as up:
        session = await up.session()
        assert session.protocol_version == version
        result = await up.request("tools/call", lambda s: s.call_tool("whoami", {}))
        assert result.content[0].text == "e"


async def test_sse_transport_lists_everything(upstream: Any) -> None:
    spec = TargetSpec(name="s", transport="sse", url=upstream("s", "sse"))
    async with Upstream(spec, NoEvents()).running() as up:
        tools = await up.list_all("tools/list")
        assert {"echo", "whoami", "get_time"} <= {t.name for t in tools}
        assert [p.name for p in await up.list_all("prompts/list")] == ["greet"]


def established_to(port: int) -> list[int]:
    """The timer (/proc/net/tcp `tr`: 0 none, 1 retransmit, 2 keep-alive) of each established IPv4
    connection to `port` on this machine."""
    timers = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, timer = fields[2], fields[3], fields[5]
        if int(remote.split(":")[1], 16) == port and state == "01":
            timers.append(int(timer.split(":")[0], 16))
    return timers


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's socket table")
async def test_an_sse_targets_connections_use_tcp_keepalive(upstream: Any) -> None:
    """Its event stream has no read timeout (it may rightly stay silent): TCP keep-alive notices a peer that
    vanished without closing its connections."""
    url = upstream("s", "sse", "--sse-ping", "0")
    async with Upstream(TargetSpec(name="s", transport="sse", url=url), NoEvents()).running() as up:
        await up.request("tools/call", lambda s: s.call_tool("whoami", {}))
        timers = established_to(urlparse(url).port or 80)
        assert timers and set(timers) == {2}, timers


async def test_stdio_env_is_passed_explicitly() -> None:
    spec = stdio_spec("envy", env={"AGENTPLEX_TEST_VALUE": "from-config"})
    async with Upstream(spec, NoEvents()).running() as up:
        result = await up.request("tools/call", lambda s: s.call_tool("getenv", {"name": "AGENTPLEX_TEST_VALUE"}))
        assert result.content[0].text == "from-config"


async def test_unreachable_target_error_names_it_and_backs_off() -> None:
    spec = TargetSpec(name="gone", transport="mcp", url=f"http://127.0.0.1:{free_port()}/mcp")
    async with Upstream(spec, NoEvents()).running() as up:
        with pytest.raises(UpstreamError) as first:
            await up.session()
        assert "target 'gone' cannot connect: ConnectError" in first.value.message
        with pytest.raises(UpstreamError) as second:
            await up.session()
        assert "retrying in" in second.value.message


async def test_missing_command_is_a_clear_error() -> None:
    spec = TargetSpec(name="ghost", transport="stdio", command="/nonexistent/server")
    async with Upstream(spec, NoEvents()).running() as up:
        with pytest.raises(UpstreamError) as err:
            await up.session()
        assert "target 'ghost' cannot connect: FileNotFoundError" in err.value.message


async def test_a_session_the_restarted_server_forgot_is_reported_down_then_reopened() -> None:
    port = free_port()
    command = [PY, "-m", "tests.fixtures.upstream", "--name", "phoenix", "--transport", "http", "--port", str(port)]
    proc = subprocess.Popen(command, cwd=ROOT)
    try:
        wait_for_port(port, proc)
        spec = TargetSpec(name="phoenix", transport="mcp", url=f"http://127.0.0.1:{port}/mcp")
        async with Upstream(spec, NoEvents()).running() as up:
            await up.session()
            stop(proc)
            proc = subprocess.Popen(command, cwd=ROOT)
            wait_for_port(port, proc)
            with anyio.fail_after(15):  # the SDK's GET stream reconnects within a second or two and gets a 404
                for _ in range(150):
                    if not up.connected:
                        break
                    await anyio.sleep(0.1)
            assert not up.connected  # what /targets and /readyz report
            result = await up.request("tools/call", lambda s: s.call_tool("whoami", {}))
            assert result.content[0].text == "phoenix" and up.connected
    finally:
        stop(proc)


async def test_an_event_stream_that_keeps_ending_is_not_reopened_in_a_tight_loop() -> None:
    """The SDK reopens the GET stream as soon as `retry: 0` says: hundreds of times a second, without end."""
    port = free_port()
    command = [PY, "-m", "tests.fixtures.misbehaving_upstream", "--port", str(port), "--flapping-stream"]
    proc = subprocess.Popen(command, cwd=ROOT)
    try:
        wait_for_port(port, proc)
        spec = TargetSpec(name="flap", transport="mcp", url=f"http://127.0.0.1:{port}/mcp")
        async with Upstream(spec, NoEvents()).running() as up:
            await up.session()
            await anyio.sleep(2)
            result = await up.request("tools/call", lambda s: s.call_tool("whoami", {}))
        gets = int(result.content[0].text.split()[2])
        assert 1 <= gets <= 4  # about one a second
    finally:
        stop(proc)
