"""Config -> running gateway: compiled routes per bind, one federation per MCP backend, uvicorn servers."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import random
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import anyio
import httpx
import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from federation.agent_tools import build_agent_server
from federation.agents import AgentRegistry, AgentSpec
from federation.guard import OpenGuard
from federation.openapi_tools import OpenApiServer
from federation.server import Federation, FederationSettings
from gateway.a2a import A2ARoutes
from gateway.a2a_registry import RegistryApi, build_registry
from gateway.agent_addresses import AddressPolicy
from gateway.ai.build import llm_endpoint, route_endpoint
from gateway.ai.endpoint import AiEndpoint
from gateway.cluster import Cluster, ForwardToOwner, RedisLists
from gateway.config import Config, ConfigError
from gateway.config.a2a import A2aShort
from gateway.config.llm import LlmShort
from gateway.config.models import (
    Bind,
    ClusterSettings,
    Listener,
    Match,
    McpBackend,
    McpShort,
    OpenApiSchemaFile,
    OpenApiSchemaUrl,
    OpenApiTarget,
    Policies,
    Route,
    Target,
)
from gateway.config.policies import RetryPolicy
from gateway.http_backend import HttpBackend
from gateway.http_limits import BIND_CONCURRENCY, server_config
from gateway.keeper import Keeper, Part
from gateway.listener_tls import ListenerContexts, PeerCertificates, ServingContext, server_context, serving_context
from gateway.listening import tcp_listener
from gateway.observability.exchange import Observability, access_rules
from gateway.policies import RoutePolicies, backend_auth, compile_policies, mirror
from gateway.policies.backend_tls import ssl_context
from gateway.policies.retry import Delivery, delivery
from gateway.policies.rewrite import a2a_upstream
from gateway.policies.timeout import Timeouts
from gateway.policies.timeout import resolve as resolve_timeouts
from gateway.routing import RouteMatcher, RouteTable, describe
from gateway.session_key import session_seal
from protocols import openapi
from protocols.a2a import proxy
from protocols.a2a.card import rewrite_card
from protocols.mcp.portable import PortableSessions
from protocols.mcp.session_limits import SessionLimits
from protocols.mcp.size_limit import DEFAULT_MAX_RESPONSE_SIZE
from protocols.mcp.sse import SseEndpoint
from protocols.mcp.streamable_http import StreamableHTTPEndpoint, rebinding_protection
from protocols.mcp.upstream import TargetSpec

logger = logging.getLogger("agentplex")


@dataclass
class CompiledRoute:
    """A route reduced to what the hot path needs: a match function and an ASGI endpoint."""

    name: str
    matches: RouteMatcher
    endpoint: ASGIApp
    describe: str


@dataclass
class BindRuntime:
    address: str
    port: int
    routes: list[CompiledRoute]
    observe: Observability | None = None  # metrics and access logs per HTTP request
    server: uvicorn.Server | None = None
    tls: ListenerContexts | None = None  # an HTTPS bind's certificates (gateway/listener_tls.py)
    active: int = 0  # requests in flight (a reload waits for the old config's to finish)
    streams: int = 0  # of which event streams a client holds open (GET text/event-stream)
    table: RouteTable[CompiledRoute] = field(init=False)  # `routes` in precedence order (gateway/routing.py)

    def __post_init__(self) -> None:
        self.table = RouteTable([(route.matches, route) for route in self.routes])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return
        route, app = self._select(scope)
        if app is None:
            return
        if self.observe is not None and scope["type"] == "http":
            await self.observe.serve(route, app, scope, receive, send)
        else:
            await app(scope, receive, send)

    def _select(self, scope: Scope) -> tuple[str, ASGIApp | None]:
        """The route's name and endpoint, or ("", the error answer) when no route may serve the request."""
        if scope["type"] == "http" and _unnormalized(scope["path"]):
            # `/public/../mcp` would match one route here and another behind a normalizing proxy: refuse.
            return "", _UNNORMALIZED
        route = self.table.select(scope)
        if route is not None:
            return route.name, route.endpoint
        return "", (_no_route if scope["type"] == "http" else None)

    @property
    def bound_port(self) -> int:
        """The real port (differs from `port` when the config asked for port 0)."""
        if self.server is None or not self.server.servers:
            return self.port
        return self.server.servers[0].sockets[0].getsockname()[1]


_UNNORMALIZED = JSONResponse({"error": "path has '.', '..' or empty segments"}, status_code=400)


async def _no_route(scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"error": f"no route matches {scope['method']} {scope['path']}"}, status_code=404)
    await response(scope, receive, send)


class Socket:
    """One listening address: a uvicorn server, and the routes (a BindRuntime) it serves now.

    A reload hands the socket the new config's routes; requests already running finish on the old ones.
    """

    def __init__(self, bind: BindRuntime, drain: float) -> None:
        self.bind = bind
        # HTTPS: uvicorn keeps this one context; it wraps each connection with the current bind's certificates
        self.tls: ServingContext | None = serving_context(bind.tls) if bind.tls is not None else None
        tls_options: dict[str, Any] = {}
        if self.tls is not None:
            front = self.tls
            tls_options = {"http": PeerCertificates, "ssl_context_factory": lambda config, default: front}
        config = server_config(
            self,
            concurrency=BIND_CONCURRENCY,
            host=bind.address,
            port=bind.port,
            timeout_graceful_shutdown=drain,  # on shutdown, how long open connections may take to finish
            **tls_options,
        )
        self.server = bind.server = SignalFreeServer(config)
        self.done = False
        self.sock: socket.socket | None = None

    def open(self) -> None:
        """Bind the listening socket (uvicorn would exit the process on failure; this raises OSError)."""
        try:
            self.sock = tcp_listener(self.bind.address, self.bind.port, backlog=2048)
        except OSError as exc:
            raise OSError(f"cannot listen on {self.describe()}: {exc.strerror or exc}") from None

    async def serve(self) -> None:
        try:
            await self.server.serve(sockets=[self.sock] if self.sock is not None else None)
        finally:
            self.done = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        bind = self.bind
        stream = scope.get("method") == "GET" and _wants_events(scope)
        bind.active += 1
        bind.streams += stream
        try:
            await bind(scope, receive, send)
        finally:
            bind.active -= 1
            bind.streams -= stream

    def serve_routes_of(self, bind: BindRuntime) -> None:
        """From now on serve `bind`'s routes (and, HTTPS, its certificates to new connections)."""
        bind.server = self.server
        self.bind = bind
        if self.tls is not None and bind.tls is not None:
            self.tls.current = bind.tls

    def describe(self) -> str:
        return f"{self.bind.address}:{self.bind.port}"


