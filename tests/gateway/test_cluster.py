"""`config.cluster`: replicas sharing a real `redis-server`; a session's requests reach the replica that holds it.

Two gateways in this event loop play two replicas: the same port on 127.0.0.1 and 127.0.0.2 (each
advertises its own address), one stdio target each, so a session's upstream is a process only its own
replica has — the state no session id can carry. Clients send `Host: localhost:<port>`, as a load
balancer passes the client's Host on.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
import redis.asyncio as aioredis
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from gateway.admin import views
from gateway.cluster import FORWARDED_BY, _address_toward
from gateway.config import parse_config
from gateway.config.errors import ConfigError
from gateway.config.loader import load_config
from gateway.runtime import Runtime
from tests.conftest import HEADERS, INIT, RunningGateway, free_port, run_gateway, sdk_session, started, stdio_target
from tests.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.anyio

A, B = "127.0.0.1", "127.0.0.2"


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def replica_yaml(address: str, port: int, redis_url: str, prefix: str) -> str:
    return f"""
config:
  cluster:
    advertise: {address}
    heartbeat: 0.3s
    prefix: {prefix}
    redis: {{url: "{redis_url}", timeout: 1s}}
mcp:
  port: {port}
  address: {address}
  targets:{stdio_target("up")}
"""


@contextlib.asynccontextmanager
async def replicas(redis: RedisServer) -> AsyncIterator[tuple[RunningGateway, RunningGateway, int]]:
    port, prefix = free_port(), f"t-{uuid.uuid4().hex[:8]}"
    async with (
        run_gateway(replica_yaml(A, port, redis.url, prefix)) as a,
        run_gateway(replica_yaml(B, port, redis.url, prefix)) as b,
    ):
        yield a, b, port


def at(address: str, port: int) -> str:
    return f"http://{address}:{port}/mcp"


def headers(port: int, sid: str | None = None) -> dict[str, str]:
    out = {**HEADERS, "host": f"localhost:{port}", "mcp-protocol-version": "2025-11-25"}
    return {**out, "mcp-session-id": sid} if sid else out


def answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of a JSON or SSE answer."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:") and ('"result"' in line or '"error"' in line):
                return json.loads(line[5:])
        raise AssertionError(f"no answer in {response.text!r}")
    return response.json()


async def open_session(client: httpx.AsyncClient, url: str, port: int) -> str:
    response = await client.post(url, json=INIT, headers=headers(port))
    assert response.status_code == 200, response.text
    sid = response.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await client.post(url, json=note, headers=headers(port, sid))).status_code == 202
    return sid


async def call(client: httpx.AsyncClient, url: str, port: int, sid: str, tool: str, n: int = 2) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {"name": tool, "arguments": {}}}
    response = await client.post(url, json=body, headers=headers(port, sid))
    assert response.status_code == 200, response.text
    return answer(response)


async def test_a_session_is_served_by_its_replica_wherever_its_requests_land(redis: RedisServer) -> None:
    async with replicas(redis) as (a, b, port), httpx.AsyncClient(timeout=20) as client:
        sid = await open_session(client, at(A, port), port)
        on_a = await call(client, at(A, port), port, sid, "pid")
        on_b = await call(client, at(B, port), port, sid, "pid", 3)  # B has no such session: A answers
        assert on_a["result"]["structuredContent"] == on_b["result"]["structuredContent"]  # one stdio process
        assert b.gateway.endpoints["mcp"].session_count() == 0
        listed = answer(
            await client.post(
                at(B, port), json={"jsonrpc": "2.0", "id": 4, "method": "tools/list"}, headers=headers(port, sid)
            )
        )
        assert "pid" in {tool["name"] for tool in listed["result"]["tools"]}
        # ending it through B ends it on A
        assert (await client.delete(at(B, port), headers=headers(port, sid))).status_code == 200
        gone = await client.post(
            at(A, port), json={"jsonrpc": "2.0", "id": 5, "method": "tools/list"}, headers=headers(port, sid)
        )
        assert gone.status_code == 404
        assert a.gateway.endpoints["mcp"].session_count() == 0


class RoundRobin(httpx2.AsyncHTTPTransport):
    """A load balancer's effect: each request goes to the next replica (the Host header stays); a replica that
    refuses the connection is skipped, as a balancer's health checks and retries would."""

    def __init__(self, hosts: list[str]) -> None:
        super().__init__()
        self.count = len(hosts)
        self.hosts = itertools.cycle(hosts)
        self.sent: list[str] = []
        self.session_id = ""  # the last Mcp-Session-Id an answer carried

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        for attempt in range(self.count):
            host = next(self.hosts)
            request.url = request.url.copy_with(host=host)
            try:
                response = await super().handle_async_request(request)
            except httpx2.ConnectError:
                if attempt == self.count - 1:
                    raise
                continue
            self.sent.append(host)
            self.session_id = response.headers.get("mcp-session-id") or self.session_id
            return response
        raise AssertionError("unreachable")


