"""Streamable HTTP front end: both MCP protocol eras on one endpoint, via the SDK's session manager."""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
import pydantic_core
from mcp.server import Server
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.connection import allowed_log_levels
from mcp.server.streamable_http import check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.inbound import (
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp_types import INVALID_REQUEST, methods
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.requests import Request

from protocols import internals
from protocols.mcp.portable import (
    SESSION_HANDOFF,
    CapturedAnswer,
    PortableSessions,
    client_of,
    discard,
    in_process_body,
    session_not_found,
    with_session_id,
)
from protocols.mcp.relay import Downstream, Message, ModernDownstream
from protocols.mcp.session_limits import SessionLimits, TooManySessions, caller_of

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def rebinding_protection(address: str) -> TransportSecuritySettings | None:
    """Host/Origin checks for loopback binds, where DNS rebinding is the threat; none elsewhere."""
    if address not in LOOPBACK and not address.startswith("127."):
        return None
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
    if address.startswith("127.") and address != "127.0.0.1":
        hosts += [f"{address}:*", address]
    origins = [f"{scheme}://{host}" for scheme in ("http", "https") for host in hosts]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


RelayFn = Callable[[Message, Downstream], Awaitable[Message | None]]
# A 2026-07-28 tools/call: a plan to relay it (None: the SDK serves it), run with its downstream.
ModernRelayFn = Callable[[Message], Callable[[ModernDownstream], Awaitable[None]] | None]


def principal(scope: Any) -> dict[str, Any] | None:
    """Who sent an HTTP request, as the SDK tells principals apart (None: anonymous, or not HTTP)."""
    user = scope.get("user") if isinstance(scope, dict) else None
    return authorization_context(user) if isinstance(user, AuthenticatedUser) else None


class StreamableHTTPEndpoint:
    """One MCP endpoint: an ASGI app plus the session manager lifetime that must wrap it.

    With `relay`, a plain handshake-era `tools/call` skips the SDK (see protocols/mcp/relay.py);
    everything else, and any request the relay declines, is served by the SDK's session manager.
    """

    def __init__(
        self,
        server: Server[Any],
        *,
        stateless: bool = False,
        security: TransportSecuritySettings | None = None,
        max_request_body_size: int = 4 * 1024 * 1024,
        session_idle_timeout: float = 300.0,
        relay: RelayFn | None = None,
        relay_modern: ModernRelayFn | None = None,
        limits: SessionLimits | None = None,
        portable: PortableSessions | None = None,
    ) -> None:
        self.manager = StreamableHTTPSessionManager(
            app=server,
            stateless=stateless,
            security_settings=security,
            max_request_body_size=max_request_body_size,
            session_idle_timeout=session_idle_timeout,
            max_sessions=None,  # `limits` counts them, with the route's SSE sessions
        )
        table = SessionTable()
        internals.set_session_table(self.manager, table)  # the SDK's session table, now with start times
        # Sealed session ids (protocols/mcp/portable.py): clients see only those; the SDK keeps its own.
        self.portable = portable if not stateless else None
        if self.portable is not None:
            table.on_forget = self.portable.forget
        self._resuming: dict[str, anyio.Lock] = {}  # sealed ids being resumed, one request at a time each
        self.app = StreamableHTTPASGIApp(self.manager)
        self.relay = relay
        self.relay_modern = relay_modern
        self._input_schema = server.get_tool_input_schema
        self.max_body = max_request_body_size
        self.limits = limits if limits is not None else SessionLimits()
        self._security = TransportSecurityMiddleware(security) if security is not None else None
        # Relayed server-to-client requests awaiting the client's answer, by (session id, request id).
        self._pending: dict[tuple[str, str], Any] = {}
        self._relayed: dict[tuple[str, Any], anyio.CancelScope] = {}  # relayed calls, by (session, request id)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.manager.run():
            yield

    def has_session(self, sid: str) -> bool:
        table = internals.session_table(self.manager)  # the SDK's live sessions
        if self.portable is not None:  # clients name them by sealed id only
            return self.portable.internal(sid) in table
        return sid in table

    def session_count(self) -> int:
        return len(internals.session_table(self.manager))

    def sessions(self) -> list[dict[str, Any]]:
        """The live sessions (for the admin API): id (the one clients use: sealed, with portable sessions),
        who opened it, and how long ago."""
        table: SessionTable = internals.session_table(self.manager)  # type: ignore[assignment]
        portable = self.portable
        show = str if portable is None else (lambda sid: portable.external(str(sid)) or str(sid))
        return table.describe("streamable-http", internals.session_owners(self.manager), show)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.portable is not None:
            translated = await self._translate(scope, send)
            if translated is None:
                return
            scope, send = translated
        if self._opens_session(scope):
            await self._open_session(scope, receive, send)
            return
        if scope.get("method") == "POST" and (self.relay is not None or self.relay_modern is not None):
            replay = await self._try_relay(scope, receive, send)
            if replay is None:
                return
            receive = replay
        await self.app(scope, receive, _InvalidRequestFix(send))

    def _opens_session(self, scope: Any) -> bool:
        """Would the SDK open a session for this request? (Handshake era, stateful, no session id yet.)"""
        if self.manager.stateless:
            return False
        headers = dict(scope["headers"])
        version = headers.get(b"mcp-protocol-version")
        return b"mcp-session-id" not in headers and (
            version is None or version.decode("latin-1") in HANDSHAKE_PROTOCOL_VERSIONS
        )

    async def _open_session(
        self, scope: Any, receive: Any, send: Any, resumed: tuple[str, dict[str, Any], Any] | None = None
    ) -> str | None:
        """Let the SDK open a session if the route's limits allow it; the session counts until the SDK forgets it.
        Returns the SDK's id of the session, if it opened. With portable sessions, its sealed id goes out instead:
        a new one, or for a session `resumed` here, (its sealed id, client, handoff) as it came."""
        caller = caller_of(scope)
        try:
            self.limits.take(caller)
        except TooManySessions as refused:
            await refused.respond(send)
            return None
        table: SessionTable = internals.session_table(self.manager)  # type: ignore[assignment]
        claimed: str | None = None
        external, client, handoff = resumed if resumed is not None else (None, None, None)
        if self.portable is not None and resumed is None:
            message, receive = await _read_json(receive, self.max_body)
            client = client_of(message)
            if client is not None:
                handoff = await self.portable.carrier.opening(scope)
        if handoff is not None:
            scope = {**scope, SESSION_HANDOFF: handoff}

        async def watch(message: dict[str, Any]) -> None:
            nonlocal claimed
            if message["type"] == "http.response.start" and message["status"] < 400:
                sid = next((v.decode("latin-1") for k, v in message["headers"] if k.lower() == b"mcp-session-id"), "")
                if sid in table:  # opened: from now on the SDK's forgetting it gives its place back
                    table.claim(sid, lambda: self.limits.release(caller))
                    claimed = sid
                    if self.portable is not None:
                        message = self._sealed_start(message, sid, scope, external, client, handoff)
            await send(message)

        try:
            await self.app(scope, receive, _InvalidRequestFix(watch))
        finally:
            if claimed is None:
                self.limits.release(caller)
            if handoff is not None:
                await self.portable.carrier.dropped(handoff)  # type: ignore[union-attr]  # closes it unless taken
        return claimed

    def _sealed_start(
        self, start: dict[str, Any], sid: str, scope: Any, external: str | None, client: Any, handoff: Any
    ) -> dict[str, Any]:
        """The response that opened session `sid`, with its sealed id in place of the SDK's."""
        assert self.portable is not None
        if external is None:
            external = self.portable.mint(sid, principal(scope), client or {}, handoff)
        else:
            self.portable.remember(external, sid)
        return with_session_id(start, sid, external)

    async def _translate(self, scope: Any, send: Any) -> tuple[Any, Any] | None:
        """A request on a sealed session id, made a request on the SDK's id of that session here (resumed from
        the seal if this replica does not have it); None when it was answered 404 (unknown, tampered, another
        caller's, or made for another set of targets)."""
        assert self.portable is not None
        headers = scope["headers"]
        external = next((v.decode("latin-1") for k, v in headers if k == b"mcp-session-id"), None)
        version = next((v.decode("latin-1") for k, v in headers if k == b"mcp-protocol-version"), None)
        if external is None or version in MODERN_PROTOCOL_VERSIONS:  # 2026-07-28 requests have no session
            return scope, send
        table = internals.session_table(self.manager)
        internal = self.portable.internal(external)
        if internal is None or internal not in table:
            resumed = await self._resume(external, scope)
            if not isinstance(resumed, str):
                if resumed is not None and resumed.status in (429, 503):  # the route's session limits refused it
                    await resumed.replay(send)
                else:
                    await session_not_found(send)
                return None
            internal = resumed
        inner = internal.encode("latin-1")
        scope = {**scope, "headers": [(k, inner if k == b"mcp-session-id" else v) for k, v in headers]}

        async def outward(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = with_session_id(message, internal, external)
            await send(message)

        return scope, outward

    async def _resume(self, external: str, scope: Any) -> str | CapturedAnswer | None:
        """Open here the session a sealed id describes: the SDK's session, initialized as the client initialized
        it, with the upstream sessions the seal names taken up again. Its SDK id; else the answer that refused
        to open it, or None if it cannot be resumed."""
        assert self.portable is not None
        state = self.portable.opened(external, principal(scope))
        if state is None:
            return None
        lock = self._resuming.setdefault(external, anyio.Lock())
        try:
            async with lock:
                internal = self.portable.internal(external)  # another request resumed it meanwhile?
                if internal is not None and internal in internals.session_table(self.manager):
                    return internal
                handoff = await self.portable.carrier.resuming(state["u"], scope)
                if handoff is None:
                    return None
                return await self._reopen(scope, external, state["c"], handoff)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._resuming.pop(external, None)

    async def _reopen(
        self, scope: Any, external: str, client: dict[str, Any], handoff: Any
    ) -> str | CapturedAnswer | None:
        """The SDK's own way into an initialized session, in-process: an initialize and its notification. An
        initialize that fails (failClosed with a target down, a policy) leaves no session: None."""
        base = [(k, v) for k, v in scope["headers"] if k in (b"host", b"origin", b"authorization", b"user-agent")]
        base += [(b"content-type", b"application/json"), (b"accept", b"application/json, text/event-stream")]
        init = {"jsonrpc": "2.0", "id": _RESUME_ID, "method": "initialize", "params": client}
        answer = CapturedAnswer()
        sid = await self._open_session(
            {**scope, "method": "POST", "headers": base}, in_process_body(init), answer, (external, client, handoff)
        )
        if sid is None:
            return answer
        version = str(client.get("protocolVersion", ""))
        headers = [*base, (b"mcp-session-id", sid.encode("latin-1")), (b"mcp-protocol-version", version.encode())]
        if not answer.answered(_RESUME_ID):
            await self.app({**scope, "method": "DELETE", "headers": headers}, in_process_body(None), discard)
            return None
        done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        await self.app({**scope, "method": "POST", "headers": headers}, in_process_body(done), discard)
        return sid

    async def _try_relay(self, scope: Any, receive: Any, send: Any) -> Any:
        """Serve the request on the relay and return None, or return the `receive` the SDK should use."""
        headers = {k: v for k, v in scope["headers"] if k in _RELAY_HEADERS}
        sid = headers.get(b"mcp-session-id", b"").decode("latin-1")
        if not sid and headers.get(b"mcp-protocol-version", b"").decode("latin-1") in MODERN_PROTOCOL_VERSIONS:
            return await self._try_relay_modern(scope, receive, send, headers)
        transport = internals.session_table(self.manager).get(sid) if sid else None  # the SDK's live sessions
        if (
            self.relay is None
            or transport is None
            or headers.get(b"mcp-protocol-version", b"").decode("latin-1") not in HANDSHAKE_PROTOCOL_VERSIONS
            or not headers.get(b"content-type", b"").startswith(b"application/json")
            or not _accepts_both(headers.get(b"accept", b""))
            or not _length_ok(headers.get(b"content-length", b"0"), self.max_body)
            or (self._security is not None and not self._security_ok(headers))
            or internals.session_ending(transport)
            or not self._same_principal(scope, sid)
        ):
            return receive
        message, replay = await _read_json(receive, self.max_body)
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return replay
        if "method" not in message:  # a client's answer to a request the relay sent down on this session?
            waiter = self._pending.pop((sid, message["id"]), None) if type(message.get("id")) is str else None
            if waiter is None:
                return replay
            with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                waiter.send_nowait(message)
            await _respond(send, 202, b"")
            return None
        method = message.get("method")
        if method == "notifications/cancelled":  # for a relayed call? (the SDK never saw its id)
            params = message.get("params")
            request_id = params.get("requestId") if isinstance(params, dict) else None
            call = self._relayed.get((sid, request_id)) if _plain_id(request_id) else None
            if call is None:
                return replay
            call.cancel()
            await _respond(send, 202, b"")
            return None
        params = message.get("params")
        if (
            method != "tools/call"
            or not _plain_id(message.get("id"))
            or not isinstance(params, dict)
            or not isinstance(params.get("name"), str)
        ):
            return replay  # the SDK answers anything less plain (an odd id or name is its to refuse)
        downstream = Downstream(send, sid, self._pending, scope)
        key = (sid, message["id"])
        with internals.held_open(transport), anyio.CancelScope() as call:
            self._relayed[key] = call
            try:
                response = await self.relay(message, downstream)
            finally:
                self._relayed.pop(key, None)
            if response is None:
                return replay
            await downstream.finish(response)
        if call.cancelled_caught:  # the client gave up on it; the HTTP exchange still needs an end
            await downstream.abandon()
        return None

    async def _try_relay_modern(self, scope: Any, receive: Any, send: Any, headers: dict[bytes, bytes]) -> Any:
        """A 2026-07-28 `tools/call` on the relay, once it passes every check the SDK's entry makes (its own
        functions make them); anything it would refuse or treat specially is left to it."""
        if (
            self.relay_modern is None
            or not headers.get(b"content-type", b"").startswith(b"application/json")
            or not _accepts_json_and_sse(next((v for k, v in scope["headers"] if k == b"accept"), b""))
            or not _length_ok(headers.get(b"content-length", b"0"), self.max_body)
            or (self._security is not None and not self._security_ok(headers))
        ):
            return receive
        message, replay = await _read_json(receive, self.max_body)
        version = self._plain_modern_call(scope, message)
        plan = self.relay_modern(message) if version is not None else None
        if plan is None:
            return replay
        levels = allowed_log_levels(version, message["params"].get("_meta"))
        downstream = ModernDownstream(send, receive, scope, message, levels)
        async with anyio.create_task_group() as tg:
            downstream.start_watching(tg)
            try:
                await plan(downstream)
            finally:
                downstream.stop_watching()
        return None

    def _plain_modern_call(self, scope: Any, message: Any) -> str | None:
        """The protocol version of a 2026-07-28 `tools/call` the SDK's entry would dispatch as it is (a valid
        envelope, headers that agree with it, valid `Mcp-Param-*` headers, and no retry: retries carry state
        the SDK unseals); None for anything else."""
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or message.get("method") != "tools/call":
            return None
        params = message.get("params")
        if (
            not _plain_id(message.get("id"))
            or not isinstance(params, dict)
            or not isinstance(params.get("name"), str)
            or params.get("requestState") is not None
            or params.get("inputResponses") is not None
        ):
            return None
        # The SDK's checks read only `Mcp-*` headers (routing and `Mcp-Param-*`); ASGI names are lowercase.
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k.startswith(b"mcp-")]
        if find_duplicated_routing_header(raw) is not None:
            return None
        folded = dict(reversed(raw))  # the first of each, as starlette reads them
        verdict = classify_inbound_request(message, headers=folded)
        if isinstance(verdict, InboundLadderRejection):
            return None
        try:
            methods.validate_client_request("tools/call", verdict.protocol_version, params)
        except (KeyError, ValueError):  # pydantic's ValidationError is a ValueError
            return None
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict):
            return None
        if arguments or any(k.startswith("mcp-param-") for k in folded):
            schema = self._input_schema(params["name"]) if self._input_schema is not None else None
            if schema is None or validate_mcp_param_headers(schema, arguments, folded) is not None:
                return None
        return verdict.protocol_version

    def _same_principal(self, scope: Any, sid: str) -> bool:
        """The SDK binds a session to the principal that opened it; the relay keeps that promise
        by leaving any other caller to the SDK, which answers as if the session did not exist."""
        return principal(scope) == internals.session_owners(self.manager).get(sid)  # the SDK's own bookkeeping

    def _security_ok(self, headers: dict[bytes, bytes]) -> bool:
        assert self._security is not None
        host = headers.get(b"host", b"").decode("latin-1")
        origin = headers.get(b"origin", b"").decode("latin-1") or None
        return internals.security_allows(self._security, host, origin)