def open_all(sockets: list[Socket]) -> None:
    """Bind every socket, or none: raises OSError naming the one that cannot listen."""
    try:
        for s in sockets:
            s.open()
    except OSError:
        for s in sockets:
            if s.sock is not None:
                s.sock.close()
        raise


async def listen(sockets: list[Socket], tg: anyio.abc.TaskGroup) -> None:
    """Serve opened `sockets` in `tg`; returns once all are listening."""
    for s in sockets:
        tg.start_soon(s.serve)
    with anyio.fail_after(30):
        while not all(s.server.started or s.done for s in sockets):
            await anyio.sleep(0.01)


class Weighted:
    """A plain HTTP route with several backends: each request goes to one, chosen at random by weight."""

    def __init__(self, backends: list[tuple[HttpBackend, int]]) -> None:
        self.backends = [backend for backend, _ in backends]
        self.weights = [weight for _, weight in backends]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await random.choices(self.backends, self.weights)[0](scope, receive, send)


class McpEndpoints:
    """An MCP route's transports: legacy SSE at `.../sse` + `.../messages/`, streamable HTTP elsewhere.

    After a reload that changed the route's targets, `previous` holds the route's earlier endpoints
    while they have sessions: a request for one of those sessions is served where the session lives.
    """

    def __init__(self, streamable: StreamableHTTPEndpoint, sse: SseEndpoint) -> None:
        self.streamable = streamable
        self.sse = sse
        self.previous: list[McpEndpoints] = []

    def session_count(self) -> int:
        return self.streamable.session_count() + self.sse.session_count()

    def sessions(self) -> list[dict[str, Any]]:
        """Live client sessions, those kept from before a reload included (marked `draining`)."""
        found = self.streamable.sessions() + self.sse.sessions()
        for old in self.previous:
            found.extend({**session, "draining": True} for session in old.sessions())
        return found

    def knows(self, scope: Scope) -> bool:
        """Is the session this request names held here, by these endpoints or those kept from before a reload?"""
        return self.owns(scope) or any(old.owns(scope) for old in self.previous)

    def owns(self, scope: Scope) -> bool:
        """Is the session this request names one of ours?"""
        sid = next((v for k, v in scope.get("headers", ()) if k == b"mcp-session-id"), None)
        if sid is not None:
            return self.streamable.has_session(sid.decode("latin-1"))
        if scope.get("method") == "POST" and b"session_id=" in scope.get("query_string", b""):
            query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
            return self.sse.has_session(query.get("session_id", ""))
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        for old in self.previous:
            if old.owns(scope):
                await old(scope, receive, send)
                return
        if self.sse.handles(scope):
            await self.sse(scope, receive, send)
        else:
            await self.streamable(scope, receive, send)