async def test_the_sdk_client_behind_a_round_robin_balancer_keeps_its_session(redis: RedisServer) -> None:
    async with replicas(redis) as (a, b, port):
        spread = RoundRobin([A, B])
        progress: list[float] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(done)

        async with (
            httpx2.AsyncClient(transport=spread, timeout=20) as http,
            streamable_http_client(f"http://localhost:{port}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            pids = {(await session.call_tool("pid", {})).structured_content["result"] for _ in range(4)}
            assert len(pids) == 1  # every call reached the same stdio process, on the replica that holds it
            result = await session.call_tool("progress", {"steps": 3}, progress_callback=on_progress)
            assert result.content[0].text == "done" and progress == [1, 2, 3]
            assert (await session.list_tools()).tools
        assert {A, B} <= set(spread.sent)
        assert a.gateway.endpoints["mcp"].session_count() + b.gateway.endpoints["mcp"].session_count() == 0


async def test_legacy_sse_messages_posted_to_another_replica_reach_the_stream(redis: RedisServer) -> None:
    async with replicas(redis) as (_, _b, port), httpx.AsyncClient(timeout=20) as client:
        host = {"host": f"localhost:{port}"}
        async with client.stream("GET", f"http://{A}:{port}/sse", headers=host) as stream:
            lines = stream.aiter_lines()
            endpoint = ""
            with anyio.fail_after(10):
                async for line in lines:
                    if line.startswith("data:"):
                        endpoint = line[5:].strip()
                        break
            assert "session_id=" in endpoint
            posted = await client.post(f"http://{B}:{port}{endpoint}", json=INIT, headers=host)
            assert posted.status_code == 202, posted.text  # B forwarded it to A, whose stream answers
            with anyio.fail_after(10):
                async for line in lines:
                    if line.startswith("data:") and '"result"' in line:
                        assert json.loads(line[5:])["result"]["serverInfo"]
                        break


async def test_when_the_owner_is_gone_the_client_is_told_to_start_over_at_once(redis: RedisServer) -> None:
    port, prefix = free_port(), f"t-{uuid.uuid4().hex[:8]}"
    async with (
        run_gateway(replica_yaml(B, port, redis.url, prefix)) as b,
        httpx.AsyncClient(timeout=20) as client,
    ):
        async with run_gateway(replica_yaml(A, port, redis.url, prefix)):
            sid = await open_session(client, at(A, port), port)
            assert (await call(client, at(B, port), port, sid, "whoami"))["result"]
        started = time.monotonic()  # A stopped: its records went with it
        response = await call_raw(client, B, port, sid)
        assert response.status_code == 404 and response.json()["error"]["message"]
        # a replica that died without a word: its record stays, its heartbeat expires
        store = aioredis.from_url(redis.url)
        try:
            await store.set(f"{prefix}:session:dead", "gone-replica")
            assert (await call_raw(client, B, port, "dead")).status_code == 404
            # alive by its heartbeat but unreachable (nothing listens at its address): served here, 404
            await store.hset(f"{prefix}:replica:mute", mapping={"address": "127.0.0.3"})
            await store.set(f"{prefix}:session:mute", "mute")
            assert (await call_raw(client, B, port, "mute")).status_code == 404
        finally:
            await store.aclose()
        assert time.monotonic() - started < 10
        assert b.gateway.endpoints["mcp"].session_count() == 0


async def call_raw(client: httpx.AsyncClient, address: str, port: int, sid: str) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}
    return await client.post(at(address, port), json=body, headers=headers(port, sid))


async def test_a_forwarded_request_is_never_forwarded_again(redis: RedisServer) -> None:
    async with replicas(redis) as (_, _b, port), httpx.AsyncClient(timeout=20) as client:
        sid = await open_session(client, at(A, port), port)
        looped = await client.post(
            at(B, port),
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            headers={**headers(port, sid), FORWARDED_BY: "someone"},
        )
        assert looped.status_code == 404  # B serves it itself: it does not hold the session


async def test_the_admin_view_lists_every_replicas_sessions(redis: RedisServer) -> None:
    async with replicas(redis) as (a, b, port), httpx.AsyncClient(timeout=20) as client:
        sid = await open_session(client, at(A, port), port)
        with anyio.fail_after(5):
            while True:  # the next heartbeat publishes it
                seen = await views.replicas(b.gateway)
                held = {s["id"]: r["address"] for r in seen["replicas"] for s in r["sessions"]}
                if sid in held:
                    break
                await anyio.sleep(0.1)
        assert held[sid] == A and seen["replica"] == b.gateway.cluster.value.id
        assert {r["address"] for r in seen["replicas"]} == {A, B}
        assert next(s for r in seen["replicas"] for s in r["sessions"] if s["id"] == sid)["route"] == "mcp"
        assert a.gateway.cluster.value.id != b.gateway.cluster.value.id


def test_an_unset_address_is_the_one_this_host_reaches_redis_from() -> None:
    assert _address_toward("redis://127.0.0.1:6379/0") == "127.0.0.1"
    assert _address_toward("redis://localhost:1/0") in ("127.0.0.1", "::1")


def test_cluster_settings_are_checked() -> None:
    base = "mcp: {port: 0, targets: [{name: a, mcp: {host: 'http://127.0.0.1:1/mcp'}}]}\n"
    with pytest.raises(ConfigError, match=r"cluster\.advertise: invalid address 'http://10\.0\.0\.5'"):
        parse_config("config: {cluster: {advertise: 'http://10.0.0.5'}}\n" + base, "c.yaml")
    assert parse_config("config: {cluster: {}}\n" + base, "c.yaml").config.cluster.advertise is None
    with pytest.raises(ConfigError, match=r"config\.cluster\.heartbeat: must be greater than 0"):
        parse_config("config: {cluster: {advertise: a.b, heartbeat: 0s}}\n" + base, "c.yaml")
    ok = parse_config("config: {cluster: {advertise: '${POD_IP:-10.1.2.3}'}}\n" + base, "c.yaml")
    assert ok.config.cluster is not None and ok.config.cluster.advertise == "10.1.2.3"
    assert ok.config.cluster.redis.url == "redis://127.0.0.1:6379/0"


def shared_target_yaml(address: str, port: int, redis_url: str, prefix: str, url: str) -> str:
    return f"""
config:
  cluster: {{advertise: {address}, heartbeat: 0.3s, prefix: {prefix}, redis: {{url: "{redis_url}", timeout: 1s}}}}
mcp:
  port: {port}
  address: {address}
  targets:
  - name: up
    sharing: shared
    mcp: {{ host: "{url}" }}
"""


def recording(changes: list[str]) -> Any:
    """A message handler that notes each notification's method."""

    async def on_message(message: Any) -> None:
        method = getattr(getattr(message, "root", message), "method", None)
        if method:
            changes.append(method)

    return on_message


async def test_a_shared_targets_lists_are_fetched_once_for_all_replicas_and_changes_reach_every_replica(
    redis: RedisServer, upstream: Any
) -> None:
    url = upstream("up", "mcp", "--page-size", "100")  # counts the tools/list requests it answers
    port, prefix = free_port(), f"t-{uuid.uuid4().hex[:8]}"
    async with (
        run_gateway(shared_target_yaml(A, port, redis.url, prefix, url)),
        run_gateway(shared_target_yaml(B, port, redis.url, prefix, url)),
        sdk_session(at(A, port)) as on_a,
    ):
        before = {tool.name for tool in (await on_a.list_tools()).tools}
        asked = (await on_a.call_tool("tools_list_calls", {})).structured_content["result"]
        changes: list[str] = []
        async with sdk_session(at(B, port), message_handler=recording(changes)) as on_b:
            assert {tool.name for tool in (await on_b.list_tools()).tools} == before
            # B took A's answer from Redis: the target was not asked again
            assert (await on_a.call_tool("tools_list_calls", {})).structured_content["result"] == asked
            # the target tells A's connection its tools changed: B drops the shared list and tells its client
            await on_a.call_tool("grow", {"name": "grown"})
            with anyio.fail_after(10):
                while "notifications/tools/list_changed" not in changes:
                    await anyio.sleep(0.05)
            assert "grown" in {tool.name for tool in (await on_b.list_tools()).tools}


KEY = "ab" * 32


def keyed_yaml(address: str, port: int, redis_url: str, prefix: str, url: str) -> str:
    return f"""
config:
  session: {{key: "{KEY}"}}
  cluster: {{advertise: {address}, heartbeat: 0.2s, prefix: {prefix}, redis: {{url: "{redis_url}", timeout: 1s}}}}
mcp:
  port: {port}
  address: {address}
  targets:{stdio_target("local")}
  - name: web
    mcp: {{ host: "{url}" }}
"""


async def test_with_a_session_key_the_owner_serves_while_alive_and_the_seal_takes_over_when_it_is_gone(
    redis: RedisServer, upstream: Any
) -> None:
    url = upstream("web", "mcp")
    port, prefix = free_port(), f"t-{uuid.uuid4().hex[:8]}"
    store = aioredis.from_url(redis.url)
    async with (
        run_gateway(keyed_yaml(B, port, redis.url, prefix, url)) as b,
        httpx.AsyncClient(timeout=20) as client,
    ):
        try:
            async with run_gateway(keyed_yaml(A, port, redis.url, prefix, url)) as a:
                sid = await open_session(client, at(A, port), port)
                assert sid.startswith("s1.")  # sealed
                first = await call(client, at(A, port), port, sid, "local_pid")
                await anyio.sleep(1.0)  # several heartbeats: the record of a live session stays
                assert (await store.get(f"{prefix}:session:{sid}")).decode() == a.gateway.cluster.value.id
                again = await call(client, at(B, port), port, sid, "local_pid", 3)
                assert again["result"]["structuredContent"] == first["result"]["structuredContent"]  # forwarded
                assert b.gateway.endpoints["mcp"].session_count() == 0
                listed = {s["id"] for s in a.gateway.endpoints["mcp"].sessions()}
                assert sid in listed  # the admin view names sessions by the ids clients use
            # A is gone: B resumes the session from its id (the stdio target gets a process of its own)
            resumed = await call(client, at(B, port), port, sid, "web_whoami", 4)
            assert resumed["result"]["content"][0]["text"] == "web"
            assert b.gateway.endpoints["mcp"].session_count() == 1
            assert (await store.get(f"{prefix}:session:{sid}")).decode() == b.gateway.cluster.value.id
        finally:
            await store.aclose()


async def test_the_admin_dashboard_shows_the_other_replicas_sessions(redis: RedisServer, tmp_path: Path) -> None:
    port, prefix = free_port(), f"t-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "a.yaml"
    path.write_text("config:\n  adminAddr: 127.0.0.1:0\n" + replica_yaml(A, port, redis.url, prefix).replace("config:\n", "", 1))
    async with (
        started(Runtime(load_config(path))) as runtime,
        run_gateway(replica_yaml(B, port, redis.url, prefix)),
        httpx.AsyncClient(timeout=20) as client,
    ):
        sid = await open_session(client, at(B, port), port)
        with anyio.fail_after(5):
            while True:  # B's next heartbeat publishes it
                page = (await client.get(f"http://127.0.0.1:{runtime.admin_port}/ui")).text
                if sid in page:
                    break
                await anyio.sleep(0.1)
        assert 'id="replica-sessions"' in page and f"<td>{B} " in page