_RESUME_ID = "agentplex-resume"  # the id of the initialize a resume replays in-process

_RELAY_HEADERS = frozenset(
    {b"mcp-session-id", b"mcp-protocol-version", b"content-type", b"accept", b"content-length", b"host", b"origin"}
)


class SessionTable(dict[Any, Any]):
    """An SDK's table of live sessions (streamable HTTP's manager, SSE's streams), remembering when each
    was added (monotonic seconds), which the SDK does not, and telling a session's claimant when it goes."""

    def __init__(self) -> None:
        super().__init__()
        self.started: dict[Any, float] = {}
        self._releases: dict[Any, Callable[[], None]] = {}
        self.on_forget: Callable[[Any], None] | None = None  # told of every session forgotten

    def claim(self, sid: Any, release: Callable[[], None]) -> None:
        """Call `release` once `sid` is forgotten (its place in SessionLimits)."""
        self._releases[sid] = release

    def __setitem__(self, sid: Any, transport: Any) -> None:
        self.started.setdefault(sid, time.monotonic())
        super().__setitem__(sid, transport)

    def __delitem__(self, sid: Any) -> None:
        self._forget(sid)
        super().__delitem__(sid)

    def pop(self, sid: Any, *default: Any) -> Any:
        self._forget(sid)
        return super().pop(sid, *default)

    def clear(self) -> None:
        for sid in list(self):
            self._forget(sid)
        super().clear()

    def _forget(self, sid: Any) -> None:
        if self.on_forget is not None:
            self.on_forget(sid)
        self.started.pop(sid, None)
        release = self._releases.pop(sid, None)
        if release is not None:
            release()

    def describe(self, transport: str, owners: Mapping[Any, Any], show: Callable[[Any], str]) -> list[dict[str, Any]]:
        """Each session: its id (as `show` writes it), who opened it (the SDK's `owners`), and how long ago."""
        now = time.monotonic()
        out = []
        for sid in list(self):
            owner = owners.get(sid)
            started = self.started.get(sid)
            principal = (owner.get("subject") or owner.get("client_id")) if owner else None
            age = round(now - started, 1) if started is not None else None
            out.append({"id": show(sid), "transport": transport, "principal": principal, "ageSeconds": age})
        return out


