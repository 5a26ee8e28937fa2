"""A streaming reverse proxy for one request to an agent, over one pooled HTTP client.

Bodies are streamed both ways: a large upload is not held in memory, and each SSE event an agent
writes reaches the client as soon as it arrives (A2A streams are long-lived and event-paced).
Failures before the agent's answer starts raise `AgentUnavailable`, so the caller can answer in the
request's own dialect (a JSON-RPC error with its id, or a REST error); after that the stream is ended.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Protocol

import anyio
import httpx
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import Receive, Scope, Send

from protocols import pooled_sockets, redaction

logger = logging.getLogger("agentplex.a2a")

# RFC 9110 §7.6.1 (plus the legacy proxy ones); headers named in `Connection` are dropped too.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Not forwarded up: the caller's credentials are the gateway's business, the agent gets its own.
_NOT_UP = HOP_BY_HOP | {b"host", b"authorization", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
# Cookies named so are the gateway's own (the admin UI's sign-in): browsers send a host's cookies to every
# port of it, so they reach the gateway's routes too, and must never travel on to a backend.
OWN_COOKIE_PREFIX = b"agentplex-"
# Not passed down: the gateway's server writes its own.
_NOT_DOWN = HOP_BY_HOP | {b"date", b"server"}
HEAD_TIMEOUT = 300.0  # seconds for the agent to start answering (a blocking SendMessage can take long)
MAX_REWRITTEN_BODY = 1024 * 1024
MAX_SIGNED_BODY = 16 * 1024 * 1024  # a body read whole so credentials can cover it (Upstream.signs_body)


def new_client(verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """The pooled client for talking to agents: no read timeout (streams idle between events; the
    proxy bounds the wait for the answer's start), no redirects followed, no proxy from the environment.
    `verify`: a route's backendTLS context (private CA, client certificate), built once."""
    client = httpx.AsyncClient(
        verify=verify,
        timeout=httpx.Timeout(connect=10.0, read=None, write=60.0, pool=10.0),
        limits=httpx.Limits(max_connections=1024, max_keepalive_connections=128, keepalive_expiry=30.0),
        follow_redirects=False,
        trust_env=False,
        cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),  # shared by every caller: store none
        event_hooks={"request": [_send_trace_context]},
    )
    pooled_sockets.install(client)  # not coalesced: an upload streams through as it comes
    return client


_W3C = TraceContextTextMapPropagator()


async def _send_trace_context(request: httpx.Request) -> None:
    """With a trace span current (the gateway's, when tracing is on), its W3C `traceparent` replaces the
    caller's; otherwise the caller's headers, trace context included, go on as they came."""
    if trace.get_current_span().get_span_context().is_valid:
        for name in ("traceparent", "tracestate"):
            request.headers.pop(name, None)
        _W3C.inject(request.headers)


class AgentUnavailable(Exception):
    """The agent could not be reached or did not answer; nothing has been sent to the client yet."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ClientGone(Exception):
    """The client disconnected while its body was being streamed up."""


@dataclass(frozen=True)
class Upstream:
    """Where and as whom to forward: the agent's name (for errors), the full URL, its configured headers."""

    agent: str
    url: str
    headers: Mapping[str, str]
    timeout: float | None = HEAD_TIMEOUT
    kind: str = "agent"  # how errors name it ("backend" for plain HTTP routes)
    # Credentials set on the request as it is sent (each attempt): a query parameter, a cookie, a signature.
    # With `signs_body`, the body is read whole first (at most MAX_SIGNED_BODY), so they can cover it.
    auth: Callable[[httpx.Request], Awaitable[None]] | None = None
    signs_body: bool = False


class AuthFailed(Exception):
    """`Upstream.auth` could not set credentials on the request (the message says why)."""


Content = bytes | AsyncIterator[bytes] | None
Attempt = Callable[[Content], Awaitable[httpx.Response]]


class Sending(Protocol):
    """How a request reaches its upstream, when once is not enough (gateway/policies/retry.py).

    `attempt(content)` sends the request once and returns the answer's head (its body still to be read),
    or raises httpx errors / TimeoutError (the per-attempt `Upstream.timeout`). An implementation may
    call it again with the same content only if that content can be replayed (bytes or None), must close
    answers it does not return, and may raise AgentUnavailable itself."""

    async def send(self, upstream: Upstream, method: str, content: Content, attempt: Attempt) -> httpx.Response: ...


