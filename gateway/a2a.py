"""A2A routes: agents served through the gateway, their cards rewritten to point back at it.

The short `a2a:` block serves every agent of its registry under `<path>/<name>/` (the agent sees the path
below that, below its URL); a full-shape route with `policies: {a2a: {}}` and a `host` backend serves one
agent at its path prefix, which the agent sees as the reference's would: as the client sent it, or as the
route's urlRewrite replaced it (gateway/app.py folds that into the agent's URL). Either way a
request is located (agent, path below it), checked against message-layer policy (the A2A method,
agent and skill, through the route's guard) and streamed to the agent by protocols/a2a/proxy.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from mcp.shared.exceptions import MCPError
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from federation.agents import Agent, AgentRegistry, AgentSpec
from federation.guard import Access, Guard
from gateway import agent_addresses
from gateway.agent_addresses import AddressPolicy
from gateway.policies.backend_auth import request_auth
from gateway.policies.http import without_credentials
from gateway.policies.mcp_authn import public_base
from protocols import redaction
from protocols.a2a import proxy
from protocols.a2a.card import CARD_PATH, LEGACY_CARD_PATH, fetch_card, relocate, rewrite_card
from protocols.a2a.errors import INTERNAL_ERROR, UNSUPPORTED_OPERATION, jsonrpc_error, rest_error
from protocols.a2a.methods import MESSAGE_METHODS, NotJsonRpc, parse_jsonrpc, rest_method, skill_of

logger = logging.getLogger("agentplex.a2a")

MAX_BODY = 4 * 1024 * 1024  # a request body read to find its method and skill (JSON-RPC, REST messages)
_RATE_LIMITED = -32029  # gateway.policies.ratelimit_local.RATE_LIMITED
_SAFE_PATH = "/:@!$&'()*+,;=-._~"


class A2ARoutes:
    """The gateway's A2A side: one pooled HTTP client for cards and calls, one registry per route."""

    def __init__(self) -> None:
        self.client: httpx.AsyncClient | None = None
        self.registries: dict[str, AgentRegistry] = {}  # route name -> its agents
        self.tls: dict[str, ssl.SSLContext] = {}  # route name -> its backendTLS context
        self.clients: dict[str, httpx.AsyncClient] = {}  # route name -> its own client (backendTLS)
        self.external: set[str] = set()  # routes whose registry runs elsewhere (a kept part, gateway/keeper.py)
        self.addresses = AddressPolicy()  # where runtime-registered agents may be reached (agent_addresses.py)

    def prepare(self, client: httpx.AsyncClient) -> None:
        """Have `client`'s connections checked while `reaching` a runtime agent (federation/agent_tools.py)."""
        agent_addresses.install(client)

    def reaching(self, source: str) -> contextlib.AbstractContextManager[None]:
        """The context to connect to an agent in: runtime registrations are held to `addresses`."""
        return self.addresses.enforced() if source == "runtime" else contextlib.nullcontext()

    def client_for(self, route: str) -> httpx.AsyncClient | None:
        """The client for a route's agents: its own when it has backendTLS, else the shared one."""
        return self.clients.get(route) or self.client

    def fetch_for(self, route: str) -> Any:
        """A card fetcher for one route's registry (through that route's client)."""

        async def fetch(spec: AgentSpec) -> Agent:
            client = self.client_for(route)
            if client is None:
                raise ValueError(f"agent {spec.name!r}: the gateway is not running")
            with self.reaching(spec.source):
                return await fetch_card(client, spec)

        return fetch

    async def fetch(self, spec: AgentSpec) -> Agent:
        """The registry's card fetcher (ValueError naming the agent on failure)."""
        if self.client is None:
            raise ValueError(f"agent {spec.name!r}: the gateway is not running")
        with self.reaching(spec.source):
            return await fetch_card(self.client, spec)

    def endpoint(
        self,
        route: str,
        specs: list[AgentSpec],
        prefix: str,
        *,
        single: bool,
        guard: Guard | None,
        timeout: float | None,
        registry: AgentRegistry | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> A2AEndpoint:
        """An endpoint for `route`: every agent of `specs` under `<prefix>/<name>/`, or (single) the one agent
        at `prefix`. `registry` replaces the plain one built from `specs` (a registry with a store)."""
        if tls is not None:
            self.tls[route] = tls
        registry = registry or AgentRegistry(specs, self.fetch_for(route))
        self.registries[route] = registry
        endpoint = A2AEndpoint(
            self, registry, prefix.rstrip("/"), single=specs[0].name if single else None, guard=guard, timeout=timeout
        )
        endpoint.route = route
        return endpoint

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[A2ARoutes]:
        """Open the client, then fetch every configured agent's card; close the client on exit."""
        if not self.registries:
            yield self
            return
        async with proxy.new_client() as client, contextlib.AsyncExitStack() as stack:
            self.client = client
            agent_addresses.install(client)
            try:
                for route, context in self.tls.items():
                    self.clients[route] = await stack.enter_async_context(proxy.new_client(context))
                    agent_addresses.install(self.clients[route])
                for route, registry in self.registries.items():
                    if route not in self.external:
                        await stack.enter_async_context(registry.running())
                yield self
            finally:
                self.client = None
                self.clients.clear()

    def describe(self, route: str) -> Iterator[str]:
        """Startup-log lines for a route's agents."""
        registry = self.registries.get(route)
        for agent in registry.all() if registry else []:
            status = "up" if agent.healthy and agent.card else f"DOWN ({agent.last_error})"
            yield f"    agent {agent.name} [A2A {agent.version}] {redaction.url(agent.url)}: {status}"


@dataclass(frozen=True)
class _Call:
    """One A2A request as policy sees it."""

    method: str  # the A2A 1.0 method name ("" when the request is not an A2A call we know)
    skill: str
    jsonrpc: bool
    request_id: str | int | None = None
    body: bytes | None = None  # the body, when it had to be read


class A2AEndpoint:
    """The ASGI app of one A2A route."""

    # The route's backendAuth (gateway/policies/backend_auth.py): headers added to every call to an agent,
    # e.g. a static key, a client-credentials token or the caller's own token (passthrough).
    auth: Any = None
    route: str = ""  # its route's name (which client: see A2ARoutes.client_for)
    delivery: proxy.Sending | None = None  # retries and requestTimeout (gateway/policies/retry.py)
    mirror: Any = None  # requestMirror (gateway/policies/mirror.py): copies of the calls that passed the checks
    observe: Any = None  # an Observability (gateway/observability/exchange.py): each call's outcome
    upstream_path: str = ""  # what a one-agent route's prefix becomes toward its agent (requestMirror copies go there)

    def __init__(
        self,
        routes: A2ARoutes,
        registry: AgentRegistry,
        prefix: str,
        *,
        single: str | None,
        guard: Guard | None,
        timeout: float | None,
    ) -> None:
        self.routes = routes
        self.registry = registry
        self.prefix = prefix
        self.single = single
        self.guard = guard
        self.timeout = timeout
        self.mounted: list[Any] = []

    def mount(self, app: Any) -> None:
        """Serve `app` (an ASGI app with `handles(scope) -> bool`, such as the registry API at `<path>/agents`)
        before the agents, behind the same route policies."""
        self.mounted.append(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        for app in self.mounted:
            if app.handles(scope):
                await app(scope, receive, send)
                return
        found = await self._find(scope)
        if isinstance(found, JSONResponse):
            await found(scope, receive, send)
            return
        agent, tail, raw_tail = found
        if tail in (CARD_PATH, LEGACY_CARD_PATH) and scope["method"] == "GET":
            await self._card(scope, receive, send, agent, tail)
            return
        try:
            call = await self._read_call(scope, receive, send, tail)
        except _ClientLeft:
            return
        if call is None:
            return  # a malformed request, answered
        refused = await self._check(scope, agent.name, call)
        if refused is not None:
            refusal, outcome = refused
            if self.observe is not None:
                self.observe.a2a_call(self.route, scope, agent.name, call.method, outcome)
            await refusal(scope, receive, send)
            return
        ok = await self._forward(scope, receive, send, agent, raw_tail, call)
        if self.observe is not None:
            self.observe.a2a_call(self.route, scope, agent.name, call.method, "ok" if ok else "error")

    async def _find(self, scope: Scope) -> tuple[Agent, str, str] | JSONResponse:
        """The agent the path names (with the path below it, decoded and as sent), or the error to answer."""
        located = self._locate(scope)
        if located is None:
            where = f"{self.prefix}/<name>/"
            return _rest(404, "AGENT_NOT_FOUND", f"no agent named in the path; agents are served at {where}")
        name, tail, raw_tail = located
        agent = await self.registry.resolve(name)  # a replica may know an agent registered elsewhere
        if agent is None or (tail in (CARD_PATH, LEGACY_CARD_PATH) and not self._visible(scope, name, "GetAgentCard")):
            return _rest(404, "AGENT_NOT_FOUND", f"no agent named {name!r}")
        if not agent.card:
            why = f"agent {name!r} has no usable card: {agent.last_error or 'not fetched yet'}"
            return _rest(502, "INTERNAL_ERROR", why)
        return agent, tail, raw_tail

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, agent: Agent, raw_tail: str, call: _Call
    ) -> bool:
        """False when the agent could not be reached (the client got the error)."""
        forwarded = without_credentials(scope)  # the copy that goes on: no credential the gateway consumed
        query = forwarded.get("query_string", b"").decode("latin-1")
        path = "" if agent.full_rewrite else raw_tail  # a full urlRewrite sends everything to one path
        url = agent.url.rstrip("/") + path + (f"?{query}" if query else "")
        headers = dict(agent.headers)
        if self.auth is not None:
            try:
                headers.update(await self.auth.headers(scope))
            except Exception as exc:  # a token endpoint that is down fails this call only, naming the agent
                why = f"agent {agent.name!r}: backendAuth failed: {exc}"
                logger.warning("%s", why)
                if call.jsonrpc:
                    body = jsonrpc_error(call.request_id, INTERNAL_ERROR, why, {"agent": agent.name})
                    await JSONResponse(body, status_code=502)(scope, receive, send)
                else:
                    await _rest(502, "INTERNAL_ERROR", why)(scope, receive, send)
                return False
        upstream = proxy.Upstream(agent.name, url, headers, self.timeout, "agent", *request_auth(self.auth, scope))
        rewrite = self._card_rewriter(scope, agent, call) if call.method == "GetExtendedAgentCard" else None
        public = self._public_url(scope, agent.name)  # where redirects to the agent's own address point instead
        client = self.routes.client_for(self.route)
        assert client is not None, "A2ARoutes.running() opens the client before serving"
        if self.mirror is not None:
            receive = self.mirror.tee(forwarded, receive, path=self.upstream_path + path or "/", body=call.body)
        attributes = {"a2a.agent": agent.name, **({"a2a.method": call.method} if call.method else {})}
        traced = (
            self.observe.proxied(scope, agent.name, url, send, attributes) if self.observe else contextlib.nullcontext(send)
        )
        with traced as send, self.routes.reaching(agent.source):
            try:
                await proxy.forward(
                    client,
                    upstream,
                    forwarded,
                    receive,
                    send,
                    public=public_base(scope),
                    body=call.body,
                    rewrite=rewrite,
                    sending=self.delivery,
                    relocate=lambda url: relocate(url, agent.url, public),
                )
                return True
            except proxy.AgentUnavailable as exc:
                logger.warning("%s", exc.message)
                if call.jsonrpc:
                    body = jsonrpc_error(call.request_id, INTERNAL_ERROR, exc.message, {"agent": agent.name})
                    await JSONResponse(body, status_code=exc.status)(scope, receive, send)
                else:
                    await _rest(exc.status, "INTERNAL_ERROR", exc.message)(scope, receive, send)
                return False

    # -- where, what -------------------------------------------------------------------------

    def _locate(self, scope: Scope) -> tuple[str, str, str] | None:
        """(agent name, path below the agent, the same path as the client encoded it)."""
        path: str = scope["path"]
        if not path.startswith(self.prefix):
            return None
        rest = path[len(self.prefix) :]
        if self.single is not None:
            name, tail, head = self.single, rest, self.prefix
        else:
            if not rest.startswith("/"):
                return None
            name, slash, after = rest[1:].partition("/")
            if not name:
                return None
            tail, head = slash + after, f"{self.prefix}/{name}"
        raw = scope.get("raw_path")
        raw_text = raw.decode("latin-1") if isinstance(raw, bytes) else ""
        raw_tail = raw_text[len(head) :] if raw_text.startswith(head) else quote(tail, safe=_SAFE_PATH)
        return name, tail, raw_tail

    def _public_url(self, scope: Scope, name: str) -> str:
        at = self.prefix if self.single is not None else f"{self.prefix}/{name}"
        return public_base(scope) + at

    async def _read_call(self, scope: Scope, receive: Receive, send: Send, tail: str) -> _Call | None:
        verb = scope["method"]
        method = rest_method(verb, tail)
        if method is not None or verb != "POST":  # HTTP+JSON (or something else we pass on as it is)
            if method not in MESSAGE_METHODS or self.guard is None:
                return _Call(method or "", "", jsonrpc=False)
            body = await _read_body(receive, MAX_BODY)
            if body is None:
                await _too_large(scope, receive, send, jsonrpc=False)
                return None
            try:
                skill = skill_of(json.loads(body))
            except ValueError:
                skill = ""  # the agent will refuse it
            return _Call(method, skill, jsonrpc=False, body=body)
        body = await _read_body(receive, MAX_BODY)
        if body is None:
            await _too_large(scope, receive, send, jsonrpc=True)
            return None
        try:
            call = parse_jsonrpc(body)
        except NotJsonRpc as exc:
            await JSONResponse(jsonrpc_error(exc.request_id, exc.code, str(exc)))(scope, receive, send)
            return None
        method = call.a2a_method
        skill = skill_of(call.params) if method in MESSAGE_METHODS else ""
        return _Call(method, skill, jsonrpc=True, request_id=call.request_id, body=body)

    # -- policy ------------------------------------------------------------------------------

    def _visible(self, scope: Scope, name: str, method: str) -> bool:
        if self.guard is None:
            return True
        try:
            return self.guard.visible(scope, Access(method, "agent", name, name))
        except Exception:  # a guard that fails denies
            logger.exception("authorization failed for agent %r; denying", name)
            return False

    async def _check(self, scope: Scope, name: str, call: _Call) -> tuple[JSONResponse, str] | None:
        """None if the guard admits the call, else the refusal in the call's dialect and why (denied, rate_limited)."""
        if self.guard is None:
            return None
        access = Access(call.method, "agent", name, name, "", call.skill)
        try:
            allowed = self.guard.visible(scope, access)
            if allowed:
                await self.guard.admit(scope, access)
        except MCPError as exc:  # a rate limit (or a limiter that cannot decide and fails closed)
            return _limited(exc, call), "rate_limited"
        except Exception:
            logger.exception("authorization failed for %s on agent %r; denying", call.method, name)
            allowed = False
        if allowed:
            return None
        what = f"{call.method or scope['method'] + ' ' + scope['path']} on agent {name!r} is not allowed"
        if call.jsonrpc:
            return JSONResponse(jsonrpc_error(call.request_id, UNSUPPORTED_OPERATION, what)), "denied"
        return _rest(403, "UNSUPPORTED_OPERATION", what), "denied"

    # -- cards -------------------------------------------------------------------------------

    async def _card(self, scope: Scope, receive: Receive, send: Send, agent: Agent, tail: str) -> None:
        if tail == LEGACY_CARD_PATH and agent.version != "0.3":
            why = f"agent {agent.name!r} speaks A2A 1.0: its card is at {CARD_PATH}"
            await _rest(404, "CARD_NOT_FOUND", why)(scope, receive, send)
            return
        card = rewrite_card(agent, self._public_url(scope, agent.name))
        await JSONResponse(card, headers={"cache-control": "no-cache"})(scope, receive, send)

    def _card_rewriter(self, scope: Scope, agent: Agent, call: _Call) -> Any:
        """GetExtendedAgentCard answers with a card too: its URLs must point at the gateway as well."""
        public = self._public_url(scope, agent.name)

        def rewrite(body: bytes) -> bytes:
            data = json.loads(body)
            if call.jsonrpc and isinstance(data, dict) and isinstance(data.get("result"), dict):
                data["result"] = rewrite_card(agent, public, data["result"])
            elif not call.jsonrpc and isinstance(data, dict):
                data = rewrite_card(agent, public, data)
            return json.dumps(data).encode()

        return rewrite


def _rest(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(rest_error(status, reason, message), status_code=status, headers=headers)


def _limited(exc: MCPError, call: _Call) -> JSONResponse:
    data = exc.data if isinstance(exc.data, dict) else {}
    retry = data.get("retryAfter")
    headers = {"retry-after": str(max(1, math.ceil(retry)))} if isinstance(retry, int | float) else None
    if call.jsonrpc:
        return JSONResponse(jsonrpc_error(call.request_id, exc.code, exc.message, exc.data), headers=headers)
    if exc.code == _RATE_LIMITED:
        return _rest(429, "RATE_LIMITED", exc.message, headers)
    return _rest(503, "RATE_LIMITER_UNAVAILABLE", exc.message)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body; None when it is over `limit`. A client that leaves ends the request."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientLeft
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


class _ClientLeft(Exception):
    pass


async def _too_large(scope: Scope, receive: Receive, send: Send, *, jsonrpc: bool) -> None:
    message = f"request body larger than {MAX_BODY // (1024 * 1024)} MiB"
    if jsonrpc:
        await JSONResponse(jsonrpc_error(None, -32600, f"Invalid request: {message}"), status_code=413)(
            scope, receive, send
        )
    else:
        await _rest(413, "INVALID_REQUEST", message)(scope, receive, send)
