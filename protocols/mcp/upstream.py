"""Upstream connectors: one MCP client connection to a stdio, SSE, streamable-HTTP or in-process server.

Federation never asks which transport it holds: it gets an `Upstream` with typed verbs,
and hands in an `UpstreamEvents` object that receives what the server sends back.

Trace context: whoever makes a call may make an OpenTelemetry span current around it. HTTP requests
then carry it as a W3C `traceparent` header (the SDK's requests and the raw relay's alike), and the
SDK's client puts it in each JSON-RPC request's `params._meta` (how it reaches stdio servers).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import logging
import math
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio
import httpcore2
import httpx2
import mcp_types as types
import pydantic_core
from mcp import ClientSession, StdioServerParameters
from mcp.client.session import ClientRequestContext
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import listen
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from opentelemetry import trace
from opentelemetry.propagate import inject as inject_trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from protocols import internals, pooled_sockets, redaction
from protocols.internals import MCP_DEFAULT_SSE_READ_TIMEOUT, MCP_DEFAULT_TIMEOUT, InMemoryTransport, negotiate_auto
from protocols.mcp import relay
from protocols.mcp.errors import UPSTREAM_UNAVAILABLE, UpstreamError
from protocols.mcp.list_cache import CHANGED, ListCache, SharedLists, ttl_of
from protocols.mcp.size_limit import (
    DEFAULT_MAX_RESPONSE_SIZE,
    SSE_CLIENT_EVENT_LIMIT,
    LimitedResponses,
    limited_stdio_client,
)

logger = logging.getLogger("agentplex.upstream")

Transport = Literal["stdio", "mcp", "sse", "memory"]
Era = Literal["handshake", "modern", "auto"]
ProgressFn = Any  # async (progress, total, message) -> None

# Who an upstream request is made for (an opaque caller, an ASGI scope for the gateway), set by
# whoever makes the call. It wins over `Upstream.caller`. The SDK's HTTP transports send each
# message in its sender's context, so it reaches the request's `UpstreamAuth` on either path.
RELAY_CALLER: contextvars.ContextVar[Any] = contextvars.ContextVar("agentplex_relay_caller", default=None)


class UpstreamAuth(Protocol):
    """Credentials for an HTTP target: headers set on every request made to it (built once per target).

    Raising (anything but cancellation) fails only the request at hand, with the exception's text
    and the target's name. An implementation may also define `forget(caller) -> None`: called when
    the upstream answers 401, after which the request is retried once if its credentials change.

    It may also define `async apply(caller, request) -> None`, called with each request as it is about
    to be sent (an httpx2 or httpx Request, `headers()` already set), to put credentials where a
    header cannot (a query parameter, a cookie) or to sign the request; with `signs_body = True` the
    body is read first, so `request.content` holds the bytes that are sent. If what apply() puts there
    depends on the caller, `placed(caller) -> str | None` says what it is (lists are kept per credential).
    """

    async def headers(self, caller: Any) -> dict[str, str]: ...


@dataclass(frozen=True)
class TargetSpec:
    """Everything needed to reach one upstream MCP server."""

    name: str
    transport: Transport
    command: str = ""
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # as configured: added to the gateway's environment
    clear_env: bool = False  # the process gets only `env` (`clearEnv`)
    cwd: str | None = None
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    era: Era = "handshake"
    sharing: Literal["session", "shared"] = "session"
    connect_timeout: float = 30.0
    request_timeout: float | None = None  # each message (tools/call, ...): until its answer, not reset by progress
    # Tries to open the connection before a use of it fails, `connect_backoff` apart (the `retry` policy).
    # A message is never sent twice: one that reached the target may have done its work.
    connect_attempts: int = 1
    connect_backoff: float = 0.0
    tls: ssl.SSLContext | None = None  # HTTP targets: how to verify (and present: `client_certificate`) certificates
    auth: UpstreamAuth | None = None  # HTTP targets: credentials for every request
    max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE  # bytes of one message from the target (size_limit.py)
    # memory targets: an in-process mcp `Server` or `MCPServer` (agents as tools: federation/agent_tools.py),
    # reached over the SDK's in-memory streams so it gets federation's naming, policy and relays for free.
    server: Any = None

    def __post_init__(self) -> None:
        if self.transport == "memory":
            if self.server is None:
                raise ValueError(f"memory target {self.name!r} needs a server")
            # One in-process server for everyone: a per-client-session copy would only duplicate it.
            object.__setattr__(self, "sharing", "shared")

    def describe(self) -> str:
        """The command line or URL, credentials hidden: for logs and operators, never for clients."""
        if self.transport == "stdio":
            return redaction.command_line(self.command, self.args)
        if self.transport == "memory":
            return f"in-process server {getattr(self.server, 'name', '?')}"
        return redaction.url(self.url)

    def environment(self) -> dict[str, str]:
        """A stdio process's whole environment, as the reference gives it: the gateway's own (none with
        `clear_env`) with `env` over it. Built only at spawn, so the inherited part is never shown or logged."""
        return ({} if self.clear_env else dict(os.environ)) | self.env

    def scrub(self, problem: str) -> str:
        """An error text without this target's configured secrets, and each URL it quotes redacted."""
        return redaction.text(problem, redaction.hidden(self.url, self.args, self.env, self.headers))


