"""Failure isolation: dead, slow and crashing upstreams, bad JSON-RPC, oversized bodies."""

from __future__ import annotations

import subprocess
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.conftest import (
    HEADERS,
    INIT,
    PY,
    ROOT,
    free_port,
    http_target,
    mcp_yaml,
    run_gateway,
    stdio_target,
    stop,
    wait_for_port,
)

pytestmark = pytest.mark.anyio


async def call_until_back(client: Client, target: str, tool: str) -> Any:
    """Call until a restarted target answers (at most 20 s); every failure meanwhile must name it."""
    with anyio.fail_after(20):
        while True:
            try:
                return await client.session.call_tool(tool, {})
            except MCPError as exc:
                assert f"target '{target}'" in exc.message
                await anyio.sleep(0.3)


def dead_target(name: str) -> str:
    return http_target(name, f"http://127.0.0.1:{free_port()}/mcp")


async def test_fail_open_serves_the_targets_that_are_up(upstream: Any) -> None:
    yaml = mcp_yaml(stdio_target("alive") + dead_target("dead"), failureMode="failOpen")
    async with run_gateway(yaml) as gw, Client(gw.url, mode="legacy", cache=None) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert "alive_echo" in names
        assert not any(n.startswith("dead_") for n in names)
        assert (await c.call_tool("alive_whoami", {})).content[0].text == "alive"


async def test_fail_open_still_refuses_when_every_target_is_down() -> None:
    yaml = mcp_yaml(dead_target("gone") + dead_target("lost"), failureMode="failOpen")
    async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
        response = await http.post(gw.url, json=INIT, headers=HEADERS)
        assert "every other target" in response.text and "target 'gone'" in response.text


async def test_fail_closed_refuses_the_session_naming_the_target() -> None:
    yaml = mcp_yaml(stdio_target("alive") + dead_target("dead"))
    async with run_gateway(yaml) as gw:
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(gw.url, json=INIT, headers=HEADERS)
        body = response.text
        assert "target 'dead'" in body and "failClosed" in body
        assert '"error"' in body


async def test_slow_target_times_out_naming_it_while_others_serve(upstream: Any) -> None:
    yaml = mcp_yaml(stdio_target("slow") + stdio_target("fast"), policies="{ timeout: { backendRequestTimeout: 1s } }")
    async with run_gateway(yaml) as gw, Client(gw.url, mode="legacy", cache=None) as c:
        with anyio.fail_after(20):
            with pytest.raises(MCPError) as err:
                await c.session.call_tool("slow_sleep", {"seconds": 5})
        assert "target 'slow'" in err.value.message and "timed out" in err.value.message
        assert (await c.call_tool("fast_whoami", {})).content[0].text == "fast"
        assert (await c.call_tool("slow_whoami", {})).content[0].text == "slow"


async def test_crashed_stdio_target_errors_then_comes_back(upstream: Any) -> None:
    yaml = mcp_yaml(stdio_target("fragile") + stdio_target("steady"), failureMode="failOpen")
    async with run_gateway(yaml) as gw, Client(gw.url, mode="legacy", cache=None) as c:
        with pytest.raises(MCPError) as err:
            await c.session.call_tool("fragile_crash", {})
        assert "target 'fragile'" in err.value.message
        assert (await c.call_tool("steady_whoami", {})).content[0].text == "steady"
        assert (await call_until_back(c, "fragile", "fragile_whoami")).content[0].text == "fragile"


async def test_bad_json_and_bad_jsonrpc_get_errors_and_the_session_lives() -> None:
    async with run_gateway(mcp_yaml(stdio_target("solo"))) as gw, httpx.AsyncClient(timeout=30) as http:
        init = await http.post(gw.url, json=INIT, headers=HEADERS)
        assert init.status_code == 200
        session = init.headers["mcp-session-id"]
        headers = {**HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
        await http.post(gw.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        bad = await http.post(gw.url, content=b"{not json", headers=headers)
        assert bad.status_code == 400 and "-32700" in bad.text
        invalid = await http.post(gw.url, json={"jsonrpc": "2.0", "id": 5}, headers=headers)
        assert invalid.status_code == 400 and "-32600" in invalid.text
        ok = await http.post(
            gw.url,
            json={
                "jsonrpc": "2.0",
                "id": 6,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "a"}},
            },
            headers=headers,
        )
        assert ok.status_code == 200 and "solo: a" in ok.text


async def test_oversized_body_gets_413() -> None:
    yaml = mcp_yaml(stdio_target("solo"), maxRequestBodySize="1KiB")
    async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
        big = {**INIT, "params": {**INIT["params"], "padding": "x" * 4096}}
        response = await http.post(gw.url, json=big, headers=HEADERS)
        assert response.status_code == 413
        assert (await http.post(gw.url, json=INIT, headers=HEADERS)).status_code == 200


