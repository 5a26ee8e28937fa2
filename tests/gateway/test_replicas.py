"""Three replicas as real processes (`agentplex run`), a Redis and a round-robin balancer: one handshake-era
session's consecutive requests land on different replicas, and the session goes on when its replica is
killed. The balancer is the client's transport sending each request to the next replica (the Host header
stays, as a proxy passes it on); everything is on loopback.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
import redis.asyncio as aioredis
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import ROOT, free_port, http_target, stdio_target, stop
from tests.gateway.test_cli import AGENTPLEX
from tests.gateway.test_cluster import RoundRobin
from tests.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.anyio

ADDRESSES = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
KEY = "5e" * 32
LIMIT = 4  # calls of one tool allowed across all replicas per minute


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def replica_yaml(address: str, port: int, redis_url: str, prefix: str, targets: str) -> str:
    limit = f"{{maxTokens: {LIMIT}, tokensPerFill: {LIMIT}, fillInterval: 60s, methods: [tools/call], key: 'mcp.tool.name'}}"
    return f"""
config:
  adminAddr: null
  statsAddr: null
  session: {{key: "{KEY}"}}
  cluster: {{advertise: {address}, heartbeat: 0.3s, prefix: {prefix}, redis: {{url: "{redis_url}", timeout: 1s}}}}
mcp:
  port: {port}
  address: {address}
  policies:
    remoteRateLimit:
      redis: {{url: "{redis_url}", timeout: 1s}}
      prefix: {prefix}-rl
      limits: [{limit}]
  targets:{targets}
"""


def wait_listening(address: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"replica on {address} exited with {proc.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex((address, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"replica on {address}:{port} did not listen within {timeout} s")


@pytest.fixture
def replicas(redis: RedisServer, upstream: Any, tmp_path: Path) -> Iterator[tuple[int, str, list[Any]]]:
    """Three `agentplex run` processes on one port (127.0.0.1-3) over an HTTP, an SSE and a stdio target."""
    port, prefix = free_port(), f"r-{uuid.uuid4().hex[:8]}"
    targets = http_target("web", upstream("web", "mcp")) + http_target("legacy", upstream("legacy", "sse"), "sse")
    targets += stdio_target("local")
    procs = []
    try:
        for index, address in enumerate(ADDRESSES):
            path = tmp_path / f"replica{index}.yaml"
            path.write_text(replica_yaml(address, port, redis.url, prefix, targets))
            procs.append(subprocess.Popen([AGENTPLEX, "run", "-f", str(path)], cwd=ROOT, env=dict(os.environ)))
        for address, proc in zip(ADDRESSES, procs, strict=True):
            wait_listening(address, port, proc)
        yield port, prefix, procs
    finally:
        for proc in procs:
            stop(proc)


async def test_a_session_goes_on_across_replicas_and_when_its_replica_is_killed(
    replicas: tuple[int, str, list[Any]], redis: RedisServer
) -> None:
    port, prefix, procs = replicas
    balancer = RoundRobin(ADDRESSES)
    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    async def elicitation(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"answer": "forty-two"})

    async def text(session: ClientSession, tool: str, **arguments: Any) -> str:
        result = await session.call_tool(tool, arguments)
        assert not result.is_error, result
        return result.content[0].text

    store = aioredis.from_url(redis.url)
    try:
        async with (
            httpx2.AsyncClient(transport=balancer, timeout=30) as http,
            streamable_http_client(f"http://localhost:{port}/mcp", http_client=http) as (read, write),
            ClientSession(read, write, elicitation_callback=elicitation) as session,
        ):
            await session.initialize()
            names = {tool.name for tool in (await session.list_tools()).tools}
            assert {"web_echo", "legacy_echo", "local_pid", "web_progress", "web_ask"} <= names
            assert await text(session, "web_echo", text="a") == "web: a"
            assert await text(session, "legacy_echo", text="b") == "legacy: b"
            result = await session.call_tool("web_progress", {"steps": 3}, progress_callback=on_progress)
            assert result.content[0].text == "done" and progress == [1, 2, 3]
            assert "forty-two" in await text(session, "web_ask", question="what?")
            pid = await text(session, "local_pid")
            assert await text(session, "local_pid") == pid  # every request reached the process of its replica
            assert len(set(balancer.sent)) == 3

            # kill the replica that holds the session, without a word to anyone
            holder = (await store.get(f"{prefix}:session:{balancer.session_id}")).decode()
            (victim,) = [p for p in procs if f"-{p.pid}-" in holder]
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            started = time.monotonic()
            assert await text(session, "web_echo", text="c") == "web: c"  # resumed from its sealed id
            assert await text(session, "legacy_echo", text="d") == "legacy: d"  # a new session with the SSE target
            assert await text(session, "local_pid") != pid  # a stdio process does not travel: a new one
            assert time.monotonic() - started < 15

            # the rate limit holds across the replicas: LIMIT calls of one tool a minute, wherever they land
            for _ in range(LIMIT):
                assert await text(session, "web_whoami") == "web"
            with pytest.raises(MCPError, match=r"(?i)rate limit"):
                await session.call_tool("web_whoami", {})
    finally:
        await store.aclose()


async def test_2026_07_28_clients_need_no_session_and_work_round_robin(replicas: tuple[int, str, list[Any]]) -> None:
    port, _, _ = replicas
    balancer = RoundRobin(ADDRESSES)
    async with (
        httpx2.AsyncClient(transport=balancer, timeout=30) as http,
        streamable_http_client(f"http://localhost:{port}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.discover()
        for index in range(3):
            echoed = await session.call_tool("web_echo", {"text": str(index)})
            added = await session.call_tool("web_add", {"a": index, "b": 1})
            assert (echoed.content[0].text, added.content[0].text) == (f"web: {index}", str(index + 1))
    assert len(set(balancer.sent)) == 3