class Gateway:
    """Everything one config describes, ready to be started with `running()` and `serve()`."""

    def __init__(self, config: Config, keeper: Keeper | None = None, observability: Observability | None = None) -> None:
        """`keeper`: the running parts of the config before this one (a reload); an MCP route whose
        backend is unchanged takes its part over, live sessions included. `observability`: the process's
        metrics (None: none, only access logs)."""
        self.config = config
        self.observability = observability or Observability(None, config.config.logging.format, None, access_rules(config))
        self.keeper = keeper if keeper is not None else Keeper()
        self._own_keeper = keeper is None
        self.parts: list[Part] = []  # MCP routes' federation + endpoints, run by the keeper
        self.draining: list[tuple[Part, McpEndpoints]] = []  # earlier parts kept for their sessions, and who holds them
        self._held: list[Part] = []  # the parts running() acquired and has not released yet
        self._changes: list[Callable[[], None]] = []  # to parts kept from a running config: made by commit()
        self.changed_lists: list[Federation] = []  # kept federations whose policies this config changed
        self.federations: list[tuple[str, Federation]] = []
        self.endpoints: dict[str, McpEndpoints] = {}  # MCP route name -> its transports (sessions, for the admin API)
        self.http_backends: list[HttpBackend] = []  # plain HTTP routes (their clients open in running())
        self.ai_endpoints: list[AiEndpoint] = []  # AI routes (their clients open in running())
        self.mirrors: list[mirror.Mirror] = []  # requestMirror of plain HTTP routes (open in running())
        self.closers: list[Any] = []  # policy resources (Redis pools) to close on shutdown
        # Relative file paths (JWKS, htpasswd, certificates, SQLite) open from the working directory, as in the reference
        self.base_dir = Path.cwd()
        self.a2a = A2ARoutes()
        self.agent_registry: AgentRegistry | None = None  # the `a2a:` block's agents (registration, tools)
        self.cluster = self._cluster_part(config.config.cluster)  # replicas sharing sessions' whereabouts
        self.seal = session_seal(config.config)  # seals MCP session ids (None: random ids, not portable)
        self.binds = [self._compile_bind(bind, origin) for bind, origin in _binds(config)]

    def _cluster_part(self, settings: ClusterSettings | None) -> Part | None:
        """The replica's membership (gateway/cluster.py), kept across reloads while its settings stay."""
        if settings is None:
            return None
        key = "cluster " + json.dumps(settings.model_dump(mode="json"), sort_keys=True)
        part = self.keeper.find(key)
        if part is None:
            cluster = Cluster(settings)
            part = Part(key, cluster, cluster.running)
        self._later(setattr, part.value, "sessions", self.live_sessions)
        return part

    def live_sessions(self) -> list[dict[str, Any]]:
        """Every MCP route's live client sessions, each with its route's name."""
        return [{"route": name, **s} for name, endpoints in self.endpoints.items() for s in endpoints.sessions()]

    # -- compile ---------------------------------------------------------------------------

    def _compile_bind(self, bind: Bind, origin: str) -> BindRuntime:
        """`origin` is the config key the bind came from: `binds[i]`, or a short block (`mcp`, `a2a`)."""
        routes: list[CompiledRoute] = []
        for li, listener in enumerate(bind.listeners):
            for ri, route in enumerate(listener.routes):
                name = route.name or f"{listener.name or f'listener{li}'}/route{ri}"
                if origin in _SHORT:  # a short block's route is named after it (`a2a` may join `mcp`'s bind)
                    where = listener_at = name
                else:
                    where, listener_at = f"{origin}.listeners[{li}].routes[{ri}]", f"{origin}.listeners[{li}]"
                routes.extend(self._compile_route(name, bind, listener, route, where, listener_at))
        runtime = BindRuntime(bind.address, bind.port, routes, observe=self.observability)
        if bind.https:
            runtime.tls = ListenerContexts(
                [
                    (listener.hostname, server_context(listener.tls, self.base_dir, self._at(origin, li)))
                    for li, listener in enumerate(bind.listeners)
                    if listener.tls is not None
                ]
            )
        return runtime

    def _at(self, origin: str, listener: int) -> str:
        return f"{self.config.source}: {origin}.listeners[{listener}].tls"

    def _compile_route(
        self, name: str, bind: Bind, listener: Listener, route: Route, where: str, listener_at: str
    ) -> list[CompiledRoute]:
        if where == "llm" or any(b.ai is not None for b in route.backends):
            return self._compile_ai(name, listener, route, where, listener_at)
        for at, p in self._levels((listener_at, listener.policies), (where, route.policies)):
            if p.ai is not None:
                raise ConfigError(f"{at}.ai: applies to routes whose backend is `ai`")
            _refuse_token_limits(at, p, "applies to AI routes (it charges the tokens a model's answer used)")
        if where != "a2a" and not route.backends:
            if not any(
                p is not None and (p.directResponse is not None or p.requestRedirect is not None)
                for p in (listener.policies, route.policies)
            ):
                raise ConfigError(
                    f"{self.config.source}: {where}.backends: expected at least one backend "
                    "(or a directResponse or requestRedirect policy)"
                )
            return self._compile_direct(name, listener, route, where, listener_at)
        if where != "a2a" and len(route.backends) > 1 and any(b.mcp is not None for b in route.backends):
            raise ConfigError(
                f"{self.config.source}: {where}.backends: an MCP route has one backend (it federates its targets),"
                f" found {len(route.backends)}"
            )
        if where == "a2a" or route.backends[0].mcp is None:
            a2a = where == "a2a" or any(p is not None and p.a2a is not None for p in (listener.policies, route.policies))
            if not a2a:
                return self._compile_http(name, listener, route, where, listener_at)
            return self._compile_a2a(name, listener, route, where, listener_at)
        backend = route.backends[0].mcp
        assert backend is not None
        levels = self._levels(
            (listener_at, listener.policies),
            (where, route.policies),
            (f"{where}.backends[0].mcp" if where != "mcp" else "mcp", backend.policies),
        )
        compiled = compile_policies(
            levels,
            base_dir=self.base_dir,
            route_path=_route_path(route.matches),
            max_body=backend.maxRequestBodySize,
            kind="mcp",
        )
        mirror.refuse(levels, "MCP")
        self.closers.extend(compiled.closers)
        agent_tools = self._agent_tool_targets(where, backend)
        registry = _registry_key(self.config.a2a, self.base_dir) if agent_tools and self.config.a2a else None
        key = _part_key(bind, name, backend, levels, registry) + ("portable" if self.seal is not None else "")
        route_id = f"{bind.address}:{bind.port} {name}"
        sealed_route = name  # what a sealed session id names: the same on every replica (not its port)
        if any(p.key == key or p.route == route_id for p in self.parts):  # a route name twice on a bind
            key, route_id, sealed_route = key + where, route_id + where, name + where
        part = self.keeper.find(key)
        rules = json.dumps([p.model_dump(mode="json", exclude_none=True) for _, p in levels], sort_keys=True)
        guard = compiled.guard or OpenGuard()
        self._observe_limits(name, compiled)
        observer = self.observability.federation_observer(name)
        if part is not None:  # a reload that left this backend as it was: its sessions carry on
            federation, endpoints = part.value
            if endpoints.streamable.portable is not None:  # a rotated key seals from now on
                self._later(setattr, endpoints.streamable.portable, "seal", self.seal)
            self._later(setattr, federation, "guard", guard)
            self._later(setattr, federation, "observer", observer)
            if part.revision != rules:  # what its clients may see may have changed: they list again
                self.changed_lists.append(federation)
        else:
            side = _backend_policies(levels, self.base_dir)
            target_at = f"{where}.backends[0].mcp.targets" if where != "mcp" else "mcp.targets"
            federation = Federation(
                [
                    _target_spec(t, side, backend.maxResponseBodySize, f"{self.config.source}: {target_at}[{i}]")
                    for i, t in enumerate(backend.targets)
                ]
                + agent_tools,
                FederationSettings(
                    prefix_mode=backend.prefixMode,
                    separator=backend.separator,
                    failure_mode=backend.failureMode,
                    stateless=backend.statefulMode == "stateless",
                ),
                guard=compiled.guard,
                observer=observer,
            )
            server, security = federation.build_server(), rebinding_protection(bind.address)
            portable = PortableSessions(self.seal, federation.portable, sealed_route) if self.seal is not None else None
            limits = SessionLimits(backend.maxSessions, backend.maxSessionsPerCaller)
            endpoint = StreamableHTTPEndpoint(
                server,
                stateless=backend.statefulMode == "stateless",
                security=security,
                max_request_body_size=backend.maxRequestBodySize,
                session_idle_timeout=backend.sessionIdleTimeout,
                relay=federation.relay_tool_call,
                relay_modern=federation.plan_modern_call,
                limits=limits,
                portable=portable,
            )
            endpoints = McpEndpoints(endpoint, SseEndpoint(server, security=security, limits=limits))
            part = Part(key, (federation, endpoints), functools.partial(_mcp_running, federation, endpoint))
            part.route = route_id
        previous = []
        for earlier in self.keeper.running_for(route_id):  # a reload changed the backend: keep old sessions
            old_federation, old_endpoints = earlier.value
            if earlier is not part and old_endpoints.session_count():
                self._later(setattr, old_federation, "guard", guard)  # the new rules apply to them too
                previous.append(old_endpoints)
                self.draining.append((earlier, endpoints))
        self._later(setattr, endpoints, "previous", previous)
        self._later(setattr, part, "revision", rules)
        self.parts.append(part)
        self.federations.append((name, federation))
        self.endpoints[name] = endpoints
        if self.cluster is None:
            return _routes(name, listener, route, compiled, endpoints)
        self._later(self._share_lists, f"{bind.port}/{name}", backend, federation)
        cluster = self.cluster.value
        entry = functools.partial(ForwardToOwner, knows=endpoints.knows, cluster=cluster, route=name)
        return _routes(name, listener, route, compiled, endpoints, entry)

    def _share_lists(self, route: str, backend: McpBackend, federation: Federation) -> None:
        """With a cluster: each target's shared connection (without credentials) keeps its lists in Redis
        for every replica, under the target's settings (replicas on another config do not mix theirs in)."""
        assert self.cluster is not None
        cluster = self.cluster.value
        for target in backend.targets:
            upstream = federation.upstreams.get(target.name)
            if upstream is None or upstream.spec.auth is not None:
                continue
            settings = json.dumps(target.model_dump(mode="json"), sort_keys=True)
            scope = f"{route}:{target.name}:{hashlib.sha256(settings.encode()).hexdigest()[:12]}"
            upstream.shared_lists = RedisLists(cluster, scope)
            cluster.watchers[scope] = functools.partial(federation.changed_elsewhere, target.name)

    def _observe_limits(self, route: str, compiled: RoutePolicies) -> None:
        observer = self.observability.limit_observer(route)
        if observer is not None:
            compiled.observe_limits(observer)

    def _levels(self, *pairs: tuple[str, Policies | None]) -> list[tuple[str, Policies]]:
        """(where, policies) for the levels that have policies, outermost first; where = '<file>: <key.path>'."""
        return [(f"{self.config.source}: {at}.policies", p) for at, p in pairs if p is not None]

    def _compile_a2a(
        self, name: str, listener: Listener, route: Route, where: str, listener_at: str
    ) -> list[CompiledRoute]:
        """An A2A route: the `a2a:` block's agents under its path, or one `host` agent at a route's prefix."""
        src = self.config.source
        short = self.config.a2a if where == "a2a" else None
        if short is None and not any(p is not None and p.a2a is not None for p in (listener.policies, route.policies)):
            raise ConfigError(
                f"{src}: {where}.backends[0]: a host backend is served as an A2A agent: add `policies: {{a2a: {{}}}}`"
            )
        prefix = _route_prefix(route.matches)
        if prefix is None:
            raise ConfigError(
                f"{src}: {where}.matches: an A2A route needs a pathPrefix match (its agent lives below it)"
            )
        levels = self._levels((listener_at, listener.policies), (where, route.policies))
        if short is not None:
            mirror.refuse(levels, "the a2a block's")
        compiled = compile_policies(levels, base_dir=self.base_dir, route_path=prefix or "/", kind="a2a")
        self._observe_limits(name, compiled)
        if short is not None and compiled.url_rewrite is not None:
            raise ConfigError(
                f"{compiled.url_rewrite[0]}: the a2a block serves each agent at <path>/<name>/, which leads to the"
                " agent's own url; to mount one agent under a prefix, set urlRewrite on a full-shape route with"
                " `policies: {a2a: {}}`"
            )
        upstream = None
        if short is not None:
            side = _backend_policies(levels, self.base_dir)
            specs = [AgentSpec(a.name, a.url, dict(a.headers)) for a in short.agents]
        else:
            hosts = self._hosts(route, where)
            if len(hosts) != 1:
                raise ConfigError(f"{src}: {where}.backends: an A2A route has one agent, found {len(hosts)} backends")
            host, _, backend_level = hosts[0]
            side = _backend_policies(levels + backend_level, self.base_dir)
            upstream = a2a_upstream(host, prefix, compiled.url_rewrite[1] if compiled.url_rewrite else None)
            specs = [AgentSpec(name, upstream.url, upstream.headers, full_rewrite=upstream.full)]
        registry = self._short_registry() if short is not None else None  # shared with a2a.tools
        endpoint = self.a2a.endpoint(
            name,
            specs,
            prefix,
            single=short is None,
            guard=compiled.guard,
            timeout=side.timeout or proxy.HEAD_TIMEOUT,
            registry=registry,
            tls=side.tls,
        )
        endpoint.auth, endpoint.delivery, endpoint.observe = side.auth, side.delivery, self.observability
        endpoint.upstream_path = upstream.path if upstream is not None else ""
        endpoint.mirror = mirror.build(name, levels)
        if endpoint.mirror is not None:
            self.mirrors.append(endpoint.mirror)
        if short is not None:
            self.agent_registry = endpoint.registry
            self.a2a.addresses = AddressPolicy(short.registration.allowNetworks)
            api = RegistryApi(
                endpoint.registry,
                path=prefix,
                rewrite=rewrite_card,
                guard=compiled.guard,
                allow=short.registration.allow,
                addresses=self.a2a.addresses,
            )
            endpoint.mount(api)
        self.closers.extend(compiled.closers)
        return _routes(name, listener, route, compiled, endpoint)

    def _compile_direct(
        self, name: str, listener: Listener, route: Route, where: str, listener_at: str
    ) -> list[CompiledRoute]:
        """A route with no backend: its directResponse or requestRedirect policy answers (after the other policies)."""
        levels = self._levels((listener_at, listener.policies), (where, route.policies))
        compiled = compile_policies(levels, base_dir=self.base_dir, route_path=_route_path(route.matches))
        self._observe_limits(name, compiled)
        self.closers.extend(compiled.closers)
        unreachable = JSONResponse({"error": "no backend"}, status_code=500)  # the directResponse step answers first
        return _routes(name, listener, route, compiled, unreachable)

    def _compile_http(
        self, name: str, listener: Listener, route: Route, where: str, listener_at: str
    ) -> list[CompiledRoute]:
        """A plain HTTP route: its `host` backends share the matching requests by weight (gateway/http_backend.py)."""
        levels = self._levels((listener_at, listener.policies), (where, route.policies))
        compiled = compile_policies(levels, base_dir=self.base_dir, route_path=_route_path(route.matches))
        self._observe_limits(name, compiled)
        backends: list[tuple[HttpBackend, int]] = []
        for host, weight, backend_level in self._hosts(route, where):
            side = _backend_policies(levels + backend_level, self.base_dir)
            backend = HttpBackend(name, host, timeout=side.timeout or proxy.HEAD_TIMEOUT, auth=side.auth, tls=side.tls)
            backend.delivery, backend.observe = side.delivery, self.observability
            self.http_backends.append(backend)
            backends.append((backend, weight))
        if not any(weight for _, weight in backends):
            raise ConfigError(f"{self.config.source}: {where}.backends: every backend has weight 0")
        self.closers.extend(compiled.closers)
        app: ASGIApp = backends[0][0] if len(backends) == 1 else Weighted(backends)
        copies = mirror.build(name, levels)
        if copies is not None:
            self.mirrors.append(copies)
            app = mirror.Mirrored(app, copies)
        return _routes(name, listener, route, compiled, app)

    def _compile_ai(
        self, name: str, listener: Listener, route: Route, where: str, listener_at: str
    ) -> list[CompiledRoute]:
        """An AI route (gateway/ai/): the `llm:` block's models, or one route's `ai` backend."""
        src = self.config.source
        levels = self._levels((listener_at, listener.policies), (where, route.policies))
        for at, p in levels:
            if p.remoteRateLimit is not None and not p.remoteRateLimit.reference:
                _refuse_token_limits(at, p, "is supported in localRateLimit only by agentplex yet", local=False)
            for index, d in enumerate(p.remoteRateLimit.descriptors if p.remoteRateLimit is not None else []):
                if d.type == "tokens":
                    raise ConfigError(
                        f"{at}.remoteRateLimit.descriptors[{index}].type: tokens is supported in localRateLimit only"
                        " by agentplex yet"
                    )
            for key in _NOT_ON_AI:
                if getattr(p, key) is not None:
                    raise ConfigError(f"{at}.{key}: not supported on AI routes by agentplex yet")
        compiled = compile_policies(levels, base_dir=self.base_dir, route_path=_route_path(route.matches))
        if compiled.guard is not None:
            raise ConfigError(
                f"{src}: {where}: rate limits per MCP/A2A message (methods, tools, keys on mcp.* or a2a.*) do not"
                " apply to AI routes; limit whole requests"
            )
        self._observe_limits(name, compiled)
        self.closers.extend(compiled.closers)
        if where == "llm":
            assert self.config.llm is not None
            endpoint = llm_endpoint(self.config.llm)
        else:
            if len(route.backends) != 1:
                raise ConfigError(
                    f"{src}: {where}.backends: an AI route has one `ai` backend (several providers on a route,"
                    " weighted or failing over, are not supported by agentplex yet)"
                )
            backend = route.backends[0].ai
            assert backend is not None
            inner = list(reversed(levels))
            policy = next((p.ai for _, p in inner if p.ai is not None), None)
            auth = next(((at, p.backendAuth) for at, p in inner if p.backendAuth is not None), None)
            tls = next(((at, p.backendTLS) for at, p in inner if p.backendTLS is not None), None)
            context = ssl_context(tls[1], self.base_dir, where=f"{tls[0]}.backendTLS") if tls is not None else None
            endpoint = route_endpoint(name, backend, policy, auth, context)
        endpoint.observe = self.observability
        endpoint.timeouts = resolve_timeouts(p.timeout for _, p in levels)
        self.ai_endpoints.append(endpoint)
        return _routes(name, listener, route, compiled, endpoint)

    def _hosts(self, route: Route, where: str) -> list[tuple[str, int, list[tuple[str, Policies]]]]:
        """A route's plain HTTP backends: (URL, weight, the backend's policy level, if it is a named one)."""
        named = {b.name: (i, b) for i, b in enumerate(self.config.backends)}
        hosts = []
        for index, backend in enumerate(route.backends):
            if backend.host is not None:
                hosts.append((backend.host, backend.weight, []))
                continue
            if backend.backend not in named:
                known = ", ".join(sorted(named)) or "none"
                raise ConfigError(
                    f"{self.config.source}: {where}.backends[{index}].backend: unknown backend"
                    f" {backend.backend!r} (defined in `backends:`: {known})"
                )
            at, definition = named[backend.backend]
            level = self._levels((f"backends[{at}]", definition.policies))
            hosts.append((definition.host, backend.weight, level))
        return hosts

    # -- a2a.tools: the `a2a:` block's agents as tools of the `mcp:` block ----------------------------

    def _short_registry(self) -> AgentRegistry:
        """The `a2a:` block's one registry, made by whichever needs it first (the `mcp:` route, with
        `a2a.tools`, is compiled before the `a2a` route): its A2A route and its agent tools share it.
        It is a kept part: a reload that leaves the block's agents and store as they were keeps its
        registrations and health state, and the agent tools built on it."""
        if self.agent_registry is None:
            a2a = self.config.a2a
            assert a2a is not None
            key = _registry_key(a2a, self.base_dir)
            fetch = self.a2a.fetch_for("a2a")
            part = self.keeper.find(key)
            if part is not None:
                self.agent_registry = part.value
                self.agent_registry.fetch = fetch  # cards now come through this config's client
            else:
                self.agent_registry = build_registry(a2a, self.base_dir, fetch, where=f"{self.config.source}: a2a")
                part = Part(key, self.agent_registry, self.agent_registry.running)
            self.parts.insert(0, part)  # before the MCP routes whose agent tools use it
            self.a2a.external.add("a2a")
        return self.agent_registry

    def _agent_tool_targets(self, where: str, backend: McpBackend) -> list[TargetSpec]:
        """With `a2a.tools`, the `mcp:` block's federation gets one more target: an in-process MCP server
        whose tools are the registry's agents (federation/agent_tools.py), named `a2a.tools.target`."""
        tools = self.config.a2a.tools if self.config.a2a is not None else None
        if tools is None or where != "mcp":
            return []
        if any(target.name == tools.target for target in backend.targets):
            raise ConfigError(
                f"{self.config.source}: a2a.tools.target: {tools.target!r} is already the name of an mcp target"
            )
        server = build_agent_server(self._short_registry(), tools, reach=self.a2a)  # held to registration rules
        return [TargetSpec(name=tools.target, transport="memory", server=server)]

    # -- run -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        """Connect every target and open every endpoint; closes them all (and stdio children) on exit."""
        async with contextlib.AsyncExitStack() as stack:
            if self._own_keeper:
                await stack.enter_async_context(self.keeper.running())
            for closer in self.closers:
                stack.push_async_callback(closer.aclose)
            await stack.enter_async_context(self.a2a.running())
            stack.push_async_callback(self._release_parts)
            cluster = [self.cluster] if self.cluster is not None else []
            for part in [*cluster, *self.parts, *(earlier for earlier, _ in self.draining)]:
                await self.keeper.acquire(part)
                self._held.append(part)
            for backend in self.http_backends:
                await stack.enter_async_context(backend.running())
            for endpoint in self.ai_endpoints:
                await stack.enter_async_context(endpoint.running())
            for copies in self.mirrors:
                await stack.enter_async_context(copies.running())
            if self._own_keeper:
                self.commit()  # nothing is shared with an earlier config
            yield self

    def _later(self, change: Callable[..., None], *args: Any) -> None:
        self._changes.append(functools.partial(change, *args))

    def commit(self) -> None:
        """Make this config's changes to the parts it shares with the running config (new rules, kept
        sessions), once it is sure to take over: a reload that fails changes nothing."""
        for change in self._changes:
            change()
        self._changes.clear()

    async def _release_parts(self) -> None:
        while self._held:
            await self.keeper.release(self._held.pop())

    async def sweep(self) -> None:
        """Let go of earlier endpoints (kept by a reload) whose last session has ended."""
        for earlier, holder in list(self.draining):
            _, old_endpoints = earlier.value
            if old_endpoints.session_count() == 0:
                self.draining.remove((earlier, holder))
                holder.previous = [e for e in holder.previous if e is not old_endpoints]
                if earlier in self._held:
                    self._held.remove(earlier)
                    await self.keeper.release(earlier)

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve every bind until `shutdown()`; `task_status.started()` once all are listening."""
        async with anyio.create_task_group() as tg:
            sockets = [Socket(bind, drain=5) for bind in self.binds]
            open_all(sockets)
            await listen(sockets, tg)
            task_status.started()

    def shutdown(self) -> None:
        for bind in self.binds:
            if bind.server is not None:
                bind.server.should_exit = True

    def summary(self) -> Iterator[str]:
        """Human lines for the startup log: listeners, routes and targets with their status."""
        fed = dict(self.federations)
        for bind in self.binds:
            scheme = "https" if bind.tls is not None else "http"
            yield f"listening on {scheme}://{_host(bind.address)}:{bind.bound_port}"
            for route in bind.routes:
                if route.name in self.a2a.registries:
                    yield f"  A2A route {route.name}: {route.describe}"
                    yield from self.a2a.describe(route.name)
                    continue
                if any(endpoint.name == route.name for endpoint in self.ai_endpoints):
                    yield f"  AI route {route.name}: {route.describe}"
                    continue
                if route.name not in fed:
                    yield f"  metadata {route.describe}"
                    continue
                yield f"  route {route.name}: {route.describe}"
                for name, state in fed[route.name].status().items():
                    spec = fed[route.name].upstreams[name].spec
                    status = "up" if state["connected"] else f"DOWN ({state['lastError']})"
                    yield f"    target {name} [{spec.transport}] {spec.describe()}: {status}"
        if self.federations and any(not f.settings.stateless for _, f in self.federations):
            if self.seal is not None:
                yield "MCP session ids are sealed: any replica with the same config and key resumes a session"
            else:
                yield "MCP session ids are random: a session lives on this replica only (set SESSION_KEY to share)"

    def failed_targets(self) -> Iterator[str]:
        """One clear line per target that did not start, and what that means for its route."""
        for route, federation in self.federations:
            for name, state in federation.status().items():
                if state["connected"]:
                    continue
                if federation.settings.failure_mode == "failOpen":
                    effect = "failOpen: the route serves its other targets meanwhile"
                else:
                    effect = "failClosed: the route refuses new sessions until it is up"
                yield f"target {name} of route {route} failed to start: {state['lastError']} (retried on use; {effect})"


class SignalFreeServer(uvicorn.Server):
    """uvicorn without its own signal handling: the CLI owns signals for all binds at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