async def forward(
    client: httpx.AsyncClient,
    upstream: Upstream,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    public: str,
    body: bytes | None = None,
    rewrite: Callable[[bytes], bytes] | None = None,
    sending: Sending | None = None,
    relocate: Callable[[str], str] | None = None,
) -> None:
    """Proxy the request in `scope` to `upstream.url` and stream the answer back.

    `public` is `scheme://host` as the client addressed the gateway (for X-Forwarded-Proto/-Host).
    `body`, if given, is the request body already read (and `receive` is past it). `rewrite`, if
    given, transforms a successful JSON answer (bounded; used for cards, which name URLs). `sending`, if
    given, decides how often and how long the request is tried (retries, an overall deadline). `relocate`, if
    given, rewrites the answer's Location and Content-Location (they may name the upstream's own address).
    Raises AgentUnavailable (502/503/504) before anything is sent."""
    headers = request_headers(scope, upstream.headers, public)
    if rewrite is not None:  # the rewrite reads plain JSON
        headers = [(k, v) for k, v in headers if k != b"accept-encoding"] + [(b"accept-encoding", b"identity")]
    content: Content = body
    if body is None and has_body(scope):
        content = _stream_body(receive)
        if upstream.signs_body:
            content = await _read_whole(content, upstream)
            if content is None:
                return
    if isinstance(content, bytes):  # httpx sets Content-Length for bytes
        headers = [(k, v) for k, v in headers if k not in (b"content-length", b"transfer-encoding")]
    timeouts = {"timeout": client.timeout.as_dict()}

    async def attempt(content: Content) -> httpx.Response:
        # Not client.build_request: it would add the client's default headers (Accept-Encoding the caller
        # did not send) and its cookies (one caller's cookies sent for another).
        request = httpx.Request(scope["method"], upstream.url, headers=headers, content=content, extensions=timeouts)
        if upstream.auth is not None:
            try:
                await upstream.auth(request)
            except Exception as exc:
                raise AuthFailed(str(exc) or type(exc).__name__) from None
        with anyio.fail_after(upstream.timeout):
            return await client.send(request, stream=True)

    try:
        if sending is None:
            response = await attempt(content)
        else:
            response = await sending.send(upstream, scope["method"], content, attempt)
    except _ClientGone:
        return
    except AuthFailed as exc:
        problem = redaction.text(str(exc))
        raise AgentUnavailable(502, f"{upstream.kind} {upstream.agent!r}: backendAuth failed: {problem}") from None
    except TimeoutError:
        raise AgentUnavailable(504, f"{upstream.kind} {upstream.agent!r} did not answer within {upstream.timeout:g} s") from None
    except httpx.PoolTimeout:
        raise AgentUnavailable(503, f"too many open requests to {upstream.kind} {upstream.agent!r}; try again") from None
    except httpx.TimeoutException:
        raise AgentUnavailable(504, f"{upstream.kind} {upstream.agent!r} timed out") from None
    except httpx.ConnectError as exc:
        raise AgentUnavailable(502, f"{upstream.kind} {upstream.agent!r} is unreachable ({_why(exc)})") from None
    except httpx.HTTPError as exc:
        raise AgentUnavailable(502, f"{upstream.kind} {upstream.agent!r} failed to answer ({_why(exc)})") from None
    try:
        if rewrite is not None and _rewritable(response):
            await _send_rewritten(response, rewrite, upstream, send, relocate)
        else:
            await _stream_down(response, receive, send, upstream.agent, relocate)
    finally:
        await response.aclose()


def _foreign_cookies(value: bytes) -> bytes:
    """A Cookie header without the gateway's own cookies (b"" when nothing else is left)."""
    if OWN_COOKIE_PREFIX not in value:
        return value
    pairs = [pair.strip() for pair in value.split(b";")]
    return b"; ".join(pair for pair in pairs if pair and not pair.startswith(OWN_COOKIE_PREFIX))


