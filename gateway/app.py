"""Config -> running gateway: compiled routes per bind, one federation per MCP backend, uvicorn servers."""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from federation.agent_tools import build_agent_server
from federation.agents import AgentRegistry, AgentSpec
from federation.server import Federation, FederationSettings
from gateway.a2a import A2ARoutes
from gateway.a2a_registry import RegistryApi, build_registry
from gateway.config import Config, ConfigError
from gateway.config.models import Bind, Listener, Match, McpBackend, McpShort, Policies, Route, Target
from gateway.http_backend import HttpBackend
from gateway.policies import RoutePolicies, backend_auth, compile_policies
from gateway.policies.backend_tls import ssl_context
from gateway.routing import RouteMatcher, RouteTable, describe
from protocols.a2a import proxy
from protocols.a2a.card import rewrite_card
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
    routes: list[CompiledRoute] = field(default_factory=list)
    server: uvicorn.Server | None = None
    table: RouteTable[CompiledRoute] | None = None  # `routes` in precedence order (gateway/routing.py)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return
        if scope["type"] == "http" and _unnormalized(scope["path"]):
            # `/public/../mcp` would match one route here and another behind a normalizing proxy: refuse.
            response = JSONResponse({"error": "path has '.', '..' or empty segments"}, status_code=400)
            await response(scope, receive, send)
            return
        if self.table is None:
            self.table = RouteTable([(route.matches, route) for route in self.routes])
        route = self.table.select(scope)
        if route is not None:
            await route.endpoint(scope, receive, send)
            return
        if scope["type"] == "http":
            response = JSONResponse({"error": f"no route matches {scope['method']} {scope['path']}"}, status_code=404)
            await response(scope, receive, send)

    @property
    def bound_port(self) -> int:
        """The real port (differs from `port` when the config asked for port 0)."""
        if self.server is None or not self.server.servers:
            return self.port
        return self.server.servers[0].sockets[0].getsockname()[1]


class McpEndpoints:
    """An MCP route's transports: legacy SSE at `.../sse` + `.../messages/`, streamable HTTP elsewhere."""

    def __init__(self, streamable: StreamableHTTPEndpoint, sse: SseEndpoint) -> None:
        self.streamable = streamable
        self.sse = sse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.sse.handles(scope):
            await self.sse(scope, receive, send)
        else:
            await self.streamable(scope, receive, send)