_SHORT = ("mcp", "a2a", "llm")
# Policies an AI route does not apply yet: refused rather than ignored.
_NOT_ON_AI = ("retry", "requestHeaderModifier", "requestMirror", "urlRewrite", "mcpAuthorization", "mcpAuthentication", "a2a")


def _binds(config: Config) -> list[tuple[Bind, str]]:
    """Every bind with the config key it came from. The short `mcp:` shape is one bind with one route at
    `path`; the short `a2a:` shape one route at its `path`, in the `mcp:` bind when it has the same port
    and address, else in a bind of its own."""
    binds = [(bind, f"binds[{index}]") for index, bind in enumerate(config.binds)]
    if config.a2a is not None and config.a2a.tools is not None and config.mcp is None:
        raise ConfigError(f"{config.source}: a2a.tools: agents become tools of the `mcp:` block, and there is none")
    if config.a2a is not None:
        a = config.a2a
        # No backend: the agents come from the block itself (see Gateway._compile_a2a).
        route = Route.model_construct(
            name="a2a", matches=[Match(path={"pathPrefix": a.path})], policies=a.policies, backends=[]
        )
        m = config.mcp
        if m is not None and (m.port, m.address) == (a.port, a.address):
            binds.insert(0, (_short_mcp_bind(m, extra=[route]), "mcp"))
            return binds
        for bind, origin in binds:
            if bind.port == a.port and a.port != 0:
                raise ConfigError(f"{config.source}: a2a.port: port {a.port} is already used by {origin}.port")
        binds.insert(0, (Bind(port=a.port, address=a.address, listeners=[Listener(name="a2a", routes=[route])]), "a2a"))
    if config.mcp is not None:
        binds.insert(0, (_short_mcp_bind(config.mcp), "mcp"))
    if config.llm is not None:
        for bind, origin in binds:
            if bind.port == config.llm.port and config.llm.port != 0:
                raise ConfigError(f"{config.source}: llm.port: port {config.llm.port} is already used by {origin}.port")
        binds.append((_short_llm_bind(config.llm), "llm"))
    return binds