def request_headers(scope: Scope, configured: Mapping[str, str], public: str) -> list[tuple[bytes, bytes]]:
    """The caller's headers as they go upstream: minus hop-by-hop, Host and Authorization, plus `configured`
    and X-Forwarded-*."""
    raw: list[tuple[bytes, bytes]] = scope.get("headers", [])
    named = _connection_tokens(raw)
    mine = {k.lower().encode("latin-1") for k in configured}
    out = [(k, v) for k, v in raw if k not in _NOT_UP and k not in named and k not in mine and k != b"cookie"]
    cookies = [kept for k, v in raw if k == b"cookie" and k not in mine and (kept := _foreign_cookies(v))]
    out += [(b"cookie", value) for value in cookies]
    out += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in configured.items()]
    client = scope.get("client")
    chain = b", ".join(v for k, v in raw if k == b"x-forwarded-for")
    if client:
        peer = str(client[0]).encode("latin-1")
        chain = chain + b", " + peer if chain else peer
    if chain:
        out.append((b"x-forwarded-for", chain))
    proto, _, host = public.partition("://")
    out.append((b"x-forwarded-proto", proto.encode("latin-1")))
    out.append((b"x-forwarded-host", host.encode("latin-1")))
    return out


def _connection_tokens(raw: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names listed in `Connection` (RFC 9110 §7.6.1): they are for this hop only."""
    return {token.strip().lower() for k, v in raw if k == b"connection" for token in v.split(b",") if token.strip()}


def has_body(scope: Scope) -> bool:
    headers = dict(scope.get("headers", []))
    return b"transfer-encoding" in headers or headers.get(b"content-length", b"0").strip() not in (b"0", b"")


async def _read_whole(content: AsyncIterator[bytes], upstream: Upstream) -> bytes | None:
    """The whole body (None if the client left), or AgentUnavailable 413 past MAX_SIGNED_BODY."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in content:
            size += len(chunk)
            if size > MAX_SIGNED_BODY:
                limit = MAX_SIGNED_BODY // (1024 * 1024)
                raise AgentUnavailable(413, f"a request body for {upstream.kind} {upstream.agent!r} is signed whole: at most {limit} MiB")
            chunks.append(chunk)
    except _ClientGone:
        return None
    return b"".join(chunks)


async def _stream_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _response_head(
    response: httpx.Response,
    drop: frozenset[bytes] = frozenset(),
    relocate: Callable[[str], str] | None = None,
) -> list[tuple[bytes, bytes]]:
    raw = response.headers.raw
    named = _connection_tokens(list(raw))
    head = [
        (k.lower(), v)
        for k, v in raw
        if k.lower() not in _NOT_DOWN and k.lower() not in named and k.lower() not in drop
    ]
    if relocate is None:
        return head
    out = []
    for k, v in head:
        if k in _LOCATIONS:
            try:
                v = relocate(v.decode("latin-1")).encode("latin-1")
            except (ValueError, UnicodeError):
                continue  # not a URL we can read: better none than one that may name the upstream
        out.append((k, v))
    return out


_LOCATIONS = frozenset({b"location", b"content-location"})


async def _stream_down(
    response: httpx.Response, receive: Receive, send: Send, agent: str, relocate: Callable[[str], str] | None = None
) -> None:
    head = _response_head(response, relocate=relocate)
    await send({"type": "http.response.start", "status": response.status_code, "headers": head})
    gone = False

    async def watch(scope: anyio.CancelScope) -> None:
        """A client that leaves ends the agent's stream too (an idle SSE stream would otherwise stay open)."""
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch, tg.cancel_scope)
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as exc:  # the agent broke off mid-answer: end the client's answer too
            logger.warning("agent %r broke off its answer: %s", agent, _why(exc))
        except OSError:  # the client is gone
            gone = True
        tg.cancel_scope.cancel()
    if not gone:
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _rewritable(response: httpx.Response) -> bool:
    kind = response.headers.get("content-type", "")
    return response.status_code == 200 and "json" in kind and "content-encoding" not in response.headers


async def _send_rewritten(
    response: httpx.Response,
    rewrite: Callable[[bytes], bytes],
    up: Upstream,
    send: Send,
    relocate: Callable[[str], str] | None = None,
) -> None:
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > MAX_REWRITTEN_BODY:
            raise AgentUnavailable(502, f"agent {up.agent!r} sent a card larger than {MAX_REWRITTEN_BODY} bytes")
    try:
        out = rewrite(bytes(body))
    except ValueError as exc:
        raise AgentUnavailable(502, f"agent {up.agent!r} sent an unreadable card ({exc})") from None
    head = _response_head(response, frozenset({b"content-length", b"etag"}), relocate)
    head.append((b"content-length", b"%d" % len(out)))
    await send({"type": "http.response.start", "status": response.status_code, "headers": head})
    await send({"type": "http.response.body", "body": out, "more_body": False})


def _why(exc: Exception) -> str:
    text = redaction.text(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
