"""The HTTP stage of a route's policies: who is calling (authentication), and may the request go on.

Each step looks at the request's ASGI scope, fills in the caller's `Identity` or refuses with a
response. The identity then rides in the scope (`scope["state"]`) to the message layer, where
authorization rules and rate limits read it, and `scope["user"]` carries the principal the MCP
SDK binds sessions to, so a session opened by one caller cannot be used by another.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote_plus

import httpx
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config.policies import TokenLocation

IDENTITY = "agentplex.identity"
REQUEST_BODY = "agentplex.request_body"  # a RequestBody while the steps run (see request_body())
REQUEST_VARS = "agentplex.request"  # the `request.*` CEL variables, built once per request (cel_context)
RESPONSE_VARS = "agentplex.response_vars"  # scope["state"] key: the answer's status and headers, for CEL


@dataclass
class Consumed:
    """Where the route's authentication policies read credentials: those places are the gateway's, and are
    removed from every request proxied on (to agents, plain backends, mirrors), whether or not they held a
    good credential. backendAuth adds what the backend should get instead (passthrough: the caller's token)."""

    headers: set[bytes] = field(default_factory=set)
    cookies: set[str] = field(default_factory=set)
    query: set[str] = field(default_factory=set)

    def add(self, location: TokenLocation) -> None:
        if location.header:
            self.headers.add(location.header.lower().encode("latin-1"))
        if location.cookie:
            self.cookies.add(location.cookie)
        if location.queryParameter:
            self.query.add(location.queryParameter)


@dataclass
class Identity:
    """What authentication found out about the caller (empty: anonymous)."""

    jwt: dict[str, Any] | None = None  # validated claims
    token: str | None = None  # the validated bearer token (backendAuth passthrough); never logged
    scopes: list[str] = field(default_factory=list)
    api_key: dict[str, Any] | None = None  # the matched key's metadata
    basic: dict[str, Any] | None = None  # {"username": ...}
    headers: dict[str, str] = field(default_factory=dict)  # from extAuthz, for the upstream request
    consumed: Consumed = field(default_factory=Consumed)  # credentials never proxied on

    def principal(self) -> AccessToken | None:
        """The principal the SDK binds a session to (client_id, issuer, subject)."""
        if self.jwt is not None:
            claims = self.jwt
            subject = claims.get("sub")
            client = claims.get("client_id") or claims.get("azp") or subject or ""
            return AccessToken(
                token=self.token or "", client_id=str(client), scopes=self.scopes, subject=subject, claims=claims
            )
        if self.api_key is not None:
            name = str(self.api_key.get("name") or self.api_key.get("id") or self.api_key.get("_fingerprint"))
            return AccessToken(token="", client_id=f"apiKey:{name}", scopes=[])
        if self.basic is not None:
            return AccessToken(token="", client_id=f"basic:{self.basic['username']}", scopes=[])
        return None


def without_credentials(scope: Scope) -> Scope:
    """`scope` as it may be proxied on: a copy without the headers, cookies and query parameters that
    authentication consumed (the scope itself when there were none)."""
    identity = identity_of(scope)
    consumed = identity.consumed if identity is not None else None
    if not consumed or not (consumed.headers or consumed.cookies or consumed.query):
        return scope
    headers = []
    for key, value in scope.get("headers", ()):
        if key in consumed.headers:
            continue
        if key == b"cookie" and consumed.cookies:
            value = _without_cookies(value, consumed.cookies)
            if not value:
                continue
        headers.append((key, value))
    query = scope.get("query_string", b"")
    if consumed.query and query:
        query = _without_parameters(query, consumed.query)
    return {**scope, "headers": headers, "query_string": query}


def _without_cookies(value: bytes, names: set[str]) -> bytes:
    pairs = [pair.strip() for pair in value.split(b";")]
    kept = [p for p in pairs if p and p.partition(b"=")[0].strip().decode("latin-1") not in names]
    return b"; ".join(kept)


def _without_parameters(query: bytes, names: set[str]) -> bytes:
    """The raw query minus the named parameters, compared decoded (as find_token reads them); the rest
    keeps the client's own encoding."""
    parts = query.split(b"&")
    kept = [p for p in parts if unquote_plus(p.partition(b"=")[0].decode("latin-1")) not in names]
    return b"&".join(kept)


def identity_of(scope: Any) -> Identity | None:
    """The identity authentication left in an ASGI scope (None: no HTTP request, e.g. stdio)."""
    if not isinstance(scope, dict):
        return None
    state = scope.get("state")
    return state.get(IDENTITY) if isinstance(state, dict) else None


class Step(Protocol):
    async def __call__(self, scope: Scope, identity: Identity) -> ASGIApp | None:
        """None lets the request go on; an ASGI app (a response) refuses it."""
        ...


class PolicyApp:
    """Runs a route's HTTP-stage steps in order before its endpoint; the first refusal answers."""

    def __init__(self, app: ASGIApp, steps: Sequence[Step]) -> None:
        self.app = app
        self.steps = list(steps)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if sum(1 for key, _ in scope.get("headers", ()) if key == b"authorization") > 1:
            # Which credential counts would depend on who reads the request (RFC 6750 3.1: invalid_request).
            await Refusal(400, "invalid_request", "more than one Authorization header")(scope, receive, send)
            return
        identity = Identity()
        state = scope.get("state")
        if not isinstance(state, dict):
            state = scope["state"] = {}
        state[IDENTITY] = identity
        body = state[REQUEST_BODY] = RequestBody(receive)
        try:
            for step in self.steps:
                refusal = await step(scope, identity)
                if refusal is not None:
                    await refusal(scope, receive, send)
                    return
        finally:
            del state[REQUEST_BODY]
        principal = identity.principal()
        if principal is not None:
            scope["user"] = AuthenticatedUser(principal)
        await self.app(scope, body.receive if body.used else receive, send)


class RequestBody:
    """The request body for steps that look into it: read at most once, then replayed to the route.

    The messages read are handed to the route's app first, as they came, then the real `receive`
    takes over (the rest of an oversized body, the client's disconnect).
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._messages: list[Message] = []
        self._body: bytes | None = None
        self.used = False

    async def read(self, limit: int) -> bytes | None:
        """The whole body; None if it is longer than `limit` or the client went away (the first caller's limit holds)."""
        if not self.used:
            self.used = True
            self._body = await self._collect(limit)
        return self._body

    async def _collect(self, limit: int) -> bytes | None:
        size = 0
        while True:
            message = await self._receive()
            self._messages.append(message)
            if message["type"] != "http.request":
                return None
            size += len(message.get("body", b""))
            if size > limit:
                return None
            if not message.get("more_body", False):
                return b"".join(m.get("body", b"") for m in self._messages)

    async def receive(self) -> Message:
        if self._messages:
            return self._messages.pop(0)
        return await self._receive()


# -- helpers for steps --------------------------------------------------------------------------


async def request_body(scope: Scope, limit: int) -> bytes | None:
    """The request body for a step (None: none to read, over `limit`, or the client left); the route still gets it."""
    state = scope.get("state")
    holder = state.get(REQUEST_BODY) if isinstance(state, dict) else None
    return await holder.read(limit) if isinstance(holder, RequestBody) else None


class LazyHttpClient:
    """A policy step's HTTP client, made on first use (inside the event loop that serves requests) and
    ended by `aclose`; `client_timeout` is its timeout."""

    client_timeout: float
    _client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.client_timeout, follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def headers_changed(scope: Scope) -> None:
    """A step rewrote the request's headers: rules evaluated from now on read the new ones, not a cached copy."""
    state = scope.get("state")
    if isinstance(state, dict):
        state.pop(REQUEST_VARS, None)


def header(scope: Scope, name: str) -> str | None:
    wanted = name.lower().encode("latin-1")
    for key, value in scope.get("headers", ()):
        if key == wanted:
            return value.decode("latin-1")
    return None


def find_token(scope: Scope, location: TokenLocation) -> str | None:
    """The credential where the policy says it is: a header (after its scheme), a query parameter, a cookie."""
    if location.header:
        value = header(scope, location.header)
        if value is not None:
            prefix = location.prefix
            if not prefix:
                return value.strip() or None
            if value[: len(prefix)].lower() == prefix.lower():
                return value[len(prefix) :].strip() or None
    if location.queryParameter:
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(location.queryParameter)
        if values:
            return values[0] or None
    if location.cookie:
        raw = header(scope, "cookie")
        if raw:
            cookie = SimpleCookie()
            try:
                cookie.load(raw)
            except Exception:  # a malformed Cookie header carries no credential
                return None
            morsel = cookie.get(location.cookie)
            if morsel is not None and morsel.value:
                return morsel.value
    return None


class Refusal:
    """A small JSON error response with extra headers (WWW-Authenticate, Retry-After)."""

    def __init__(self, status: int, error: str, description: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = json.dumps({"error": error, "error_description": description}).encode()
        self.headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(self.body))]
        self.headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def bearer_challenge(error: str | None, description: str | None, **params: str) -> str:
    """An RFC 6750 `WWW-Authenticate: Bearer ...` value (no error code when no token was sent)."""
    parts = ['realm="agentplex"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append('error_description="{}"'.format(description.replace('"', "'").replace("\\", "/")))
    parts += [f'{key}="{value}"' for key, value in params.items()]
    return "Bearer " + ", ".join(parts)