class UpstreamEvents(Protocol):
    """What an upstream server sends that is not a response: routed back by federation.

    Each callback names the `Upstream` it came from (one target may have one per client session).
    """

    async def on_sampling(
        self, upstream: Upstream, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.ErrorData: ...

    async def on_elicitation(
        self, upstream: Upstream, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData: ...

    async def on_list_roots(self, upstream: Upstream) -> types.ListRootsResult | types.ErrorData: ...

    async def on_logging(self, upstream: Upstream, params: types.LoggingMessageNotificationParams) -> None: ...

    async def on_notification(self, upstream: Upstream, message: Any) -> None: ...


class NoEvents:
    """Refuses server-to-client requests and drops notifications (for tools that only list)."""

    async def on_sampling(self, upstream: Upstream, params: Any) -> types.ErrorData:
        return types.ErrorData(code=types.INVALID_REQUEST, message="sampling is not available")

    async def on_elicitation(self, upstream: Upstream, params: Any) -> types.ErrorData:
        return types.ErrorData(code=types.INVALID_REQUEST, message="elicitation is not available")

    async def on_list_roots(self, upstream: Upstream) -> types.ErrorData:
        return types.ErrorData(code=types.INVALID_REQUEST, message="roots are not available")

    async def on_logging(self, upstream: Upstream, params: Any) -> None:
        return None

    async def on_notification(self, upstream: Upstream, message: Any) -> None:
        return None


class Upstream:
    """A reconnecting client connection to one target.

    The connection lives in its own task (anyio scopes must be entered and left in one task);
    callers only see `session()`. A dead connection is noticed on use and reopened, with a
    short back-off so a crashing server is not respawned in a tight loop.
    """

    first_retry: float = 1.0  # back-off after a failure, doubling per failure in a row up to `last_retry`
    last_retry: float = 30.0

    def __init__(self, spec: TargetSpec, events: UpstreamEvents) -> None:
        self.spec = spec
        self.events = events
        self.last_error: str | None = None
        self.connections = 0  # sessions opened so far: each after the first is a restart (a new process for stdio)
        self._session: ClientSession | None = None
        self._stop: anyio.Event | None = None
        self._done: anyio.Event | None = None
        self._lock = anyio.Lock()
        self._failed_at = -math.inf
        self.retry_after = self.first_retry
        self._tg: anyio.abc.TaskGroup | None = None
        self.wire: HttpWire | None = None  # set for streamable-HTTP targets while connected
        self.stdio: relay.StdioWire | None = None  # the raw relay's side of a stdio target's pipes
        self._hold_scope: anyio.CancelScope | None = None
        # Whom this upstream works for when RELAY_CALLER is not set (the owner of a per-session
        # upstream: the ASGI scope of its latest request); None for a shared one.
        self.caller: Any = None
        self.lists = ListCache()
        self.shared_lists: SharedLists | None = None  # with replicas: lists other replicas reuse (a shared one only)
        self._resource_watches: dict[str, anyio.CancelScope] = {}  # 2026-07-28: listen streams, by resource
        # The log level (logging/setLevel) each handshake-era connection gets as it starts, before any request
        # is sent on it: the level a client session asked for before this, its own upstream, existed.
        self.log_level: Any = None
        # Portable sessions (protocols/mcp/session_seal.py): the upstream session the next connection takes up
        # instead of initializing one, and whether closing leaves the target's session open (another replica
        # may be serving the same client session on it).
        self._resume: ResumedSession | None = None
        self.keep_remote_session = False

    def resume(self, session: ResumedSession) -> None:
        """Take up an existing streamable-HTTP upstream session on the next connect, instead of initializing."""
        self._resume = session
        self.keep_remote_session = True

    @property
    def session_id(self) -> str | None:
        """The target's Mcp-Session-Id for this connection (streamable HTTP, handshake era; else None)."""
        return self.wire.session_id if self.wire is not None else None

    # -- lifecycle -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Upstream]:
        """Own the background task group the connection runs in; closes it on exit."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield self
            finally:
                await self.close()
                self._tg = None
                tg.cancel_scope.cancel()

    def attach(self, tg: anyio.abc.TaskGroup) -> Upstream:
        """Run the connection in someone else's task group (which must outlive it); `close()` ends it."""
        self._tg = tg
        return self

    @property
    def connected(self) -> bool:
        return self._live(self._session)

    def _live(self, session: ClientSession | None) -> bool:
        """A session whose transport is open and whose target has not ended it (a restarted server's 404)."""
        return session is not None and not internals.client_session_closed(session) and not (self.wire is not None and self.wire.ended)

    @property
    def restarts(self) -> int:
        return max(0, self.connections - 1)

    @property
    def protocol_version(self) -> str | None:
        return self._session.protocol_version if self._session else None

    @property
    def capabilities(self) -> types.ServerCapabilities | None:
        return self._session.server_capabilities if self._session else None

    async def session(self) -> ClientSession:
        """The live session, connecting (or reconnecting) first when needed."""
        session = self._session
        if self._live(session):
            return session  # type: ignore[return-value]
        async with self._lock:
            session = self._session
            if self._live(session):
                return session  # type: ignore[return-value]
            if session is not None:
                if self.wire is not None and self.wire.ended:
                    self.last_error = "the target ended the session (restarted?)"  # it answers: reconnect now
                else:
                    self._failed("connection closed")
                await self.close()
            wait = self._failed_at + self.retry_after - time.monotonic()
            if wait > 0:
                raise UpstreamError(self.spec.name, f"unavailable: {self.last_error} (retrying in {wait:.1f}s)")
            for attempt in range(1, self.spec.connect_attempts):
                try:
                    return await self._connect()
                except UpstreamError as exc:
                    logger.info("target %s: connection attempt %d failed (%s); retrying", self.spec.name, attempt, exc)
                await anyio.sleep(self.spec.connect_backoff)
            return await self._connect()

    def _failed(self, problem: str) -> None:
        """Record a failure; the next attempt waits, longer after each failure in a row."""
        if time.monotonic() - self._failed_at > self.retry_after + self.last_retry:
            self.retry_after = self.first_retry  # the last failure is long past: start over
        else:
            self.retry_after = min(self.retry_after * 2, self.last_retry)
        self.last_error = self.spec.scrub(problem)  # clients, /readyz and logs all see it
        self._failed_at = time.monotonic()

    async def _connect(self) -> ClientSession:
        if self._tg is None:
            raise RuntimeError("Upstream.session() used outside Upstream.running()")
        ready: list[ClientSession | BaseException] = []
        got = anyio.Event()
        self._stop, self._done = anyio.Event(), anyio.Event()
        # The connection (handshake, GET stream) works for the upstream's own caller, not for
        # whichever request happened to open it: the task must not inherit that one's RELAY_CALLER.
        caller = RELAY_CALLER.set(None)
        try:
            self._tg.start_soon(self._hold, ready, got, self._stop, self._done)
        finally:
            RELAY_CALLER.reset(caller)
        with anyio.move_on_after(self.spec.connect_timeout):
            await got.wait()
        if not got.is_set():
            ready.append(TimeoutError(f"no answer within {self.spec.connect_timeout:g}s"))
            if self._hold_scope is not None:
                self._hold_scope.cancel()  # a server that hangs in its handshake is stopped, not left behind
            await self.close()
        outcome = ready[0]
        if isinstance(outcome, ClientSession):
            self.lists.forget()  # another session (a restarted server) may list other things
            self._session = outcome
            self.connections += 1
            self.last_error = None
            self.retry_after = self.first_retry
            logger.info("target %s connected (%s, %s)", self.spec.name, self.spec.transport, outcome.protocol_version)
            return outcome
        self._failed(_tls_hint(self.spec, _describe(outcome)))
        raise UpstreamError(self.spec.name, f"cannot connect: {self.last_error}")

    async def _hold(self, ready: list[Any], got: anyio.Event, stop: anyio.Event, done: anyio.Event) -> None:
        """Open the transport and session, publish the session, keep both open until stopped."""
        self._hold_scope = anyio.CancelScope()
        try:
            with self._hold_scope:
                await self._open(ready, got, stop)
        except BaseException as exc:
            if not got.is_set():
                ready.append(exc)
                got.set()
            elif not isinstance(exc, anyio.get_cancelled_exc_class()):
                logger.warning("target %s connection ended: %s", self.spec.name, self.spec.scrub(_describe(exc)))
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                raise
        finally:
            done.set()

    async def _open(self, ready: list[Any], got: anyio.Event, stop: anyio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            read, write = await stack.enter_async_context(self._transport())
            session = await stack.enter_async_context(
                _PassThroughSession(
                    read,
                    write,
                    sampling_callback=self._sampling,
                    elicitation_callback=self._elicitation,
                    list_roots_callback=self._list_roots,
                    logging_callback=self._logging,
                    message_handler=self._message,
                    client_info=types.Implementation(name="agentplex", version="0.1.0"),
                )
            )
            resumed, self._resume = self._resume, None
            if resumed is not None and self.wire is not None:
                self.wire.session_id = resumed.session_id  # every request carries it (_KeepAliveTransport)
                # The SDK's own handshake, answered here from what the session was opened with (the target
                # was told long ago): the SDK then knows the session's id and opens its GET stream, so what
                # the target sends outside any request is heard on this replica too.
                self.wire.adopting = resumed.result.model_dump(by_alias=True, mode="json", exclude_none=True)
                await session.initialize()
            elif self.spec.era == "modern":
                await session.discover()
            elif self.spec.era == "auto":
                await negotiate_auto(session)
            else:
                await session.initialize()
            if self.spec.transport in ("stdio", "sse") and session.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
                # Nothing there says which request a message is about: what the server sends as soon as it is
                # initialized (a roots/list, say) comes before the answer to this ping, so it is handled
                # before any call is sent on the connection, as belonging to none.
                with anyio.move_on_after(2), contextlib.suppress(MCPError):
                    await session.send_ping()
            if self.wire is not None and session.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
                # Opened for a call (sessions open lazily): what the server sends on its GET stream
                # about that call (a list change) must not go out before the stream is there.
                with anyio.move_on_after(2):
                    await self.wire.listening.wait()
            if stop.is_set():
                return
            await self._set_initial_level(session)
            changes = await self._listen_for_changes(stack, session)
            ready.append(session)
            got.set()
            async with anyio.create_task_group() as tg:
                if changes is not None:
                    tg.start_soon(_drain, changes)
                await stop.wait()
                tg.cancel_scope.cancel()

    async def _set_initial_level(self, session: ClientSession) -> None:
        level, caps = self.log_level, session.server_capabilities
        handshake = session.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
        if level is None or not handshake or caps is None or caps.logging is None:
            return
        with anyio.move_on_after(self.spec.request_timeout or 30), contextlib.suppress(MCPError):
            await session.set_logging_level(level)

    async def _listen_for_changes(self, stack: contextlib.AsyncExitStack, session: ClientSession) -> Any:
        """A 2026-07-28 upstream tells of list changes only on a `subscriptions/listen` stream, kept open
        for the connection's life; its events reach the message handler like handshake-era ones."""
        caps = session.server_capabilities
        if session.protocol_version not in MODERN_PROTOCOL_VERSIONS or caps is None:
            return None
        wanted = {
            "tools_list_changed": bool(caps.tools and caps.tools.list_changed),
            "prompts_list_changed": bool(caps.prompts and caps.prompts.list_changed),
            "resources_list_changed": bool(caps.resources and caps.resources.list_changed),
        }
        if not any(wanted.values()):
            return None
        try:
            return await stack.enter_async_context(listen(session, **wanted))
        except (MCPError, RuntimeError, TimeoutError) as exc:
            logger.info("target %s: no list-change stream (%s)", self.spec.name, _describe(exc))
            return None

    def _transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        spec = self.spec
        if spec.transport == "stdio":
            params = StdioServerParameters(command=spec.command, args=list(spec.args), cwd=spec.cwd)
            # the server's stderr is inherited: it lands in our log stream
            self.stdio = relay.StdioWire(spec.name)  # this connection's: a new process gets a new one
            self.stdio.sdk_pending = lambda: internals.pending_requests(self._session)
            return limited_stdio_client(params, spec.name, spec.max_response_size, spec.environment(), self.stdio)
        if spec.transport == "sse":
            return _sse(self)
        if spec.transport == "memory":
            # The SDK's own (what `mcp.Client(server)` uses; not re-exported): runs the server in a task of
            # its own while the connection is held and yields (read, write) like the other transports.
            return InMemoryTransport(spec.server)
        return _streamable_http(self)

    async def watch_resource(self, uri: str) -> None:
        """resources/subscribe for a 2026-07-28 session, which has none: a `subscriptions/listen` stream
        watching `uri`, held open until `unwatch_resource` or the connection ends. Its events reach the
        message handler, as a handshake-era server's resources/updated does."""
        session = await self.session()
        if uri in self._resource_watches or self._tg is None:
            return
        scope = self._resource_watches[uri] = anyio.CancelScope()

        async def hold(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            try:
                with scope, contextlib.suppress(Exception):
                    async with listen(session, resource_subscriptions=[uri]) as subscription:
                        task_status.started()
                        await _drain(subscription)
            finally:
                if self._resource_watches.get(uri) is scope:
                    del self._resource_watches[uri]

        try:
            await self._tg.start(hold)
        except RuntimeError as exc:  # ended before it was acknowledged (`start` says so this way)
            raise UpstreamError(self.spec.name, f"refused to watch {uri}: {exc}") from None

    def unwatch_resource(self, uri: str) -> None:
        scope = self._resource_watches.pop(uri, None)
        if scope is not None:
            scope.cancel()

    async def close(self) -> None:
        """Close the connection (the stdio process is ended by the SDK's transport)."""
        for uri in list(self._resource_watches):
            self.unwatch_resource(uri)
        stop, done = self._stop, self._done
        self._session = None
        self.wire = None
        if self.stdio is not None:
            self.stdio.close()
            self.stdio = None
        if stop is not None:
            stop.set()
        if done is not None:
            with anyio.move_on_after(10, shield=True):
                await done.wait()
            if not done.is_set() and self._hold_scope is not None:
                self._hold_scope.cancel()  # it would not stop (a hung handshake): end it

    # -- requests --------------------------------------------------------------------------

    async def request(self, method: str, call: Any) -> Any:
        """Run `call(session)` and turn transport failures into errors that name the target."""
        session = await self.session()
        wire = self.wire
        try:
            if self.spec.request_timeout is None:
                return await call(session)
            with anyio.fail_after(self.spec.request_timeout):  # cancelling sends notifications/cancelled upstream
                return await call(session)
        except TimeoutError:
            raise UpstreamError(
                self.spec.name, f"{method} timed out after {self.spec.request_timeout:g}s", code=REQUEST_TIMEOUT
            ) from None
        except MCPError as exc:
            if wire is not None and wire.ended:
                raise UpstreamError(self.spec.name, f"lost its session during {method} (restarted?); reconnecting") from None
            if exc.code == CONNECTION_CLOSED:
                self._failed("connection closed")
                raise UpstreamError(self.spec.name, f"connection lost during {method}") from None
            if exc.code == REQUEST_TIMEOUT:
                raise UpstreamError(self.spec.name, f"{method} timed out", code=REQUEST_TIMEOUT) from None
            raise
        except (httpx2.HTTPError, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            self._failed(_describe(exc))
            raise UpstreamError(self.spec.name, f"{method} failed: {self.last_error}") from None

    @property
    def can_relay(self) -> bool:
        """Whether calls may take the raw relay: a live handshake-era session over streamable HTTP or stdio."""
        return (
            (self.wire is not None or (self.stdio is not None and not self.stdio.closed))
            and self._live(self._session)
            and self._session.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS  # type: ignore[union-attr]
        )

    @property
    def can_relay_modern(self) -> bool:
        """Whether calls may take the raw relay to a 2026-07-28 streamable-HTTP target (no session)."""
        return (
            self.wire is not None
            and self._live(self._session)
            and self._session.protocol_version in MODERN_PROTOCOL_VERSIONS  # type: ignore[union-attr]
        )

    async def relay(self, request: relay.Message, on_message: relay.OnMessage) -> relay.Message:
        """One request over the raw relay, with the same timeout and error naming as `request()`."""
        carrier: dict[str, Any] = {}
        inject_trace(carrier)  # as the SDK's client does on every request: trace context in `params._meta`
        if carrier:
            params = request.get("params") or {}
            request = {**request, "params": {**params, "_meta": {**(params.get("_meta") or {}), **carrier}}}
        if self.wire is None and self.stdio is not None:
            return await self._relay_stdio(self.stdio, request, on_message)
        wire, version = self.wire, self.protocol_version
        assert wire is not None and version is not None
        stamped = None
        modern = version in MODERN_PROTOCOL_VERSIONS
        if modern:  # no session: the envelope and headers the SDK's client would send, by its own stamp
            data = {"method": request["method"], "params": dict(request.get("params") or {})}
            stamped = internals.stamp_request(self._session, data)
            request = {**request, "params": data["params"]}
        args = (
            self.spec.name,
            wire.url,
            wire.client,
            None if modern else wire.session_id,
            version,
            request,
            on_message,
            stamped,
        )
        try:
            if self.spec.request_timeout is None:
                return await relay.call(*args)
            with anyio.fail_after(self.spec.request_timeout):
                return await relay.call(*args)
        except TimeoutError:
            if not modern:  # 2026-07-28: the POST's stream, closed, said so
                await relay.cancel(wire.client, wire.url, wire.session_id, version, request["id"])
            raise UpstreamError(
                self.spec.name, f"tools/call timed out after {self.spec.request_timeout:g}s", code=REQUEST_TIMEOUT
            ) from None
        except anyio.get_cancelled_exc_class():  # the caller gave up: so does the upstream
            if not modern:
                await relay.cancel(wire.client, wire.url, wire.session_id, version, request["id"])
            raise
        except relay.SessionGone as exc:
            self.last_error = str(exc)
            await self.close()  # the next use reconnects through the SDK
            raise UpstreamError(self.spec.name, "lost its session (restarted?); reconnecting") from None

    async def _relay_stdio(self, wire: relay.StdioWire, request: relay.Message, on_message: relay.OnMessage) -> relay.Message:
        """`relay` to a stdio process."""
        try:
            if self.spec.request_timeout is None:
                return await wire.call(request, on_message)
            with anyio.fail_after(self.spec.request_timeout):
                return await wire.call(request, on_message)
        except TimeoutError:
            await wire.cancel(request["id"])
            raise UpstreamError(
                self.spec.name, f"tools/call timed out after {self.spec.request_timeout:g}s", code=REQUEST_TIMEOUT
            ) from None
        except anyio.get_cancelled_exc_class():  # the caller gave up: so does the upstream
            await wire.cancel(request["id"])
            raise

    async def list_all(self, method: str) -> list[Any]:
        """Every item of a paginated list (tools, prompts, resources, templates), from the cache while
        it holds (list_cache.py): a client's list costs no round trip to an unchanged target."""
        key = await self._credential_key()
        if key is not _UNKNOWN and (items := self.lists.get(method, key)) is not None:
            return items
        if key is not _UNKNOWN and self.shared_lists is not None:
            found = await self.shared_lists.get(method, key)
            if found is not None:
                self.lists.put(method, key, *found)
                return found[0]
        items = []
        cursor: str | None = None
        first: Any = None
        session = await self.session()
        for _ in range(10_000):
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            result = await self.request(method, lambda s, p=params: _LISTERS[method](s, p))
            first = first if first is not None else result
            items.extend(getattr(result, _LIST_FIELDS[method]))
            cursor = result.next_cursor
            if not cursor:
                if key is not _UNKNOWN and self._session is session:  # not from a session since replaced
                    ttl = ttl_of(first, session.server_capabilities, method)
                    self.lists.put(method, key, items, ttl)
                    if self.shared_lists is not None and ttl > 0:
                        await self.shared_lists.put(method, key, items, ttl)
                return items
        raise UpstreamError(self.spec.name, f"{method} never ended its pagination")

    async def _credential_key(self) -> Any:
        """Which credentials a list request carries (a digest), as lists may differ by caller."""
        if self.spec.auth is None:
            return None
        caller = RELAY_CALLER.get() or self.caller
        try:
            headers = await self.spec.auth.headers(caller)
        except Exception:  # the request itself will say what is wrong
            return _UNKNOWN
        placed = getattr(self.spec.auth, "placed", None)  # credentials apply() puts outside the headers
        extra = placed(caller) if placed is not None else None
        return hashlib.sha256(repr((sorted(headers.items()), extra)).encode()).hexdigest()

    def notified(self, method: str) -> None:
        """The target sent notification `method` (on any stream): lists it says changed are asked for again."""
        changed = CHANGED.get(method)
        if changed:
            self.lists.forget(changed)

    # -- callbacks from the upstream -------------------------------------------------------

    async def _sampling(self, context: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
        return await self.events.on_sampling(self, params)

    async def _elicitation(self, context: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
        return await self.events.on_elicitation(self, params)

    async def _list_roots(self, context: ClientRequestContext) -> Any:
        return await self.events.on_list_roots(self)

    async def _logging(self, params: types.LoggingMessageNotificationParams) -> None:
        await self.events.on_logging(self, params)

    async def _message(self, message: Any) -> None:
        if isinstance(message, Exception):
            logger.debug("target %s transport error: %s", self.spec.name, _describe(message))
            return
        await self.events.on_notification(self, message)


_UNKNOWN = object()  # no credential key could be had: the list is neither taken from nor put in the cache

_LISTERS = {
    "tools/list": lambda s, p: s.list_tools(params=p),
    "prompts/list": lambda s, p: s.list_prompts(params=p),
    "resources/list": lambda s, p: s.list_resources(params=p),
    "resources/templates/list": lambda s, p: s.list_resource_templates(params=p),
}
_LIST_FIELDS = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resource_templates",
}


@dataclass(frozen=True)
class ResumedSession:
    """An upstream session opened elsewhere (another replica) to take up: its id, and the target's
    initialize result to adopt (the protocol version that session negotiated)."""

    session_id: str
    result: types.InitializeResult


@dataclass
class HttpWire:
    """The HTTP side of a streamable-HTTP upstream connection, shared with the raw relay."""

    url: httpx2.URL  # parsed once: a str is parsed on every request, half of what building one costs
    client: httpx2.AsyncClient
    session_id: str | None = None
    listening: anyio.Event = field(default_factory=anyio.Event)  # the GET stream was answered
    # A taken-up session: the initialize result its handshake is answered with here (nothing is sent)
    adopting: dict[str, Any] | None = None
    # The target answered 404 on the session (it no longer knows it: restarted, expired), or its event stream
    # could not be reconnected: either way the connection is dead.
    ended: bool = False


@contextlib.asynccontextmanager
async def _streamable_http(upstream: Upstream) -> AsyncIterator[Any]:
    """Streamable HTTP with one pooled, keep-alive httpx2 client per connection (headers set once)."""
    spec = upstream.spec
    client = _http_client(upstream, spec.headers or None)
    wire = HttpWire(httpx2.URL(spec.url), client)
    upstream.wire = wire
    # The SDK's timeouts; we tune the transport under it, measured in bench/.
    pooled_sockets.install(client, coalesce=True)
    inner: httpx2.AsyncBaseTransport = internals.client_transport(client)
    if spec.auth is not None:
        inner = _AuthGate(inner, spec.name, _json_rpc_refusal)
    # The size limit sits under the keep-alive transport, which reads a JSON answer whole to check its id.
    inner = LimitedResponses(inner, spec.name, spec.max_response_size)
    keep_alive = _KeepAliveTransport(inner, wire)
    internals.set_client_transport(client, keep_alive)
    # The SDK's own cap on an event (1 MiB) would cut the connection; LimitedResponses answers the request instead.
    async with (
        client,
        keep_alive.draining(),
        streamable_http_client(
            spec.url,
            http_client=client,
            max_sse_event_size=None,
            terminate_on_close=not upstream.keep_remote_session,
        ) as streams,
    ):
        yield streams[0], streams[1]


@contextlib.asynccontextmanager
async def _sse(upstream: Upstream) -> AsyncIterator[Any]:
    """Legacy HTTP+SSE. With credentials, a POST refused for want of them is answered on the read side.

    (The SDK's SSE transport would stop sending anything once one POST fails.)
    """
    spec = upstream.spec

    def plain(headers: Any = None, timeout: Any = None, auth: Any = None) -> httpx2.AsyncClient:
        return _for_sse(_http_client(upstream, headers, timeout, keepalive=True), spec)

    connect = {"headers": spec.headers or None, "timeout": spec.connect_timeout}
    if spec.auth is None:
        async with sse_client(spec.url, httpx_client_factory=plain, **connect) as streams:
            yield streams[0], streams[1]
        return

    send, receive = anyio.create_memory_object_stream[Any](0)

    async def refuse(request: httpx2.Request, target: str, problem: str) -> httpx2.Response:
        if request.method != "POST":
            raise UpstreamAuthError(problem, request=request)  # the GET stream: the connection fails
        request_id = _request_id(request)
        if request_id is not None:
            error = types.JSONRPCError(jsonrpc="2.0", id=request_id, error=_refusal(target, problem))
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await send.send(SessionMessage(error))
        return httpx2.Response(202, request=request)

    def guarded(headers: Any = None, timeout: Any = None, auth: Any = None) -> httpx2.AsyncClient:
        client = _http_client(upstream, headers, timeout, keepalive=True)
        internals.set_client_transport(client, _AuthGate(internals.client_transport(client), spec.name, refuse))
        return _for_sse(client, spec)

    async def pump(read: Any) -> None:
        async with send:
            async for item in read:
                await send.send(item)

    async with (
        sse_client(spec.url, httpx_client_factory=guarded, **connect) as (read, write),
        anyio.create_task_group() as tg,
        receive,
    ):
        tg.start_soon(pump, read)
        yield receive, write
        tg.cancel_scope.cancel()


def _for_sse(client: httpx2.AsyncClient, spec: TargetSpec) -> httpx2.AsyncClient:
    """The SDK's SSE client ends the connection at an event of 1 MiB: a smaller one is answered with an error.
    And its event stream waits for events as long as the connection lives (`_PatientEventStream`)."""
    limit = min(spec.max_response_size, SSE_CLIENT_EVENT_LIMIT)
    inner = LimitedResponses(internals.client_transport(client), spec.name, limit)
    internals.set_client_transport(client, _PatientEventStream(inner))
    return client


class _PatientEventStream(httpx2.AsyncBaseTransport):
    """No read timeout on an SSE target's event stream (its GET), where silence is normal: a server owes no
    keep-alive events, so the SDK's `sse_read_timeout` (300 s) would end an idle target's session (and its
    clients' calls would fail until it reconnected). A peer that vanished is noticed by TCP keep-alive
    (`_KEEPALIVE`) instead; the POSTs keep their timeouts."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":
            timeout = {**request.extensions.get("timeout", {}), "read": None}
            request.extensions = {**request.extensions, "timeout": timeout}
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _keepalive_options() -> list[tuple[int, int, int]]:
    """TCP keep-alive probes after 30 s of silence, 10 s apart, 3 unanswered ones end the connection: a peer
    gone without a word (host down, network cut) is noticed in about a minute, a live one costs a few bytes."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    idle = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))  # Linux, macOS
    interval, count = getattr(socket, "TCP_KEEPINTVL", None), getattr(socket, "TCP_KEEPCNT", None)
    for option, value in ((idle, 30), (interval, 10), (count, 3)):
        if option is not None:
            options.append((socket.IPPROTO_TCP, option, value))
    return options


_KEEPALIVE = _keepalive_options()


def _http_client(
    upstream: Upstream,
    headers: dict[str, str] | None,
    timeout: httpx2.Timeout | None = None,
    *,
    keepalive: bool = False,
) -> httpx2.AsyncClient:
    """What `create_mcp_http_client` builds, plus the target's TLS context and credentials
    (`keepalive`: TCP keep-alive on its connections)."""
    spec = upstream.spec
    kwargs: dict[str, Any] = {
        "headers": headers,
        "timeout": timeout or httpx2.Timeout(MCP_DEFAULT_TIMEOUT, read=MCP_DEFAULT_SSE_READ_TIMEOUT),
    }
    kwargs["verify"] = spec.tls if spec.tls is not None else _default_tls()
    if spec.auth is not None:
        kwargs["auth"] = _UpstreamHttpAuth(upstream, spec.auth)
    kwargs["event_hooks"] = {"request": [_send_trace_context]}
    client = httpx2.AsyncClient(**kwargs)
    if keepalive:
        # On the pools httpx2 built (the direct one and any proxy's from the environment): passing our
        # own transport instead would turn the environment's proxies off.
        for pool in internals.client_pools(client):
            internals.add_socket_options(pool, _KEEPALIVE)
    return client


class _PassThroughSession(ClientSession):
    """The SDK's client session, but for one check: a tool result's structured content is passed on as the
    target sent it, not checked against the tool's output schema. The gateway lists the target's schema
    unchanged, so its clients check the result against the same schema; and the raw relay never checks
    (measured: the check, and the `tools/list` it may send first, made the SDK path differ from the relay
    and from itself by what the session happened to have listed)."""

    async def validate_tool_result(self, name: str, result: types.CallToolResult) -> None:
        return None


_W3C = TraceContextTextMapPropagator()


async def _send_trace_context(request: httpx2.Request) -> None:
    """`traceparent` (and `tracestate`) for the span current where the request is sent, if any."""
    if trace.get_current_span().get_span_context().is_valid:
        _W3C.inject(request.headers)


@functools.cache
def _default_tls() -> ssl.SSLContext:
    """httpx2's default context, built once: httpx2 would build one per client (about 20 ms each)."""
    return httpcore2.default_ssl_context()


class UpstreamAuthError(httpx2.RequestError):
    """The target's credentials could not be had (for example, the token endpoint refused)."""


_AUTH_PROBLEM = "agentplex.auth_problem"  # request extension: why no credentials were set


class _UpstreamHttpAuth(httpx2.Auth):
    """Sets the target's credential headers on each request, for `RELAY_CALLER` or the upstream's caller.

    Failing to get them does not raise here (the SDK would tear the connection down): the request is
    marked, and `_AuthGate` answers it without sending it.
    """

    def __init__(self, upstream: Upstream, auth: UpstreamAuth) -> None:
        self.upstream = upstream
        self.auth = auth

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncIterator[httpx2.Request]:  # type: ignore[override]
        caller = RELAY_CALLER.get() or self.upstream.caller
        sent = await self._apply(request, caller)
        response = yield request
        forget = getattr(self.auth, "forget", None)
        if response.status_code != 401 or sent is None or forget is None or _AUTH_PROBLEM in request.extensions:
            return
        forget(caller)  # a cached credential the upstream no longer takes: get a fresh one, once
        if await self._apply(request, caller) != sent:
            yield request

    async def _apply(self, request: httpx2.Request, caller: Any) -> Any:
        """What the credentials made of the request (to compare after a 401), or None if there were none."""
        try:
            headers = await self.auth.headers(caller)
            for name, value in headers.items():
                request.headers[name] = value
            apply = getattr(self.auth, "apply", None)
            if apply is not None:
                if getattr(self.auth, "signs_body", False):
                    await request.aread()
                await apply(caller, request)
        except Exception as exc:
            request.extensions = {**request.extensions, _AUTH_PROBLEM: str(exc) or type(exc).__name__}
            return None
        return str(request.url), request.headers.multi_items()

    def sync_auth_flow(self, request: httpx2.Request) -> Any:
        raise RuntimeError("upstream credentials are async-only")


class _AuthGate(httpx2.AsyncBaseTransport):
    """Answers a request whose credentials could not be had, instead of sending it without them."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, target: str, refuse: Any) -> None:
        self.inner = inner
        self.target = target
        self.refuse = refuse

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        problem = request.extensions.get(_AUTH_PROBLEM)
        if problem is not None:
            problem, url = redaction.text(problem), redaction.url(str(request.url))
            logger.warning("target %s: no credentials for %s %s: %s", self.target, request.method, url, problem)
            return await self.refuse(request, self.target, f"backendAuth failed: {problem}")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _refusal(target: str, problem: str) -> types.ErrorData:
    return types.ErrorData(code=UPSTREAM_UNAVAILABLE, message=problem, data={"target": target})


async def _json_rpc_refusal(request: httpx2.Request, target: str, problem: str) -> httpx2.Response:
    """A streamable-HTTP POST's answer: a JSON-RPC error the SDK and the relay hand to the caller."""
    if request.method != "POST":
        raise UpstreamAuthError(problem, request=request)  # GET stream, DELETE: the SDK copes with errors
    error = _refusal(target, problem).model_dump(mode="json", exclude_none=True)
    return httpx2.Response(502, json={"jsonrpc": "2.0", "id": _request_id(request), "error": error}, request=request)


def _request_id(request: httpx2.Request) -> Any:
    try:
        message = json.loads(request.content)
    except (ValueError, httpx2.RequestNotRead):
        return None
    return message.get("id") if isinstance(message, dict) else None


def _handshake_answered_here(request: httpx2.Request, wire: HttpWire) -> httpx2.Response | None:
    """For a taken-up session: the answers to the SDK's `initialize` (the sealed result, under the session's
    id) and `notifications/initialized`, made here; None for anything else."""
    try:
        message = json.loads(request.content)
    except (httpx2.RequestNotRead, ValueError):
        return None
    method = message.get("method") if isinstance(message, dict) else None
    if method == "initialize":
        body = {"jsonrpc": "2.0", "id": message.get("id"), "result": wire.adopting}
        headers = {"content-type": "application/json", "mcp-session-id": wire.session_id or ""}
        return httpx2.Response(200, headers=headers, content=json.dumps(body).encode(), request=request)
    if method == "notifications/initialized":
        wire.adopting = None
        return httpx2.Response(202, request=request)
    return None


class _KeepAliveTransport(httpx2.AsyncBaseTransport):
    """Lets a connection go back to the pool after an SSE response.

    The SDK closes a POST's event stream as soon as the JSON-RPC response arrives, before the
    server's final chunk, so every call would pay a new TCP connection (measured: one per call).
    What is left of such a body is read in the background, in `draining()`'s task group.

    Event streams (GET) are opened at most once per `stream_gap`: the SDK reopens one as soon as the
    server's `retry:` says, so `retry: 0` and a stream that ends at once would have it reconnect in a
    tight loop, forever. (Its own default is to wait this long.)
    """

    stream_gap = 1.0

    def __init__(self, inner: httpx2.AsyncBaseTransport, wire: HttpWire) -> None:
        self.inner = inner
        self.wire = wire
        self._drains: anyio.abc.TaskGroup | None = None
        self._next_stream = -math.inf

    @contextlib.asynccontextmanager
    async def draining(self) -> AsyncIterator[None]:
        """Run drains for the block; those still running at its end are stopped (their connections closed)."""
        async with anyio.create_task_group() as tg:
            self._drains = tg
            try:
                yield
            finally:
                self._drains = None
                tg.cancel_scope.cancel()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self.wire.session_id is not None and "mcp-session-id" not in request.headers:
            request.headers["mcp-session-id"] = self.wire.session_id  # a resumed session: the SDK never saw its id
        if self.wire.adopting is not None and request.method == "POST":
            answered = _handshake_answered_here(request, self.wire)
            if answered is not None:
                return answered
        if request.method == "GET":
            now = time.monotonic()
            wait, self._next_stream = self._next_stream - now, max(now, self._next_stream) + self.stream_gap
            if wait > 0:
                await anyio.sleep(wait)
        try:
            response = await self.inner.handle_async_request(request)
        except httpx2.ConnectError:
            sid = self.wire.session_id
            if request.method == "GET" and sid and request.headers.get("mcp-session-id") == sid:
                self.wire.ended = True  # the event stream cannot be reopened: the SDK gives up on it after two tries
            raise
        finally:
            if request.method == "GET":
                self.wire.listening.set()
        spawn = self._spawn if _reusable(response) else None
        response.stream = _DrainOnClose(response.stream, spawn)  # type: ignore[arg-type]
        wire = self.wire
        if wire.session_id is None and (sid := response.headers.get("mcp-session-id")):
            wire.session_id = sid  # the session the SDK opened; the relay speaks on it too
        elif response.status_code == 404 and wire.session_id and request.headers.get("mcp-session-id") == wire.session_id:
            wire.ended = True
        if request.method == "POST" and response.headers.get("content-type", "").startswith("application/json"):
            return await _addressed(request, response)
        return response

    def _spawn(self, drain: Callable[[], Awaitable[None]]) -> bool:
        if self._drains is None:
            return False
        self._drains.start_soon(drain)
        return True

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _addressed(request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
    """A JSON answer to a request must carry its id: the SDK drops any other, and the caller would wait forever.

    An error with a null id (the target could not read the request) or an HTTP error status is this
    request's; any other answer with another id becomes an error for the request. The body is read here,
    once, and handed on in memory.
    """
    asked = _request_id(request)
    if asked is None or "content-encoding" in response.headers:
        return response
    body = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
    await response.stream.aclose()  # type: ignore[union-attr]
    response.stream = httpx2.ByteStream(body)
    try:
        message = pydantic_core.from_json(body)
    except ValueError:
        return response  # the SDK says what is wrong with it
    if not isinstance(message, dict) or message.get("id") == asked:
        return response
    error = message.get("error")
    if "result" not in message and not isinstance(error, dict):
        return response  # not a JSON-RPC response (a 401's body, say): not ours to judge
    if isinstance(error, dict) and (message.get("id") is None or response.status_code >= 400):
        answer: dict[str, Any] = {**message, "id": asked}
    else:
        problem = f"Upstream answered request {asked!r} with the response to {message.get('id')!r}"
        answer = {"jsonrpc": "2.0", "id": asked, "error": {"code": types.INTERNAL_ERROR, "message": problem}}
    return httpx2.Response(response.status_code, json=answer, request=request, extensions=response.extensions)


def _reusable(response: httpx2.Response) -> bool:
    """Whether the response's connection may carry another request (else there is nothing to drain for).

    Not when the server says it will close, nor for a body without a length or chunks (it ends with the connection).
    """
    headers = response.headers
    framed = "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower()
    return framed and response.http_version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()


class _DrainOnClose(httpx2.AsyncByteStream):
    """Reads what is left of a body after its reader stopped early, so the connection stays reusable.

    The drain goes on in the background (no request waits for it), bounded by time and bytes, on the
    reader's own iterator: held here, so a reader's abandoned iterator being finalized cannot close the
    connection under it. A body read to its end is only closed: httpcore must never be asked for more of
    an ended body (after the connection closes, it answers in a loop that never yields).
    """

    seconds = 1.0
    max_bytes = 64 * 1024

    def __init__(self, inner: Any, spawn: Callable[[Callable[[], Awaitable[None]]], bool] | None) -> None:
        self.inner = inner
        self.spawn = spawn  # starts a drain and says whether it could; None: the connection will close anyway
        self._chunks: AsyncIterator[bytes] | None = None
        self._ended = False  # read to its end, or failed (httpcore then closed the connection itself)
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._chunks is None:
            self._chunks = self.inner.__aiter__()
        try:
            async for chunk in self._chunks:
                yield chunk
        except GeneratorExit:
            raise  # the reader stopped early: the rest may be drained
        except BaseException:
            self._ended = True
            raise
        self._ended = True

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ended or self.spawn is None or not self.spawn(self._drain):
            await self._close()

    async def _drain(self) -> None:
        try:
            with anyio.move_on_after(self.seconds):
                if self._chunks is None:
                    self._chunks = self.inner.__aiter__()
                left = self.max_bytes
                async for chunk in self._chunks:
                    left -= len(chunk)
                    if left < 0:
                        break  # still streaming: not worth a connection
        except Exception as exc:
            logger.debug("draining a response failed: %s", _describe(exc))
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()

    async def _close(self) -> None:
        if self._chunks is not None:
            with contextlib.suppress(Exception):
                await self._chunks.aclose()  # type: ignore[attr-defined]
        await self.inner.aclose()


async def _drain(subscription: Any) -> None:
    """Consume a listen stream's events (the message handler has already seen each one)."""
    with contextlib.suppress(Exception):
        async for _ in subscription:
            pass


def _tls_hint(spec: TargetSpec, problem: str) -> str:
    """A TLS server that refuses the client's certificate (or its lack of one) after a TLS 1.3 handshake
    may just close the connection; say what that probably means."""
    if not spec.url.startswith("https:") or "Server disconnected without sending a response" not in problem:
        return problem
    if getattr(spec.tls, "client_certificate", False):
        return f"{problem} (the TLS server may have refused the client certificate)"
    return f"{problem} (the TLS server may require a client certificate: backendTLS cert and key)"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    if isinstance(exc, MCPError):
        return exc.message
    text = str(exc) or type(exc).__name__
    return text if not isinstance(exc, OSError | httpx2.HTTPError) else f"{type(exc).__name__}: {text}"
