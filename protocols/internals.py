"""Every reach into a private part of the mcp SDK and of httpx/httpcore, in one place.

agentplex leans on a few internals the libraries do not publish (the SDK's session tables, the stdio
spawn hook, httpx's transports and pools). Each is a small function here, named for what it gives;
tests/protocols/test_internals.py checks every one against the installed versions, so an upgrade that
moves one fails there, by name, instead of somewhere deep in a request.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import anyio
import mcp.client.stdio
from httpcore._utils import is_socket_readable
from mcp.client._memory import InMemoryTransport
from mcp.client._probe import negotiate_auto
from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT, MCP_DEFAULT_TIMEOUT

__all__ = [
    "MCP_DEFAULT_SSE_READ_TIMEOUT",
    "MCP_DEFAULT_TIMEOUT",
    "InMemoryTransport",
    "add_socket_options",
    "client_pools",
    "client_session_closed",
    "client_transport",
    "connection_of",
    "held_open",
    "is_socket_readable",
    "negotiate_auto",
    "pending_requests",
    "process_stdout",
    "security_allows",
    "session_ending",
    "session_owners",
    "session_table",
    "set_client_transport",
    "set_process_stdout",
    "set_session_table",
    "set_sse_streams",
    "sse_owners",
    "sse_streams",
    "stamp_request",
    "wrap_network_backend",
    "wrap_stdio_spawn",
]


# -- the SDK's server side -------------------------------------------------------------------------


def session_table(manager: Any) -> MutableMapping[Any, Any]:
    """A StreamableHTTPSessionManager's live sessions: session id -> transport."""
    return manager._server_instances


def set_session_table(manager: Any, table: MutableMapping[Any, Any]) -> None:
    manager._server_instances = table


def session_owners(manager: Any) -> MutableMapping[Any, Any]:
    """Who opened each session (the SDK binds a session to its principal): session id -> principal."""
    return manager._session_owners


def session_ending(transport: Any) -> bool:
    """Whether a streamable HTTP session transport has been terminated or is timing out idle."""
    scope = getattr(transport, "idle_scope", None)
    return bool(getattr(transport, "_terminated", False) or (scope is not None and scope.cancel_called))


@contextlib.contextmanager
def held_open(transport: Any) -> Iterator[None]:
    """Keep a streamable HTTP session from idling out while a request the SDK does not see runs on it,
    as the SDK does for its own requests."""
    scope, timeout = getattr(transport, "idle_scope", None), getattr(transport, "_idle_timeout", None)
    if scope is None or timeout is None:
        yield
        return
    transport._requests_in_flight += 1
    scope.deadline = math.inf
    try:
        yield
    finally:
        transport._requests_in_flight -= 1
        if not transport._requests_in_flight:
            scope.deadline = anyio.current_time() + timeout


def sse_streams(transport: Any) -> MutableMapping[Any, Any]:
    """An SseServerTransport's open streams: session UUID -> writer."""
    return transport._read_stream_writers


def set_sse_streams(transport: Any, table: MutableMapping[Any, Any]) -> None:
    transport._read_stream_writers = table


def sse_owners(transport: Any) -> MutableMapping[Any, Any]:
    return transport._session_owners


# -- the SDK's client side -------------------------------------------------------------------------


def client_session_closed(session: Any) -> bool:
    """Whether a ClientSession's transport is gone (the SDK publishes no such flag; its dispatcher knows)."""
    return bool(getattr(session._dispatcher, "_closed", False))


def stamp_request(session: Any, data: dict[str, Any]) -> dict[str, str]:
    """Stamp a request (`{"method", "params"}`, in place) as a ClientSession stamps what it sends: on a
    2026-07-28 session, the `_meta` envelope (version, client info and capabilities, log level); returns
    the headers it adds (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`)."""
    opts: dict[str, Any] = {}
    session._stamp(data, opts)
    return dict(opts.get("headers") or {})


def pending_requests(session: Any) -> int:
    """How many requests a ClientSession has sent and not yet had answered (its dispatcher's table)."""
    return len(getattr(session._dispatcher, "_pending", ())) if session is not None else 0


def wrap_stdio_spawn(wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Replace the coroutine the SDK's `stdio_client` spawns servers with by `wrapper(original)`: the one
    place to see the process before the SDK reads its stdout."""
    mcp.client.stdio._create_platform_compatible_process = wrapper(mcp.client.stdio._create_platform_compatible_process)


def process_stdout(process: Any) -> Any:
    """The byte stream of an anyio process's stdout (None if it has none)."""
    return getattr(process, "_stdout", None)


def set_process_stdout(process: Any, stream: Any) -> None:
    process._stdout = stream


# -- httpx (and httpx2) ----------------------------------------------------------------------------


def client_transport(client: Any) -> Any:
    """The transport an httpx client sends through when no mount matches."""
    return client._transport


def set_client_transport(client: Any, transport: Any) -> None:
    client._transport = transport


def client_pools(client: Any) -> list[Any]:
    """The httpcore connection pools of a client's own transports (the default one and any proxy's)."""
    transports = [client._transport, *getattr(client, "_mounts", {}).values()]
    return [pool for transport in transports if (pool := getattr(transport, "_pool", None)) is not None]


def add_socket_options(pool: Any, options: list[tuple[int, int, int]]) -> None:
    """Socket options for the pool's new connections, after those it has."""
    pool._socket_options = [*(pool._socket_options or ()), *options]


def wrap_network_backend(client: Any, wrapper: Callable[[Any], Any]) -> bool:
    """Put `wrapper(backend)` in place of the network backend of a client's default pool, if it has one."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    if pool is None or not hasattr(pool, "_network_backend"):
        return False
    pool._network_backend = wrapper(pool._network_backend)
    return True


def security_allows(middleware: Any, host: str, origin: str | None) -> bool:
    """What the SDK's TransportSecurityMiddleware decides about a request's Host and Origin."""
    return middleware._validate_host(host) and middleware._validate_origin(origin)


def connection_of(session: Any) -> Any:
    """The SDK's connection object behind a ServerSession: a handshake-era connection's stable identity
    (it lives as long as the client's session and has an `exit_stack` for cleanups); None if there is none."""
    return getattr(session, "_connection", None)