class Gateway:
    """Everything one config describes, ready to be started with `running()` and `serve()`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.federations: list[tuple[str, Federation]] = []
        self.http_backends: list[HttpBackend] = []  # plain HTTP routes (their clients open in running())
        self.closers: list[Any] = []  # policy resources (Redis pools) to close on shutdown
        self.endpoints: list[StreamableHTTPEndpoint] = []
        self.base_dir = Path(config.source).parent if config.source != "<string>" else Path.cwd()
        self.a2a = A2ARoutes()
        self.agent_registry: AgentRegistry | None = None  # the `a2a:` block's agents (registration, tools)
        self.binds = [self._compile_bind(bind, origin) for bind, origin in _binds(config)]

    # -- compile ---------------------------------------------------------------------------

    def _compile_bind(self, bind: Bind, origin: str) -> BindRuntime:
        """`origin` is the config key the bind came from: `binds[i]`, or a short block (`mcp`, `a2a`)."""
        runtime = BindRuntime(bind.address, bind.port)
        for li, listener in enumerate(bind.listeners):
            for ri, route in enumerate(listener.routes):
                name = route.name or f"{listener.name or f'listener{li}'}/route{ri}"
                if origin in _SHORT:  # a short block's route is named after it (`a2a` may join `mcp`'s bind)
                    where = listener_at = name
                else:
                    where, listener_at = f"{origin}.listeners[{li}].routes[{ri}]", f"{origin}.listeners[{li}]"
                runtime.routes.extend(self._compile_route(name, bind, listener, route, where, listener_at))
        runtime.table = RouteTable([(route.matches, route) for route in runtime.routes])
        return runtime

    def _compile_route(
        self, name: str, bind: Bind, listener: Listener, route: Route, where: str, listener_at: str
    ) -> list[CompiledRoute]:
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
        if where == "a2a" or route.backends[0].host is not None:
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
        side = _backend_policies(levels, self.base_dir)
        federation = Federation(
            [_target_spec(t, side) for t in backend.targets]
            + self._agent_tool_targets(where, backend),
            FederationSettings(
                prefix_mode=backend.prefixMode,
                separator=backend.separator,
                failure_mode=backend.failureMode,
                stateless=backend.statefulMode == "stateless",
            ),
            guard=compiled.guard,
        )
        self.closers.extend(compiled.closers)
        server, security = federation.build_server(), rebinding_protection(bind.address)
        endpoint = StreamableHTTPEndpoint(
            server,
            stateless=backend.statefulMode == "stateless",
            security=security,
            max_request_body_size=backend.maxRequestBodySize,
            session_idle_timeout=backend.sessionIdleTimeout,
            relay=federation.relay_tool_call,
        )
        sse = SseEndpoint(server, security=security)
        self.federations.append((name, federation))
        self.endpoints.append(endpoint)
        return _routes(name, listener, route, compiled, McpEndpoints(endpoint, sse))

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
        compiled = compile_policies(levels, base_dir=self.base_dir, route_path=prefix or "/", kind="a2a")
        side = _backend_policies(levels, self.base_dir)
        if short is not None:
            specs = [AgentSpec(a.name, a.url, dict(a.headers)) for a in short.agents]
        else:
            specs = [AgentSpec(name, route.backends[0].host or "")]
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
        endpoint.auth = side.auth
        if short is not None:
            self.agent_registry = endpoint.registry
            api = RegistryApi(
                endpoint.registry,
                path=prefix,
                rewrite=rewrite_card,
                guard=compiled.guard,
                allow=short.registration.allow,
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
        self.closers.extend(compiled.closers)
        unreachable = JSONResponse({"error": "no backend"}, status_code=500)  # the directResponse step answers first
        return _routes(name, listener, route, compiled, unreachable)

    def _compile_http(
        self, name: str, listener: Listener, route: Route, where: str, listener_at: str
    ) -> list[CompiledRoute]:
        """A plain HTTP route: its `host` backend gets every matching request (gateway/http_backend.py)."""
        levels = self._levels((listener_at, listener.policies), (where, route.policies))
        compiled = compile_policies(levels, base_dir=self.base_dir, route_path=_route_path(route.matches))
        side = _backend_policies(levels, self.base_dir)
        backend = HttpBackend(
            name, route.backends[0].host or "", timeout=side.timeout or proxy.HEAD_TIMEOUT, auth=side.auth, tls=side.tls
        )
        self.http_backends.append(backend)
        self.closers.extend(compiled.closers)
        return _routes(name, listener, route, compiled, backend)

    # -- a2a.tools: the `a2a:` block's agents as tools of the `mcp:` block ----------------------------

    def _short_registry(self) -> AgentRegistry:
        """The `a2a:` block's one registry, made by whichever needs it first (the `mcp:` route, with
        `a2a.tools`, is compiled before the `a2a` route): its A2A route and its agent tools share it."""
        if self.agent_registry is None:
            assert self.config.a2a is not None
            self.agent_registry = build_registry(
                self.config.a2a, self.base_dir, self.a2a.fetch_for("a2a"), where=f"{self.config.source}: a2a"
            )
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
        server = build_agent_server(self._short_registry(), tools)
        return [TargetSpec(name=tools.target, transport="memory", server=server)]

    # -- run -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        """Connect every target and open every endpoint; closes them all (and stdio children) on exit."""
        async with contextlib.AsyncExitStack() as stack:
            for closer in self.closers:
                stack.push_async_callback(closer.aclose)
            await stack.enter_async_context(self.a2a.running())
            for _, federation in self.federations:
                await stack.enter_async_context(federation.running())
            for endpoint in self.endpoints:
                await stack.enter_async_context(endpoint.running())
            for backend in self.http_backends:
                await stack.enter_async_context(backend.running())
            yield self

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve every bind until `shutdown()`; `task_status.started()` once all are listening."""
        async with anyio.create_task_group() as tg:
            for bind in self.binds:
                config = uvicorn.Config(
                    bind,
                    host=bind.address,
                    port=bind.port,
                    lifespan="off",
                    log_level="warning",
                    access_log=False,
                    timeout_graceful_shutdown=5,
                )
                bind.server = _Server(config)
                tg.start_soon(bind.server.serve)
            with anyio.fail_after(30):
                while not all(b.server is not None and (b.server.started or b.server.should_exit) for b in self.binds):
                    await anyio.sleep(0.01)
            failed = [b for b in self.binds if b.server is not None and not b.server.started]
            if failed:
                tg.cancel_scope.cancel()
                raise OSError(f"cannot listen on {', '.join(f'{b.address}:{b.port}' for b in failed)}")
            task_status.started()

    def shutdown(self) -> None:
        for bind in self.binds:
            if bind.server is not None:
                bind.server.should_exit = True

    def summary(self) -> Iterator[str]:
        """Human lines for the startup log: listeners, routes and targets with their status."""
        fed = dict(self.federations)
        for bind in self.binds:
            yield f"listening on http://{_host(bind.address)}:{bind.bound_port}"
            for route in bind.routes:
                if route.name in self.a2a.registries:
                    yield f"  A2A route {route.name}: {route.describe}"
                    yield from self.a2a.describe(route.name)
                    continue
                if route.name not in fed:
                    yield f"  metadata {route.describe}"
                    continue
                yield f"  route {route.name}: {route.describe}"
                for name, state in fed[route.name].status().items():
                    spec = fed[route.name].upstreams[name].spec
                    status = "up" if state["connected"] else f"DOWN ({state['lastError']})"
                    yield f"    target {name} [{spec.transport}] {spec.describe()}: {status}"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the CLI owns signals for all binds at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