def _refuse_token_limits(at: str, p: Policies, why: str, local: bool = True) -> None:
    limits = [("localRateLimit", p.localRateLimit or [])] if local else []
    if p.remoteRateLimit is not None and not p.remoteRateLimit.reference:
        limits.append(("remoteRateLimit.limits", p.remoteRateLimit.limits))
    for key, entries in limits:
        for index, limit in enumerate(entries):
            if limit.type == "tokens":
                raise ConfigError(f"{at}.{key}[{index}].type: tokens {why}")


def _short_llm_bind(llm: LlmShort) -> Bind:
    """The `llm:` block: one route under its pathPrefix serving the standard paths (gateway/ai/)."""
    route = Route.model_construct(
        name="llm", hostnames=[], matches=[Match(path={"pathPrefix": llm.pathPrefix or "/"})],
        policies=llm.policies, backends=[],
    )
    return Bind(port=llm.port, address=llm.address, listeners=[Listener(name="llm", routes=[route])])


def _short_mcp_bind(m: McpShort, extra: list[Route] | None = None) -> Bind:
    backend = McpBackend(**{field: getattr(m, field) for field in McpBackend.model_fields if field != "policies"})
    sse_base = m.path.rsplit("/", 1)[0]  # /mcp -> /sse and /messages/ (like the reference); /x/mcp -> /x/sse
    route = Route(
        name="mcp",
        matches=[
            Match(path={"exact": m.path}),
            Match(path={"exact": f"{sse_base}/sse"}),
            Match(path={"pathPrefix": f"{sse_base}/messages"}),
        ],
        policies=m.policies,
        backends=[{"mcp": backend}],
    )
    return Bind(port=m.port, address=m.address, listeners=[Listener(name="mcp", routes=[route, *(extra or [])])])