def _length_ok(length: bytes, limit: int) -> bool:
    """A declared length the relay can take; anything else (odd or too big) is the SDK's to answer."""
    return length.isdigit() and int(length) <= limit


def _plain_id(value: Any) -> bool:
    """A request id the relay handles: a string or an integer (what MCP allows; not a bool, float or object)."""
    return type(value) is str or type(value) is int


@functools.lru_cache(maxsize=64)
def _accepts_json_and_sse(accept: bytes) -> bool:
    """The SDK's own Accept check for a request with this (first) Accept header, made once per distinct
    value: a client sends the same one every time, and the check parses it into a starlette Request."""
    return check_accept_headers(Request({"type": "http", "headers": [(b"accept", accept)]})) == (True, True)


def _accepts_both(accept: bytes) -> bool:
    return (b"application/json" in accept or b"*/*" in accept) and (b"text/event-stream" in accept or b"*/*" in accept)


async def _read_body(receive: Any, limit: int) -> tuple[bytes | None, list[dict[str, Any]]]:
    """The whole request body (None past `limit`, or if the client left) and every message read for it.

    Whatever was read goes to the SDK when the relay declines, so it sees the request as it came: past
    the limit it answers 413 (a body the relay half-read must not reach it as its own tail).
    """
    read: list[dict[str, Any]] = []
    size = 0
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            return None, read
        size += len(message.get("body", b""))
        if size > limit:
            return None, read
        if not message.get("more_body", False):
            return b"".join(m.get("body", b"") for m in read), read