_SHORT = ("mcp", "a2a")


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
    return binds


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


def _routes(name: str, listener: Listener, route: Route, compiled: RoutePolicies, app: ASGIApp) -> list[CompiledRoute]:
    """A route's endpoint behind its HTTP-stage policies, after the documents its policies serve (RFC 9728)."""
    app = compiled.wrap(app)
    hosts = (route.hostnames, listener.hostname)
    extras = [
        CompiledRoute(f"{name}{path}", RouteMatcher(f"{name}{path}", [Match(path={"exact": path})], *hosts), doc, path)
        for path, doc in compiled.extra_routes
    ]
    matcher = RouteMatcher(name, route.matches, *hosts)
    return [*extras, CompiledRoute(name, matcher, app, describe(route.matches, route.hostnames))]


@dataclass(frozen=True)
class BackendPolicies:
    """A route's policies toward its backends, built once (an SSL context per call would cost 20-40 ms)."""

    timeout: float | None = None
    tls: ssl.SSLContext | None = None
    auth: Any = None  # an UpstreamAuth (gateway/policies/backend_auth.py)


def _backend_policies(levels: list[tuple[str, Policies]], base_dir: Path) -> BackendPolicies:
    """For each backend-facing policy the innermost level that sets it wins; `levels` are outermost first."""
    inner = list(reversed(levels))
    timeout = next(
        (p.timeout.backendRequestTimeout for _, p in inner if p.timeout and p.timeout.backendRequestTimeout), None
    )
    tls = next(((at, p.backendTLS) for at, p in inner if p.backendTLS is not None), None)
    auth = next((p.backendAuth for _, p in inner if p.backendAuth is not None), None)
    return BackendPolicies(
        timeout,
        ssl_context(tls[1], base_dir, where=f"{tls[0]}.backendTLS") if tls is not None else None,
        backend_auth.build(auth) if auth is not None else None,
    )


def _target_spec(target: Target, side: BackendPolicies) -> TargetSpec:
    """One target's spec. backendTLS and backendAuth apply to HTTP targets; stdio targets ignore them."""
    common: dict[str, Any] = {
        "name": target.name,
        "era": target.era,
        "sharing": target.sharing,
        "request_timeout": side.timeout,
    }
    if target.stdio is not None:
        s = target.stdio
        return TargetSpec(transport="stdio", command=s.cmd, args=tuple(s.args), env=dict(s.env), cwd=s.cwd, **common)
    http = target.mcp or target.sse
    assert http is not None
    return TargetSpec(
        transport=target.kind, url=http.host, headers=dict(http.headers), tls=side.tls, auth=side.auth, **common
    )


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