def _routes(
    name: str,
    listener: Listener,
    route: Route,
    compiled: RoutePolicies,
    app: ASGIApp,
    entry: Callable[[ASGIApp], ASGIApp] | None = None,
) -> list[CompiledRoute]:
    """A route's endpoint behind its HTTP-stage policies (and `entry` before them: a cluster's forwarding),
    after the documents its policies serve (RFC 9728)."""
    app = compiled.wrap(app)
    if entry is not None:
        app = entry(app)
    hosts = (route.hostnames, listener.hostname)
    extras = [
        CompiledRoute(f"{name}{path}", RouteMatcher(f"{name}{path}", [Match(path={"exact": path})], *hosts), doc, path)
        for path, doc in compiled.extra_routes
    ]
    matcher = RouteMatcher(name, route.matches, *hosts)
    return [*extras, CompiledRoute(name, matcher, app, describe(route.matches, route.hostnames))]


@contextlib.asynccontextmanager
async def _mcp_running(federation: Federation, endpoint: StreamableHTTPEndpoint) -> AsyncIterator[None]:
    async with federation.running(), endpoint.running():
        yield


def _part_key(
    bind: Bind, name: str, backend: McpBackend, levels: list[tuple[str, Policies]], registry: str | None
) -> str:
    """What an MCP route's running part depends on: where it listens, its backend, the policies toward
    that backend, and the registry its agent tools come from. Rules and limits are not in it: a reload
    swaps them on the live federation."""
    side = [p.model_dump(mode="json", include={"backendTLS", "backendAuth", "timeout", "retry"}) for _, p in levels]
    parts = [bind.address, bind.port, name, backend.model_dump(mode="json", exclude={"policies"}), side, registry]
    return json.dumps(parts, sort_keys=True, default=str)