async def test_dns_rebinding_protection_on_loopback() -> None:
    async with run_gateway(mcp_yaml(stdio_target("solo"))) as gw, httpx.AsyncClient(timeout=30) as http:
        evil_host = await http.post(gw.url, json=INIT, headers={**HEADERS, "host": "evil.example"})
        assert evil_host.status_code == 421
        evil_origin = await http.post(gw.url, json=INIT, headers={**HEADERS, "origin": "http://evil.example"})
        assert evil_origin.status_code == 403
        same = await http.post(gw.url, json=INIT, headers={**HEADERS, "origin": f"http://localhost:{gw.port}"})
        assert same.status_code == 200


async def test_stateless_mode_serves_handshake_requests_without_a_session() -> None:
    yaml = mcp_yaml(stdio_target("solo"), statefulMode="stateless")
    async with run_gateway(yaml) as gw, httpx.AsyncClient(timeout=30) as http:
        call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}
        response = await http.post(gw.url, json=call, headers={**HEADERS, "mcp-protocol-version": "2025-11-25"})
        assert response.status_code == 200, response.text
        assert "solo" in response.text
        assert "mcp-session-id" not in response.headers


async def test_unknown_path_is_404_with_a_reason() -> None:
    async with run_gateway(mcp_yaml(stdio_target("solo"))) as gw, httpx.AsyncClient(timeout=30) as http:
        response = await http.get(f"http://127.0.0.1:{gw.port}/nowhere")
        assert response.status_code == 404
        assert "no route matches GET /nowhere" in response.text


async def test_restarted_http_target_is_reconnected() -> None:
    port = free_port()
    command = [PY, "-m", "tests.fixtures.upstream", "--name", "phoenix", "--transport", "http", "--port", str(port)]
    yaml = mcp_yaml(
        http_target("phoenix", f"http://127.0.0.1:{port}/mcp") + stdio_target("steady"), failureMode="failOpen"
    )
    proc = subprocess.Popen(command, cwd=ROOT)
    try:
        wait_for_port(port, proc)
        async with run_gateway(yaml) as gw, Client(gw.url, mode="legacy", cache=None) as c:
            assert (await c.call_tool("phoenix_whoami", {})).content[0].text == "phoenix"
            stop(proc)
            with pytest.raises(MCPError) as err:
                await c.session.call_tool("phoenix_whoami", {})
            assert "target 'phoenix'" in err.value.message
            assert (await c.call_tool("steady_whoami", {})).content[0].text == "steady"
            proc = subprocess.Popen(command, cwd=ROOT)
            wait_for_port(port, proc)
            assert (await call_until_back(c, "phoenix", "phoenix_whoami")).content[0].text == "phoenix"
    finally:
        stop(proc)


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_an_answer_carrying_another_id_is_an_error_naming_the_target(mode: str) -> None:
    port = free_port()
    command = [PY, "-m", "tests.fixtures.misbehaving_upstream", "--port", str(port), "--name", "odd", "--wrong-id"]
    proc = subprocess.Popen(command, cwd=ROOT)
    try:
        wait_for_port(port, proc)
        yaml = mcp_yaml(http_target("odd", f"http://127.0.0.1:{port}/mcp") + stdio_target("steady"))
        async with run_gateway(yaml) as gw, Client(gw.url, mode=mode, cache=None) as c:
            await c.list_tools()  # a listed tool: a legacy client's call takes the raw relay
            with anyio.fail_after(15), pytest.raises(MCPError) as err:
                await c.session.call_tool("odd_whoami", {})
            assert "target 'odd'" in err.value.message and "with the response to 'not-" in err.value.message
            assert (await c.call_tool("steady_whoami", {})).content[0].text == "steady"
    finally:
        stop(proc)


async def test_a_shared_upstream_session_is_reopened_after_its_server_restarts() -> None:
    """2026-07-28 clients share one upstream session per target; a restarted server no longer knows it."""
    port = free_port()
    command = [PY, "-m", "tests.fixtures.upstream", "--name", "phoenix", "--transport", "http", "--port", str(port)]
    proc = subprocess.Popen(command, cwd=ROOT)
    try:
        wait_for_port(port, proc)
        yaml = mcp_yaml(http_target("phoenix", f"http://127.0.0.1:{port}/mcp") + stdio_target("steady"))
        async with run_gateway(yaml) as gw, Client(gw.url, mode="2026-07-28", cache=None) as c:
            assert (await c.call_tool("phoenix_whoami", {})).content[0].text == "phoenix"
            stop(proc)
            proc = subprocess.Popen(command, cwd=ROOT)
            wait_for_port(port, proc)
            with anyio.fail_after(20):
                for _ in range(5):
                    try:
                        result = await c.call_tool("phoenix_whoami", {})
                        break
                    except MCPError as exc:
                        assert "target 'phoenix'" in exc.message
                        await anyio.sleep(0.5)
            assert result.content[0].text == "phoenix"
    finally:
        stop(proc)
