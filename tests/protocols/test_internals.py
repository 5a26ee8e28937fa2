"""Each private part of the mcp SDK and httpx that protocols/internals.py reaches is still there, with the
shape agentplex relies on: an upgrade that moves one fails here, by name."""

from __future__ import annotations

import inspect
import socket

import anyio
import httpx
import httpx2
import mcp.client.stdio
import pytest
from mcp import Client, ClientSession
from mcp.server import Server
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings

from protocols import internals

pytestmark = pytest.mark.anyio


def test_streamable_http_session_manager() -> None:
    manager = StreamableHTTPSessionManager(app=Server("t"))
    table = internals.session_table(manager)
    assert isinstance(table, dict) and not table
    replacement: dict[str, object] = {}
    internals.set_session_table(manager, replacement)
    assert internals.session_table(manager) is replacement
    assert isinstance(internals.session_owners(manager), dict)


async def test_streamable_http_transport_idle_bookkeeping() -> None:
    transport = StreamableHTTPServerTransport(mcp_session_id="s1")
    for name in ("_terminated", "_requests_in_flight", "_idle_timeout", "idle_scope"):
        assert hasattr(transport, name), name
    assert internals.session_ending(transport) is False
    transport.idle_scope = anyio.CancelScope(deadline=anyio.current_time() + 60)
    transport._idle_timeout = 60.0
    with internals.held_open(transport):
        assert transport._requests_in_flight == 1 and transport.idle_scope.deadline == float("inf")
    assert transport._requests_in_flight == 0 and transport.idle_scope.deadline < float("inf")


def test_sse_server_transport() -> None:
    transport = SseServerTransport("/messages/")
    assert isinstance(internals.sse_streams(transport), dict)
    replacement: dict[object, object] = {}
    internals.set_sse_streams(transport, replacement)
    assert internals.sse_streams(transport) is replacement
    assert isinstance(internals.sse_owners(transport), dict)


def test_transport_security_checks() -> None:
    settings = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=["127.0.0.1:*"], allowed_origins=["http://127.0.0.1:*"]
    )
    middleware = TransportSecurityMiddleware(settings)
    assert internals.security_allows(middleware, "127.0.0.1:80", None)
    assert not internals.security_allows(middleware, "evil.example", None)
    assert not internals.security_allows(middleware, "127.0.0.1:80", "http://evil.example")


async def test_client_session_closed_flag() -> None:
    send, receive = anyio.create_memory_object_stream[object](1)
    send2, receive2 = anyio.create_memory_object_stream[object](1)
    async with send, receive, send2, receive2, ClientSession(receive, send2) as session:
        assert internals.client_session_closed(session) is False
    assert internals.client_session_closed(session) is True


async def test_pending_requests_counts_unanswered() -> None:
    """The stdio relay takes a sole call's lines only while the SDK session has nothing in flight."""
    send, receive = anyio.create_memory_object_stream[object](1)
    send2, receive2 = anyio.create_memory_object_stream[object](1)
    async with send, receive, send2, receive2, ClientSession(receive, send2) as session:
        assert internals.pending_requests(session) == 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.send_ping)
            await receive2.receive()  # the ping went out, unanswered
            assert internals.pending_requests(session) == 1
            tg.cancel_scope.cancel()
    assert internals.pending_requests(None) == 0


def test_stdio_spawn_hook() -> None:
    original = mcp.client.stdio._create_platform_compatible_process
    assert inspect.iscoroutinefunction(original) or callable(original)
    seen: list[object] = []
    internals.wrap_stdio_spawn(lambda inner: seen.append(inner) or inner)
    try:
        assert seen == [original] and mcp.client.stdio._create_platform_compatible_process is original
    finally:
        mcp.client.stdio._create_platform_compatible_process = original


async def test_anyio_process_stdout() -> None:
    process = await anyio.open_process(["true"])
    async with process:
        stream = internals.process_stdout(process)
        assert stream is process.stdout
        internals.set_process_stdout(process, stream)
        assert process.stdout is stream


@pytest.mark.parametrize("module", [httpx, httpx2])
async def test_httpx_transports_and_pools(module: object) -> None:
    async with module.AsyncClient() as client:  # type: ignore[attr-defined]
        transport = internals.client_transport(client)
        assert isinstance(transport, module.AsyncHTTPTransport)  # type: ignore[attr-defined]
        internals.set_client_transport(client, transport)
        (pool,) = internals.client_pools(client)
        before = list(pool._socket_options or ())
        internals.add_socket_options(pool, [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)])
        assert pool._socket_options == [*before, (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
        wrapped: list[object] = []
        assert internals.wrap_network_backend(client, lambda inner: wrapped.append(inner) or inner)
        assert wrapped and hasattr(wrapped[0], "connect_tcp")


def test_reexports() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert internals.is_socket_readable(a) is False
        b.send(b"x")
        assert internals.is_socket_readable(a) is True
    assert internals.MCP_DEFAULT_TIMEOUT > 0 and internals.MCP_DEFAULT_SSE_READ_TIMEOUT > 0
    assert inspect.iscoroutinefunction(internals.negotiate_auto)
    assert hasattr(internals.InMemoryTransport, "__aenter__")


async def test_server_session_connection() -> None:
    """A handshake-era ServerSession keeps its connection (with an exit stack) where connection_of looks."""
    server = MCPServer("t")
    seen: list[object] = []

    @server.tool()
    async def who(ctx: Context) -> str:
        seen.append(internals.connection_of(ctx.session))
        return "ok"

    async with Client(server, mode="legacy") as client:
        await client.call_tool("who", {})
    assert seen and seen[0] is not None and hasattr(seen[0], "exit_stack")