async def _read_json(receive: Any, limit: int) -> tuple[Any, Any]:
    """The request body parsed as JSON (None if it is not JSON, too big, or never came whole), and the
    `receive` that hands the SDK what was read, for when the relay declines."""
    body, read = await _read_body(receive, limit)
    replay = _replay(read, receive)
    if body is None:
        return None, replay
    try:
        return pydantic_core.from_json(body), replay
    except ValueError:
        return None, replay


def _replay(read: list[dict[str, Any]], receive: Any) -> Any:
    """A `receive` that hands the SDK the messages the relay already read, then the real stream."""
    pending = list(read)

    async def replay() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _respond(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


class _InvalidRequestFix:
    """Answers a body that is JSON but not JSON-RPC with -32600 Invalid Request.

    The SDK answers it with -32602 and a pydantic dump; only 400 responses are touched, so the
    normal path pays one status check.
    """

    def __init__(self, send: Any) -> None:
        self.send = send
        self.start: dict[str, Any] | None = None

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] == 400:
            self.start = message
            return
        if self.start is not None and message["type"] == "http.response.body":
            body = message.get("body", b"")
            if b'"code":-32602' in body and b"Validation error" in body:
                body = json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {"code": INVALID_REQUEST, "message": "Invalid Request: not a JSON-RPC 2.0 message"},
                    }
                ).encode()
            headers = [(k, v) for k, v in self.start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await self.send({**self.start, "headers": headers})
            self.start = None
            await self.send({**message, "body": body, "more_body": False})
            return
        await self.send(message)