def _registry_key(a2a: A2aShort, base_dir: Path) -> str:
    # allowNetworks: the kept agent tools hold the rule their connections are checked against
    fields = {"agents": True, "registry": True, "tools": True, "registration": {"allowNetworks"}}
    return json.dumps(["a2a registry", a2a.model_dump(mode="json", include=fields), str(base_dir)], sort_keys=True)


@dataclass(frozen=True)
class BackendPolicies:
    """A route's policies toward its backends, built once (an SSL context per call would cost 20-40 ms)."""

    timeout: float | None = None  # backendRequestTimeout: each attempt, until the answer starts
    tls: ssl.SSLContext | None = None
    auth: Any = None  # an UpstreamAuth (gateway/policies/backend_auth.py)
    timeouts: Timeouts = field(default_factory=Timeouts)
    delivery: Delivery | None = None  # retries and requestTimeout (plain HTTP and A2A routes)
    retry: RetryPolicy | None = None  # MCP routes: connection attempts


def _backend_policies(levels: list[tuple[str, Policies]], base_dir: Path) -> BackendPolicies:
    """For each backend-facing policy the innermost level that sets it wins; `levels` are outermost first."""
    inner = list(reversed(levels))
    timeouts = resolve_timeouts(p.timeout for _, p in levels)
    retry = next((p.retry for _, p in inner if p.retry is not None), None)
    tls = next(((at, p.backendTLS) for at, p in inner if p.backendTLS is not None), None)
    auth = next((p.backendAuth for _, p in inner if p.backendAuth is not None), None)
    return BackendPolicies(
        timeouts.backend,
        ssl_context(tls[1], base_dir, where=f"{tls[0]}.backendTLS") if tls is not None else None,
        backend_auth.build(auth) if auth is not None else None,
        timeouts,
        delivery(retry, timeouts.request),
        retry,
    )


def _target_spec(
    target: Target, side: BackendPolicies, max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE, where: str = "targets"
) -> TargetSpec:
    """One target's spec. backendTLS and backendAuth apply to HTTP and OpenAPI targets; stdio targets ignore
    them. `where` names the target in config errors."""
    common: dict[str, Any] = {
        "name": target.name,
        "era": target.era,
        "sharing": target.sharing,
        "request_timeout": side.timeouts.per_message,
        "max_response_size": max_response_size,
    }
    if side.retry is not None:  # MCP: only opening the connection is retried, never a message
        common.update(connect_attempts=side.retry.attempts, connect_backoff=side.retry.backoff)
    if target.stdio is not None:
        s = target.stdio
        return TargetSpec(
            transport="stdio",
            command=s.cmd,
            args=tuple(s.args),
            env=dict(s.env),
            clear_env=s.clearEnv,
            cwd=s.cwd,
            **common,
        )
    if target.openapi is not None:
        server = openapi_server(target.name, target.openapi, side, f"{where}.openapi")
        return TargetSpec(transport="memory", server=server, **common)
    http = target.mcp or target.sse
    assert http is not None
    return TargetSpec(
        transport=target.kind, url=http.host, headers=dict(http.headers), tls=side.tls, auth=side.auth, **common
    )


def openapi_server(name: str, cfg: OpenApiTarget, side: BackendPolicies, where: str) -> Any:
    """An OpenAPI target's in-process MCP server, from its document (read or fetched now)."""
    source = cfg.schema_
    try:
        if isinstance(source, OpenApiSchemaFile):
            text, label = Path(source.file).read_text(), f"{where}.schema.file ({source.file})"
        elif isinstance(source, OpenApiSchemaUrl):
            response = httpx.get(source.url, timeout=10.0, follow_redirects=True)
            response.raise_for_status()
            text, label = response.text, f"{where}.schema.url ({source.url})"
        else:
            text, label = source, f"{where}.schema"
        doc = openapi.parse_document(text, label)
        ops, prefix = openapi.operations(doc), openapi.server_prefix(doc)
    except OSError as exc:
        raise ConfigError(f"{where}.schema.file: cannot read {getattr(source, 'file', '')!r}: {exc.strerror or exc}") from None
    except httpx.HTTPError as exc:
        raise ConfigError(f"{where}.schema.url: could not fetch the document: {exc}") from None
    except openapi.OpenApiError as exc:
        raise ConfigError(str(exc) if str(exc).startswith(where) else f"{where}.schema: {exc}") from None
    timeout = side.timeouts.per_message
    return OpenApiServer(name, cfg.host, prefix, ops, tls=side.tls, auth=side.auth, timeout=timeout).server


def _wants_events(scope: Scope) -> bool:
    return any(k == b"accept" and b"text/event-stream" in v for k, v in scope.get("headers", ()))


def _unnormalized(path: str) -> bool:
    return "//" in path or any(segment in (".", "..") for segment in path.split("/"))


def _route_prefix(matches: list[Match]) -> str | None:
    """The path an A2A route serves below ("" for the root); None when no match gives one."""
    if not matches:
        return ""
    for m in matches:
        if m.path is not None and m.path.pathPrefix is not None:
            return m.path.pathPrefix.rstrip("/")
    return None


def _route_path(matches: list[Match]) -> str:
    """The path that names a route's resource (for its protected-resource metadata)."""
    for m in matches:
        if m.path is not None and (m.path.exact or m.path.pathPrefix):
            return (m.path.exact or m.path.pathPrefix or "/").rstrip("/") or "/"
    return "/"


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
